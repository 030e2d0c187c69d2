"""Method-option values as typed on a command line, read without importing torch (the command line
parses its arguments before any heavy import)."""

from __future__ import annotations

from typing import Any

# how lists are written, quoted by every --option help text and option error
LIST_SYNTAX = "lists are comma-separated: blocks=0,1,2 (one element: blocks=3,)"


def parse_option_value(text: str) -> Any:
    """A command-line option value as Python: bools, None, int, float, comma lists, else the string."""
    v = text.strip()
    low = v.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    if "," in v:
        return [parse_option_value(x) for x in v.split(",") if x.strip()]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
