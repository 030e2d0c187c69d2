"""Cosmos (`CosmosTransformer3DModel`: Cosmos 1.0 Diffusion, Cosmos-Predict2 and 2.5, text- and
video-to-world, and Cosmos-Transfer 2.5's base model): a flat list of `CosmosTransformerBlock`s on one
video token grid.

Each block has a self-attention `attn1` over the video tokens (role "attn"), a cross-attention
`attn2` to the text (role "cross"; on Transfer 2.5 it also attends to an image context, given as a
(text, image) tuple; bigain only ever reduces its video queries) and a feed-forward `ff` (role
"ff"). The adaLN-LoRA modulation and the gates are applied by the block around its sub-layers at
full length (also Predict 2.5's per-frame modulation), and Cosmos 1.0's learnable position
embedding and Transfer 2.5's control residuals are added to the block's input and output, which
always have every token, so none of them sees reduced tokens. The cross-attention's text mask
covers the text keys only and is left as it is.

Grid: the (B, C, F, H, W) latent over `config.patch_size` (p_t, p_h, p_w), tokens frame-major then
row-major. The extra input channels the model concatenates before its patch embedding (the
video-to-world `condition_mask`, the `padding_mask` channel) change what is embedded, not the grid.

Timestep: the pipelines pass three conventions, told apart by the model's config. Cosmos 2.x
(`extra_pos_embed_type` None) gets a noise fraction in [0, 1] (Predict2: sigma / (sigma + 1) of its
Karras sigmas; Predict / Transfer 2.5: the flow-matching sigma), read as 1000 times it. Cosmos 1.0
(`extra_pos_embed_type="learnable"`, the EDM pipelines) gets the EDM noise conditioning
c = log(sigma) / 4, read on the same scale as Cosmos 2: 1000 * sigma / (sigma + 1), sigma = exp(4 c).
Per-frame timesteps (B, 1, F, 1, 1) (video-to-world, whose conditioning frames are nearly clean) are
reduced to one per row, the largest: the denoising step of the row's noisy frames.

Rotary embedding: the model passes (cos, sin), each (tokens, head_dim) in float32 (the frame, row
and column frequencies, each repeated as two halves), to `attn1` as `image_rotary_emb` (keyword
only); the processor rotates queries and keys on (B, heads, S, D) after norm_q / norm_k, channel i
paired with channel i + D/2 (CogView4's convention), in fp32 rounded to the input's dtype. When a
method changes the tokens `attn1` sees, bigain takes the tables out of the call and rotates the q/k
norm outputs itself with that arithmetic, using the rows of the tokens actually present.

Why code rather than a `BackboneSpec` record: the grid is 3-D, the timestep convention depends on
the config, and the rotary layout is (B, heads, S, D) halves, not Flux's.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): the 2B/7B models' 28 blocks take exactly the paper's blocks
1-5 and 7-11, the 14B models' 36 take blocks 2-7 and 9-15. Windows stay within a frame (st=1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement


def _edm_level(c: float) -> float:
    sigma = math.exp(4.0 * c)
    return 1000.0 * sigma / (sigma + 1.0)


class CosmosBackbone(Backbone):
    name = "cosmos"
    classes = ("CosmosTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (the paper's blocks 1-5 and 7-11 on the 2B and "
        "7B models' 28); windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = None  # the block calls attn1(norm_hidden_states, image_rotary_emb=...): keyword only

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1, "cross": b.attn2, "ff": b.ff})
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the Cosmos transformer input must be a (B, C, F, H, W) latent")
        t = call_arg(args, kwargs, 1, "timestep")
        if isinstance(t, torch.Tensor) and t.dim() == 5:
            t = t.flatten(1).amax(dim=1)  # per frame (B, 1, F, 1, 1): the row's noisiest frame
        edm = getattr(model.config, "extra_pos_embed_type", None) == "learnable"  # Cosmos 1.0
        dev, host = as_timesteps(t, x.shape[0], x.device, scale=1.0 if edm else 1000.0)
        if edm:
            if dev is not None:
                sigma = torch.exp(4.0 * dev)
                dev = 1000.0 * sigma / (sigma + 1.0)
            if host is not None:
                host = tuple(_edm_level(c) for c in host)
        p_t, p_h, p_w = (int(p) for p in model.config.patch_size)
        f, h, w = (int(s) for s in x.shape[-3:])
        return ForwardInfo(ops.Grid(f // p_t, h // p_h, w // p_w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size (max_size is the rotary table's limit)

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: (B, heads, S, D) after norm_q / norm_k; diffusers' apply_rotary_emb(use_real_unbind_dim=-2)
        return ops.rope_halves(x.transpose(1, 2), cos, sin).transpose(1, 2)
