"""Compression methods: one module per method, each a validated config that also owns its operator
choices (destination rule and plan for token methods, key/value source for KV methods).

Option names follow tomesd and ToDo where they overlap (ratio, sx, sy, max_downsample, use_rand,
merge_attn, merge_crossattn, merge_mlp, downsample_factor, ...).
"""

from .base import Draw, MethodConfig, check
from .bigain_td import BiGainTDConfig
from .bigain_tm import BiGainTMConfig
from .none import NoneConfig
from .registry import ALIASES, METHODS, list_methods, make_config, parse_option_value, register
from .sito import SiToConfig
from .todo import ToDoConfig
from .tome import ToMeConfig
from .windowed import WindowedConfig

for _cls in (NoneConfig, ToMeConfig, BiGainTMConfig, ToDoConfig, BiGainTDConfig, SiToConfig):
    register(_cls)

__all__ = [
    "ALIASES",
    "METHODS",
    "BiGainTDConfig",
    "BiGainTMConfig",
    "Draw",
    "MethodConfig",
    "NoneConfig",
    "SiToConfig",
    "ToDoConfig",
    "ToMeConfig",
    "WindowedConfig",
    "check",
    "list_methods",
    "make_config",
    "parse_option_value",
    "register",
]
