"""Accessibility checks for the browser tests (issue 16, point 9): axe-core (the copy that ships
with the axe-playwright-python package) run in a Playwright page or frame against the WCAG 2.0
and 2.1 A/AA rules, and the contrast of the keyboard focus ring."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # the phone of the report (issue 16, point 9)
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
BLOCKING = {"serious", "critical"}

SHOTS = Path("/tmp/shots-a11y")

_axe = Axe()


def shot(page: Any, name: str) -> None:
    """A screenshot for a person to look at, in /tmp/shots-a11y/ (A11Y_SHOTS=0: none)."""
    if os.environ.get("A11Y_SHOTS", "1") != "0":
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"))


def axe_violations(
    target: Any, *, include: str = "html", exclude: list[str] | None = None
) -> list[dict[str, Any]]:
    """Every WCAG 2.0/2.1 A/AA violation axe finds in `target` (a Page or a Frame), all
    impacts, within the `include` selector (shadow roots included). Cross-site frames are left
    to their own run (`iframes: False`)."""
    context: dict[str, Any] = {"include": [[include]]}
    if exclude:
        context["exclude"] = [[selector] for selector in exclude]
    options = {
        "runOnly": {"type": "tag", "values": WCAG_AA},
        "resultTypes": ["violations"],
        "iframes": False,
    }
    return list(_axe.run(target, context=context, options=options).response["violations"])


def describe(violations: list[dict[str, Any]]) -> str:
    """One line a violation, then its nodes: rule id, impact, targets and axe's summary."""
    lines = []
    for violation in violations:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']}")
        for node in violation["nodes"]:
            summary = " ".join((node.get("failureSummary") or "").split())
            lines.append(f"    {node['target']}: {summary[:300]}")
    return "\n".join(lines)


def blocking(violations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in violations if v["impact"] in BLOCKING]


def assert_no_serious_violations(target: Any, where: str, **kwargs: Any) -> None:
    """Zero serious or critical WCAG 2.1 AA violations in `target`; each one is printed with its
    rule id, impact and nodes if any."""
    found = blocking(axe_violations(target, **kwargs))
    assert not found, f"axe on {where}: {len(found)} serious/critical\n{describe(found)}"


# The colours the browser computes for the focused element's ring and for what is around it
# (the nearest ancestor with an opaque background), as [r, g, b] in 0..255.
_FOCUS_COLOURS = """
(element) => {
  const parse = (value) => {
    const m = value.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const parts = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
    return { rgb: parts.slice(0, 3), alpha: parts.length > 3 ? parts[3] : 1 };
  };
  const style = getComputedStyle(element);
  let ring = null;
  if (style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2) {
    ring = parse(style.outlineColor);
  } else {
    const shadow = style.boxShadow.match(/rgba?\\([^)]+\\)/);
    if (shadow) ring = parse(shadow[0]);
  }
  let node = element.parentElement;
  let around = null;
  while (node) {
    const bg = parse(getComputedStyle(node).backgroundColor);
    if (bg && bg.alpha === 1) { around = bg.rgb; break; }
    node = node.parentElement;
  }
  return { ring, around: around || [255, 255, 255] };
}
"""


def _luminance(rgb: list[float]) -> float:
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(one: list[float], other: list[float]) -> float:
    light, dark = sorted((_luminance(one), _luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def focus_ring_contrast(locator: Any) -> float:
    """Focus `locator` from the keyboard's point of view and return the contrast of its focus
    ring (outline, else box-shadow; a translucent ring blended over what is behind it) against
    the background around the element (WCAG 2.1 1.4.11: at least 3:1)."""
    locator.focus()
    colours = locator.evaluate(_FOCUS_COLOURS)
    ring, around = colours["ring"], colours["around"]
    assert ring, "the focused element shows no outline or box-shadow ring"
    alpha = ring["alpha"]
    shown = [alpha * c + (1 - alpha) * b for c, b in zip(ring["rgb"], around, strict=True)]
    return contrast(shown, around)
