"""Latency and FLOP utilities: benchmark models from published configs, FLOP counting with explicit
attention, interleaved forward timing (CUDA events on a GPU), the sub-layer share that bounds a
method's speedup, and the ceiling / ideal bounds measured as forwards of their own.

Used by `benchmarks/latency.py` (CPU matrix), `benchmarks/gpu_latency.py` and `bigain bench`.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "BOUNDS": ".bounds",
    "bound": ".bounds",
    **dict.fromkeys(("call_model", "count_flops", "explicit_attention"), ".flops"),
    **dict.fromkeys(("DIT_XL2_256", "MODELS", "SD2_UNET", "build_model", "example_inputs", "model_spec"), ".models"),
    **dict.fromkeys(("TOMESD", "compressed_sublayers", "patched"), ".patch"),
    **dict.fromkeys(
        (
            "Share",
            "SublayerTimer",
            "Timing",
            "interleave",
            "machine_info",
            "num_threads",
            "spread",
            "sublayer_share",
            "time_events",
            "time_forward",
            "time_once",
        ),
        ".timing",
    ),
}
# torch and diffusers load on first use of a name (`bigain bench` parses its arguments first)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .bounds import BOUNDS, bound
    from .flops import call_model, count_flops, explicit_attention
    from .models import DIT_XL2_256, MODELS, SD2_UNET, build_model, example_inputs, model_spec
    from .patch import TOMESD, compressed_sublayers, patched
    from .timing import (
        Share,
        SublayerTimer,
        Timing,
        interleave,
        machine_info,
        num_threads,
        spread,
        sublayer_share,
        time_events,
        time_forward,
        time_once,
    )

__all__ = [
    "BOUNDS",
    "DIT_XL2_256",
    "MODELS",
    "SD2_UNET",
    "TOMESD",
    "Share",
    "SublayerTimer",
    "Timing",
    "bound",
    "build_model",
    "call_model",
    "compressed_sublayers",
    "count_flops",
    "example_inputs",
    "explicit_attention",
    "interleave",
    "machine_info",
    "model_spec",
    "num_threads",
    "patched",
    "spread",
    "sublayer_share",
    "time_events",
    "time_forward",
    "time_once",
]
