"""Latency and FLOP utilities: benchmark models from published configs, FLOP counting with explicit
attention, interleaved-ready forward timing, and the sub-layer share that bounds a method's speedup.

Used by `benchmarks/latency.py` (and meant for `bigain bench` / `bigain sweep`).
"""

from .flops import call_model, count_flops, explicit_attention
from .models import DIT_XL2_256, MODELS, SD2_UNET, build_model, example_inputs
from .patch import TOMESD, compressed_sublayers, patched
from .timing import (
    Share,
    SublayerTimer,
    Timing,
    machine_info,
    num_threads,
    sublayer_share,
    time_forward,
    time_once,
)

__all__ = [
    "DIT_XL2_256",
    "MODELS",
    "SD2_UNET",
    "TOMESD",
    "Share",
    "SublayerTimer",
    "Timing",
    "build_model",
    "call_model",
    "compressed_sublayers",
    "count_flops",
    "example_inputs",
    "explicit_attention",
    "machine_info",
    "num_threads",
    "patched",
    "sublayer_share",
    "time_forward",
    "time_once",
]
