"""Pure tensor operators: no diffusers import, static shapes, explicit randomness."""

from .grid import infer_level, level_grid, map_to_tokens, tokens_to_map
from .keyed import KeyedTable, block_salt, keyed_normal, keyed_randint, seed_salt, timestep_keys
from .kv import average, blend_downsample, blend_weights, downsample_tokens, nearest_exact, nearest_positions
from .laplacian import laplacian_score
from .partition import fixed_choice, keyed_choice, partition, random_choice, score_choice
from .plans import MergePlan, PrunePlan, bipartite_merge_plan, similarity_prune_plan
from .tracing import is_compiling

__all__ = [
    "KeyedTable",
    "MergePlan",
    "block_salt",
    "blend_weights",
    "nearest_positions",
    "seed_salt",
    "timestep_keys",
    "PrunePlan",
    "average",
    "bipartite_merge_plan",
    "blend_downsample",
    "downsample_tokens",
    "fixed_choice",
    "infer_level",
    "is_compiling",
    "keyed_choice",
    "keyed_normal",
    "keyed_randint",
    "laplacian_score",
    "level_grid",
    "map_to_tokens",
    "nearest_exact",
    "partition",
    "random_choice",
    "score_choice",
    "similarity_prune_plan",
    "tokens_to_map",
]
