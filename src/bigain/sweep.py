"""Compatibility path for `bigain sweep`: the sweep now lives in `bigain.experiments`."""

from __future__ import annotations

from .experiments.cli import main
from .experiments.grid import Setting, default_settings, paper_settings
from .experiments.jobs import interleaved_speed, record_speed, run_sweep
from .experiments.report import build_report, pareto_front


def sweep_jobs(settings: list[Setting], phases: tuple[str, ...]) -> list[tuple[str, Setting]]:
    """(phase, setting) jobs of one sample seed, in priority order (see `experiments.grid.job_list`)."""
    from .experiments.grid import job_list

    return [(phase, s) for phase, s, _ in job_list(settings, phases)]


__all__ = [
    "Setting",
    "build_report",
    "default_settings",
    "interleaved_speed",
    "main",
    "paper_settings",
    "pareto_front",
    "record_speed",
    "run_sweep",
    "sweep_jobs",
]
