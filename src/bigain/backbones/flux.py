"""Flux (`FluxTransformer2DModel`): double-stream blocks (joint attention as in SD3, image and text
with their own projections) followed by single-stream blocks (one attention over [text; image]).
Tokens are packed 2x2 latent patches; the grid comes from `img_ids` (row, column per token);
the timestep arrives as a sigma in [0, 1] and is read as t = 1000 * sigma.

Rotary position embeddings follow the tokens: when a method changes the image tokens an attention
sees, bigain applies the rotary embedding itself (with the positions of the kept tokens, or of the
downsampled keys) after the q/k norms, and the attention processor gets none.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (double then single).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, double_single_blocks, relative_placement


class FluxBackbone(Backbone):
    name = "flux"
    classes = ("FluxTransformer2DModel",)
    default_metric = "attn"
    placement = "the DiT-XL/2 placement mapped by relative depth over the double- then single-stream blocks"
    rope_kwarg = "image_rotary_emb"
    rope_position = 3  # FluxAttention.forward(hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
    label = "Flux"  # the model's name in messages
    timestep_position = 3  # forward(hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids)
    img_ids_position = 4
    timestep_scale = 1000.0  # the pipeline passes sigma in [0, 1]

    def blocks(self, model: nn.Module) -> list[Block]:
        singles = list(model.single_transformer_blocks)
        if singles and "encoder_hidden_states" not in inspect.signature(type(singles[0]).forward).parameters:
            # Older releases concatenate text and image before the single-stream blocks and use
            # another attention layout; the hooks here follow diffusers >= 0.35.
            raise TypeError("bigain supports Flux from diffusers 0.35 on; please upgrade diffusers")
        return double_single_blocks(model)

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def _grid(self, img_ids: torch.Tensor | None, num_tokens: int, cache: dict) -> tuple[int, int]:
        pinned = cache.get("pinned")
        if pinned is not None and pinned[0] * pinned[1] == num_tokens:
            return pinned
        seen: dict[int, set] = cache.setdefault("by_count", {})
        if ops.is_compiling():
            # No host read inside a graph: the one grid an eager forward of this model saw for this
            # token count, or a square.
            grids = seen.get(num_tokens, set())
            side = int(round(num_tokens**0.5))
            if not grids and side * side == num_tokens:
                grids = {(side, side)}
            if len(grids) != 1:
                found = " and ".join(f"{h}x{w}" for h, w in sorted(grids)) or "none"
                raise ValueError(
                    f"bigain: under torch.compile the {self.label} grid of {num_tokens} tokens cannot be read from img_ids "
                    f"(grids seen eagerly for this count: {found}); call bigain.set_grid(model, (rows, cols)) first"
                )
            return next(iter(grids))
        if img_ids is None:
            raise ValueError(f"bigain: {self.label} needs `img_ids` to know the token grid")
        ids = img_ids[0] if img_ids.dim() == 3 else img_ids
        # Pipelines pass the same ids tensor at every step: recognise it by identity (the cache holds a
        # reference, so its memory cannot be reused by another tensor) and by its version counter
        # (absent on inference-mode tensors, which cannot be modified in place anyway).
        try:
            version = img_ids._version
        except RuntimeError:
            version = -1
        recent: list = cache.setdefault("ids", [])
        for cached, cached_version, grid in recent:
            if cached is img_ids and cached_version == version:
                return grid
        grid = self.ids_grid(ids)
        if grid[0] * grid[1] != num_tokens:
            raise ValueError(f"bigain: img_ids describe a {grid[0]}x{grid[1]} grid but there are {num_tokens} tokens")
        cache["ids"] = [(img_ids, version, grid)] + recent[:7]
        seen.setdefault(num_tokens, set()).add(grid)
        return grid

    def ids_grid(self, ids: torch.Tensor) -> tuple[int, int]:
        """(rows, cols) from a (S, axes) ids tensor whose last row is the image's last token."""
        last = ids[-1].tolist()  # one host read per new ids tensor
        return int(last[1]) + 1, int(last[2]) + 1

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = args[0] if args else kwargs.get("hidden_states")
        if x is None or x.dim() != 3:
            raise ValueError(f"bigain: the {self.label} transformer input must be packed (B, N, C) tokens")
        tp, ip = self.timestep_position, self.img_ids_position
        t = args[tp] if len(args) > tp else kwargs.get("timestep")
        dev, host = as_timesteps(t, x.shape[0], x.device, scale=self.timestep_scale)
        img_ids = args[ip] if len(args) > ip else kwargs.get("img_ids")
        h, w = self._grid(img_ids, x.shape[1], cache)
        return ForwardInfo(ops.Grid.image(h, w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None
