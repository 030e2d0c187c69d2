"""Benchmark result files: JSON read back tolerantly, and written atomically (an interrupted run
never leaves a torn file)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when it is missing or unreadable."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def write_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path` and rename it over `path`."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, p)


def write_json(path: str | Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1) + "\n")
