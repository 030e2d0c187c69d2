"""SANA-Video (`SanaVideoTransformer3DModel`, text-to-video and image-to-video): a flat list of
`SanaVideoTransformerBlock`s on one video token grid, as SANA on images.

Each block has a linear self-attention `attn1` over the video tokens (role "attn"), a softmax
cross-attention `attn2` to the text (role "cross"; its padded-text mask is over the keys only, so it
takes fewer queries as they are) and a convolutional feed-forward (`GLUMBTempConv`, which reshapes
its input to the F x H x W map, so it is not a role: `merge_mlp` reduces nothing there). The adaLN
modulation (per token in image-to-video) is applied by the block at full length.

Token merging and pruning apply to the linear self-attention. KV downsampling (ToDo, BiGain-TD) is
refused, as on SANA: the self-attention is linear (ReLU feature maps; keys and values are summed once
into a head_dim x head_dim state), so there is no N x N attention map whose cost downsampled keys
would cut, while they would still change the output.

Grid: the (B, C, F, H, W) latent over `config.patch_size` (p_t, p_h, p_w), flattened frame-major then
row-major by the `Conv3d` patch embedding. Timestep: on the 0-1000 scale as passed (the pipelines'
flow scheduler timesteps); image-to-video's per-token timesteps (B, 1, F, H, W) (the conditioning
frame's tokens at 0) are reduced to one per row, the largest: the denoising step of the noisy tokens.

Rotary embedding: the model passes Wan's tables `rotary_emb` = (cos, sin), each (1, S, 1, D) in
float64, to `attn1` by keyword, and the processor rotates the ReLU of the normed queries and keys
(the normaliser uses them unrotated), so the rotation cannot be moved onto the q/k norm outputs as
on other families, and the processor needs tables for every call. When a method changes the tokens
`attn1` sees, bigain passes the processor the rows of the tokens actually present in place of the
full tables (queries and keys are the same tokens there), so it rotates them as it would at full
length. This is why the adapter is code (`install_around`), not a `BackboneSpec` record.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (blocks 1-8 of SANA-Video
2B's 20, as SANA). Windows stay within a frame (st=1), as Wan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement

LINEAR = (
    "its self-attention is linear (keys and values are summed into a head_dim x head_dim state): there is no "
    "N x N attention map for KV downsampling to make cheaper"
)


def _positions(plan: Any) -> torch.Tensor:
    """Original index of every token of a plan's reduced sequence, (B, N'): a prune plan's kept
    tokens, or a merge plan's [kept sources, destinations]."""
    keep = getattr(plan, "keep_idx", None)
    return keep if keep is not None else torch.cat([plan.kept_idx, plan.dst_idx], dim=1)


class _RotaryRows:
    """The pre-hook on `attn1` that runs after the method's: once the method has reduced the
    attention's tokens, the processor gets the rotary rows of the tokens present."""

    def __init__(self, patch: Any) -> None:
        self.patch = patch

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        plan = getattr(self.patch, "plan", None)
        tables = kwargs.get("rotary_emb")
        if plan is None or "attn" not in getattr(self.patch, "reduced", ()) or tables is None:
            return None  # the attention sees the model's tokens: the model's own tables
        pos = _positions(plan)
        cos, sin = tables
        kwargs = dict(kwargs)
        kwargs["rotary_emb"] = (cos[0, pos], sin[0, pos])  # (B, N', 1, D): each sample's rows
        return args, kwargs


class SanaVideoBackbone(Backbone):
    name = "sana-video"
    classes = ("SanaVideoTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 1-8 of SANA-Video 2B's 20); windows within a frame"
    )
    refuses = {"kv": LINEAR}

    def blocks(self, model: nn.Module) -> list[Block]:
        out = []
        for i, b in enumerate(model.transformer_blocks):
            roles = {"attn": b.attn1}
            if getattr(b, "attn2", None) is not None:
                roles["cross"] = b.attn2
            out.append(Block(i, f"transformer_blocks.{i}", b, 1, roles))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the SANA-Video transformer input must be a (B, C, F, H, W) latent")
        t = call_arg(args, kwargs, 2, "timestep")
        if isinstance(t, torch.Tensor) and t.dim() > 1:
            t = t.flatten(1).amax(dim=1)  # per-token timesteps (image-to-video): the row's denoising step
        dev, host = as_timesteps(t, x.shape[0], x.device)
        p_t, p_h, p_w = (int(p) for p in model.config.patch_size)
        f, h, w = (int(s) for s in x.shape[-3:])
        return ForwardInfo(ops.Grid(f // p_t, h // p_h, w // p_w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the pipelines choose the size and the frame count

    def install_around(self, patch: Any, hooks: Any, after: bool) -> None:
        if after:
            hooks.pre(patch.block.roles["attn"], _RotaryRows(patch))
