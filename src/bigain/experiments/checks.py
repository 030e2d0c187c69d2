"""A sweep's settings checked as a whole before any model is loaded or any file written.

A sweep runs for hours; a setting it cannot run must fail in the first second, not as a
traceback an hour in. Every check raises ValueError with one line naming what is wrong and how to
write it; the command line prefixes the option it came from.
"""

from __future__ import annotations

from typing import Any

from .grid import Setting

PHASES = ("classify", "generate", "speed", "report")

__all__ = ["PHASES", "check_settings", "check_work", "parse_phases", "select_strict"]


def parse_phases(text: str) -> tuple[str, ...]:
    """``"classify,report"`` -> ("classify", "report"); empty, unknown or repeated names are errors."""
    phases = tuple(x.strip() for x in text.split(",") if x.strip())
    if not phases:
        raise ValueError(
            f"--phases {text!r} names no phase; choose from {', '.join(PHASES)}, e.g. --phases classify,report"
        )
    bad = sorted(set(phases) - set(PHASES))
    if bad:
        raise ValueError(
            f"--phases {text!r}: unknown phase(s) {bad}; choose from {', '.join(PHASES)} (comma-separated)"
        )
    if len(set(phases)) != len(phases):
        raise ValueError(f"--phases {text!r} repeats a phase; name each once, e.g. --phases classify,report")
    return phases


def select_strict(settings: list[Setting], names: str | None) -> list[Setting]:
    """The settings whose label or method is in the comma-separated `names` (all when None).

    An empty list or a name that matches nothing is an error listing what the grid holds, so a typo
    never runs the whole grid or silently drops a setting."""
    if names is None:
        return list(settings)
    keep = [n.strip() for n in names.split(",") if n.strip()]
    known = sorted({s.label for s in settings} | {s.method for s in settings})
    if not keep:
        raise ValueError(
            f"--methods {names!r} names no setting; give labels or method names, e.g. --methods none,tome "
            f"(this grid: {', '.join(known)}), or leave --methods out for the whole grid"
        )
    unknown = [n for n in keep if n not in known]
    if unknown:
        raise ValueError(
            f"--methods {names!r}: {unknown} match no setting of this grid; choose from {', '.join(known)}"
        )
    return [s for s in settings if s.label in keep or s.method in keep]


def check_settings(settings: list[Setting]) -> dict[str, dict[str, Any]]:
    """Every setting's options validated by its method (normalised options per label); a setting
    its method refuses raises ValueError naming the setting."""
    from ..runs.preflight import normalise_options

    out = {}
    for s in settings:
        try:
            out[s.label] = normalise_options(s.method, s.options)
        except (ValueError, TypeError) as e:
            raise ValueError(f"setting {s.label}: {e}") from None
    return out


def check_work(phases: tuple[str, ...], images: int, gen: int, seeds: tuple[int, ...]) -> None:
    """A phase asked for with nothing to do is a contradiction, not a silent no-op."""
    if images < 0 or gen < 0:
        raise ValueError(f"images={images}, gen={gen}: expected integers >= 0")
    if "classify" in phases and images == 0:
        raise ValueError(
            "--images 0 with the classify phase classifies nothing; give --images N (N >= 1) "
            "or leave classify out of --phases"
        )
    if "generate" in phases and gen == 0:
        raise ValueError(
            "--gen 0 with the generate phase generates nothing; give --gen N (N >= 1) "
            "or leave generate out of --phases"
        )
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {list(seeds)}: expected distinct integers >= 0, e.g. --seeds 0,1,2")
