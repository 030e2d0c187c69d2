"""CogVideoX (`CogVideoXTransformer3DModel`: CogVideoX 2B/5B, text-to-video and image-to-video, and
CogVideoX 1.5 with its temporal patch): a flat list of `CogVideoXBlock`s on one video token grid.

Each block has one attention `attn1` (role "attn") that takes the video tokens as `hidden_states`
and the text as `encoder_hidden_states`; its processor (`CogVideoXAttnProcessor2_0`) joins
[text; video] before the q/k/v projections, attends over the joined sequence and returns
(video, text) apart. The feed-forward `ff` runs on [text; video] joined by the block, so it is not a
role (`merge_mlp` reduces nothing there). The adaLN modulation and gates are applied by the block at
full length, so they never see reduced tokens. Token methods reduce the video tokens the attention
receives; the text keeps every token. KV methods give `to_k`/`to_v` [text; downsampled video] in
place of the joined sequence (queries keep every token).

Grid: the (B, F, C, H, W) latent (frames before channels) over `config.patch_size` and, on
CogVideoX 1.5, `config.patch_size_t`; the patch embedding flattens frame-major then row-major.
Timestep: on the 0-1000 scale as passed (the pipelines' DDIM / DPM scheduler timesteps).

Rotary embedding (`use_rotary_positional_embeddings`, the 5B and 1.5 models): the pipeline passes
`image_rotary_emb` = (cos, sin), each (S_video, D) video rows only, and the processor rotates the
video part of queries and keys, (B, heads, S, D) after the q/k norms, pairs of adjacent channels in
fp32 (`diffusers.models.embeddings.apply_rotary_emb`). When a method changes the tokens `attn1`
sees, bigain takes the tables out of the call and rotates the video rows of the q/k norm outputs
itself with the same arithmetic, using the rows of the tokens actually present; the text rows are
left as they are.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (block j when
floor(28 j / depth) is in {1-5, 7-11}): blocks 2-6 and 8-12 of CogVideoX-2B's 30, blocks 2-8 and
11-17 of 5B's 42. Windows stay within a frame (st=1), as Wan and LTX-Video.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement


class CogVideoXBackbone(Backbone):
    name = "cogvideox"
    classes = ("CogVideoXTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (blocks 2-6 and 8-12 of CogVideoX-2B's 30); "
        "windows within a frame"
    )
    rope_kwarg = "image_rotary_emb"
    rope_position = 3  # Attention.forward(hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
    # The processor joins [text; video] before to_k/to_v: KV methods give them [text; downsampled video].
    kv_text_join_processors = ("CogVideoXAttnProcessor2_0",)

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1}, joint=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = call_arg(args, kwargs, 0, "hidden_states")
        if x is None or x.dim() != 5:
            raise ValueError("bigain: the CogVideoX transformer input must be a (B, F, C, H, W) latent")
        dev, host = as_timesteps(call_arg(args, kwargs, 2, "timestep"), x.shape[0], x.device)
        p = int(model.config.patch_size)
        p_t = int(getattr(model.config, "patch_size_t", None) or 1)  # ConsisID has no temporal patch
        f, _, h, w = (int(s) for s in x.shape[1:])
        return ForwardInfo(ops.Grid(f // p_t, h // p, w // p), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the pipelines choose the size; sample_frames is not the latent frame count

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        # x: a (B, heads, T + N, D) q/k norm output of [text; video]; rotate the N video rows
        return ops.rope_after_text(ops.rope_pairs, x, cos, sin)
