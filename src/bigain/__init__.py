"""bigain: training-free token compression for diffusion models that keeps both generation and
diffusion classification working (BiGain-TM, BiGain-TD, and the ToMe, ToDo and SiTo baselines)."""

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

__version__ = "0.1.0"

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
