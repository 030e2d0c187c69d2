"""bigain: training-free token compression for diffusion models that keeps both generation and
diffusion classification working (BiGain-TM, BiGain-TD, and the ToMe, ToDo and SiTo baselines)."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_METHODS = (
    "BiGainTDConfig",
    "BiGainTMConfig",
    "MethodConfig",
    "NoneConfig",
    "SiToConfig",
    "ToDoConfig",
    "ToMeConfig",
    "list_methods",
    "make_config",
)
_PATCHING = (
    "PatchReport",
    "apply",
    "compressed",
    "host_timesteps",
    "inspect_model",
    "is_patched",
    "remove",
    "sample_keys",
    "set_grid",
)

# torch and diffusers load on first use of a name (the command line parses its arguments first)
__getattr__, __dir__ = lazy_exports(
    __name__, {**dict.fromkeys(_METHODS, ".methods"), **dict.fromkeys(_PATCHING, ".patching")}
)

if TYPE_CHECKING:
    from .methods import (
        BiGainTDConfig,
        BiGainTMConfig,
        MethodConfig,
        NoneConfig,
        SiToConfig,
        ToDoConfig,
        ToMeConfig,
        list_methods,
        make_config,
    )
    from .patching import (
        PatchReport,
        apply,
        compressed,
        host_timesteps,
        inspect_model,
        is_patched,
        remove,
        sample_keys,
        set_grid,
    )

__all__ = [
    "BiGainTDConfig",
    "BiGainTMConfig",
    "MethodConfig",
    "NoneConfig",
    "PatchReport",
    "SiToConfig",
    "ToDoConfig",
    "ToMeConfig",
    "apply",
    "compressed",
    "host_timesteps",
    "inspect_model",
    "is_patched",
    "list_methods",
    "make_config",
    "remove",
    "sample_keys",
    "set_grid",
]
