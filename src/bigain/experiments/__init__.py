"""Sweeps: a settings grid run as resumable jobs on any model and data set, and their report.

- `grid`: `Setting` (method, options, the baseline it is compared against and the test family),
  the first sweep's grid (`default_settings`) and the pre-registered one (`paper_settings`).
- `jobs`: `run_sweep` runs classify / generate (per sample seed) / speed jobs, split over worker
  processes, each in its own resumable run folder; models and data by name or as objects (a
  Stable Diffusion folder with an ImageNet-style data folder is classified like the embedded ones).
- `report`: rows per setting, exact McNemar with Holm per family, bootstrap intervals, FID over
  seeds, the pre-registered verdicts, `report.md`, `summary.json` and plots.

`bigain sweep` (`experiments.cli.main`) is the command line.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# the jobs and the report import torch on first use: `bigain sweep` checks its arguments first
_EXPORTS = {
    **dict.fromkeys(
        ["Setting", "default_settings", "job_list", "paper_settings", "select", "worker_share"], ".grid"
    ),
    **dict.fromkeys(["count_setting_flops", "interleaved_speed", "record_speed", "run_sweep"], ".jobs"),
    **dict.fromkeys(["build_report", "pareto_front"], ".report"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .grid import Setting, default_settings, job_list, paper_settings, select, worker_share
    from .jobs import count_setting_flops, interleaved_speed, record_speed, run_sweep
    from .report import build_report, pareto_front

__all__ = [
    "Setting",
    "build_report",
    "count_setting_flops",
    "default_settings",
    "interleaved_speed",
    "job_list",
    "paper_settings",
    "pareto_front",
    "record_speed",
    "run_sweep",
    "select",
    "worker_share",
]
