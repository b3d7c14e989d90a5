"""Web origins as browsers send them (no models: the WidgetSite model validates with it)."""

from __future__ import annotations

import re

_ORIGIN = re.compile(r"(https?)://([a-z0-9][a-z0-9.-]*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?")
_DEFAULT_PORTS = {"http": "80", "https": "443"}


def normalise_origin(value: str) -> str:
    """`scheme://host[:port]` as browsers send it in an Origin header (lower case, no default
    port, no path); ValueError for anything else."""
    text = (value or "").strip().lower().rstrip("/")
    match = _ORIGIN.fullmatch(text)
    if not match:
        raise ValueError(
            "Write an origin: scheme://host[:port], e.g. https://www.example.com "
            "(no path, no wildcard)."
        )
    scheme, host, port = match.groups()
    if port is not None and not 0 < int(port) < 65536:
        raise ValueError("The port must be between 1 and 65535.")
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{int(port)}"
