"""Replies written in Markdown, and replies that try to run script, for the browser tests of the
chat page, the widget, the inbox and the playground (static/common/markdown.js renders them)."""

from __future__ import annotations

from typing import Any

# A reply with a list, bold, a link, a table and a citation of source [1] inside the list.
MARKDOWN_REPLY = (
    "We ship to Norway with DHL:\n\n"
    "- **Pack** the parcel well\n"
    "- Book it on [the shipping page](https://help.example.com/parcels) [1]\n\n"
    "| Destination | Days |\n"
    "|---|---|\n"
    "| Norway | 4 to 6 |\n"
)

# Everything in it that could run: raw HTML, a javascript: link in Markdown and in HTML, an
# iframe. Each sets window.__pwned if it ever runs.
XSS_REPLY = (
    'Try <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script>, '
    "[this link](javascript:window.__pwned=3), "
    '<a href="javascript:window.__pwned=4">that link</a> '
    'and <iframe src="javascript:window.top.__pwned=5"></iframe>.'
)
# What a reader sees of it: the HTML as the characters it is, the javascript: link as its text.
XSS_REPLY_SHOWN = (
    'Try <img src=x onerror="window.__pwned=1"> and <script>window.__pwned=2</script>, '
    "this link, "
    '<a href="javascript:window.__pwned=4">that link</a> '
    'and <iframe src="javascript:window.top.__pwned=5"></iframe>.'
)
RUNNABLE = "script, img, iframe, object, embed, svg, [onerror], [onload], [src]"


def tokens(text: str, size: int = 5) -> list[str]:
    """The text in chunks of `size` characters, as a model streams it (a table arrives row by
    row, half rows included)."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def model_env(fake_llm: Any, **extra: str) -> dict[str, str]:
    """A worker's settings to answer through the fake model (tests/fake_llm.py)."""
    return {
        "LLM_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_llm.base_url,
        "OPENAI_MODEL": "fake-model",
        **extra,
    }


def assert_rendered_as_markdown(text) -> None:
    """`text` (a Playwright locator of a message's text) shows MARKDOWN_REPLY as markup."""
    items = text.locator("ul > li")
    assert items.count() == 2
    assert items.nth(0).locator("strong").inner_text() == "Pack"
    link = items.nth(1).locator('a[href^="https:"]')
    assert link.inner_text() == "the shipping page"
    assert link.get_attribute("href") == "https://help.example.com/parcels"
    assert link.get_attribute("target") == "_blank"
    assert {"noopener", "noreferrer"} <= set(link.get_attribute("rel").split())
    table = text.locator("table")
    assert table.locator("th").all_inner_texts() == ["Destination", "Days"]
    assert table.locator("td").all_inner_texts() == ["Norway", "4 to 6"]
    assert "**" not in text.inner_text() and "|" not in text.inner_text()


def shown(page, text: str) -> str:
    """What a page shows of a reply's text: its Markdown rendered by static/common/markdown.js
    (an offline answer's numbered steps, say, become a list without the "1. ")."""
    return page.evaluate(
        """(text) => {
            const box = document.createElement("div");
            box.className = "text md";
            box.append(window.ReplyMarkdown.fragment(text));
            document.body.append(box);
            const shown = box.innerText;
            box.remove();
            return shown;
        }""",
        text,
    )
