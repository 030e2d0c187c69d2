"""Pure tensor operators: no diffusers import, static shapes, explicit randomness.

Tokens lie on a `Grid` (frames, height, width; an image is one frame), flattened frame-major then
row-major. The grid operators take a Grid and, for destinations, a window (st, sy, sx):
`random_windows`, `fixed_windows`, `keyed_windows`, `score_windows`, `partition_windows`,
`frequency_score`, `downsample`, `downsample_positions`, `prune_plan`, `KeyedTable.windows`. The image
forms taking (H, W) and (sx, sy) (`random_choice`, `partition`, `laplacian_score`, `downsample_tokens`,
`nearest_positions`, `similarity_prune_plan`, `KeyedTable.window_choice`, ...) are the same operators
on one frame, bit for bit.
"""

from .grid import (
    Grid,
    as_window,
    check_tokens,
    frames_as_batch,
    infer_level,
    level_grid,
    map_to_tokens,
    tokens_to_map,
    tokens_to_volume,
    volume_to_tokens,
)
from .keyed import KeyedTable, block_salt, keyed_normal, keyed_randint, seed_salt, timestep_keys
from .kv import (
    average,
    blend_downsample,
    blend_weights,
    downsample,
    downsample_positions,
    downsample_tokens,
    nearest_exact,
    nearest_positions,
)
from .laplacian import frequency_score, laplacian_kernel, laplacian_score
from .partition import (
    DEFAULT_WINDOW,
    fixed_choice,
    fixed_windows,
    keyed_choice,
    keyed_windows,
    partition,
    partition_windows,
    random_choice,
    random_windows,
    score_choice,
    score_windows,
)
from .plans import MergePlan, PrunePlan, bipartite_merge_plan, prune_plan, similarity_prune_plan
from .rope import rope_after_text, rope_complex, rope_halves, rope_pairs, rope_pairs_promoted
from .tracing import is_compiling

__all__ = [
    "DEFAULT_WINDOW",
    "Grid",
    "KeyedTable",
    "MergePlan",
    "PrunePlan",
    "as_window",
    "average",
    "bipartite_merge_plan",
    "blend_downsample",
    "blend_weights",
    "block_salt",
    "check_tokens",
    "downsample",
    "downsample_positions",
    "downsample_tokens",
    "fixed_choice",
    "fixed_windows",
    "frames_as_batch",
    "frequency_score",
    "infer_level",
    "is_compiling",
    "keyed_choice",
    "keyed_normal",
    "keyed_randint",
    "keyed_windows",
    "laplacian_kernel",
    "laplacian_score",
    "level_grid",
    "map_to_tokens",
    "nearest_exact",
    "nearest_positions",
    "partition",
    "partition_windows",
    "prune_plan",
    "random_choice",
    "random_windows",
    "score_choice",
    "score_windows",
    "rope_after_text",
    "rope_complex",
    "rope_halves",
    "rope_pairs",
    "rope_pairs_promoted",
    "seed_salt",
    "similarity_prune_plan",
    "timestep_keys",
    "tokens_to_map",
    "tokens_to_volume",
    "volume_to_tokens",
]
