"""LTX-2 (`LTX2VideoTransformer3DModel`, joint audio-video generation): a flat list of
`LTX2VideoTransformerBlock`s, each carrying a video stream and an audio stream side by side.

A block runs, on each stream: a self-attention (video `attn1`, audio `audio_attn1`), a
cross-attention to that stream's text (`attn2`, `audio_attn2`), then the two cross-modal attentions
(`audio_to_video_attn`: video queries, audio keys and values; `video_to_audio_attn`: audio queries,
video keys and values, both made from the stream states before either cross-modal residual), then a
feed-forward each (`ff`, `audio_ff`). Every residual is added, gated and modulated, by the block at
full length. bigain compresses the video stream only: `attn1` (role "attn"), the text
cross-attention `attn2` (role "cross", with `merge_crossattn`) and `ff` (role "ff", with
`merge_mlp`). With `merge_crossattn` the audio-to-video attention takes the merged video queries too
(its output is expanded back before the block adds it); its audio keys and values stay whole. The
audio stream, both texts and the video-to-audio attention (whose keys are every video token) are
never touched.

Grid: the model takes packed (B, S, C) video tokens, frame-major then row-major, and the pipelines
pass the latent grid as `num_frames`, `height`, `width` (the rotary coordinates `video_coords`, when
given, are the same grid's). The token grid is that grid over `patch_size_t` / `patch_size`, rounded
up as the model's own coordinate grid steps it (1 on the published models). LTX2ConditionPipeline
and LTX2InContextPipeline (IC-LoRA) append keyframe or reference tokens after the grid's: blocks are
`image_first`, methods act on the grid's F*H*W tokens and keep the appended ones whole. A call
without the grid (positions only as `video_coords`: LTX2DFRPipeline, also on spatial tiles of the
video) is refused. Timestep: `timestep` on the 0-1000 scale as passed
(the flow-matching scheduler's timesteps); the image-to-video and condition pipelines' per-token
(B, S) timesteps (conditioning tokens at 0) are reduced to one per row, the largest.

Rotary embedding: the model makes (cos, sin) tables from `video_coords` per sample and passes them to
`attn1` as `query_rotary_emb` (the processor rotates keys with the same tables when `key_rotary_emb`
is None, as on self-attention), after the q/k RMS norms on the (B, S, inner) layout. Two layouts
(`config.rope_type`): "interleaved" (LTX-2.0), (B, S, inner) tables on adjacent channel pairs across
all heads, as LTX-Video; "split" (LTX-2.3), (B, heads, S, head_dim / 2) tables rotating each head's
first half against its second. `rope_rows` gives (B, S, D) rows per sample in both (split: the heads'
halves side by side), and `rope` rotates a q/k norm output with LTX-2's arithmetic for the layout of
the attention (`attn.rope_type`). When a method changes the tokens `attn1` sees, bigain takes the
tables out of the call and rotates with the rows of the tokens present (a merged token's destination,
a downsampled key's nearest-exact sample; the appended tokens their own rows). The audio-to-video
attention gets its own tables (the frame coordinate only) as `query_rotary_emb` and the audio's as
`key_rotary_emb`; with merged queries bigain gives it the query tables' rows of the tokens present in
the tables' place, so the processor rotates as the model does.

Masks: `video_self_attention_mask` (IC-LoRA: (B, S, S) attention strengths between the noisy tokens
and the appended reference groups, uniform over the noisy tokens) reaches `attn1` as an additive
(B, S, S) mask. Token methods gather its rows and columns at the tokens present (a merged token takes
its destination's), which is exact for the pipeline's masks. KV methods are refused with it: the
processor sizes the mask by the attention's input, not by the downsampled keys. Spatio-temporal
guidance on a perturbed-attention model (LTX-2.3) passes `perturbation_mask` to `attn1` of its
blocks, whose processor then mixes in the values of the attention's input token by token: merged
queries give merged values, expanded back like the attention output (token methods take it), but
downsampled keys give values of another length, so KV methods refuse such a block call. The text
masks belong to the cross-attentions' keys and are not touched; `video_keyframes_mask` acts before
the blocks.

Why code and not a `BackboneSpec`: the per-sample rotary tables in two layouts, the grid in
num_frames/height/width over the patch sizes, per-token timesteps, the second video-query
cross-attention and the pairwise self-attention mask are not what a record can say.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth (LTX-2's 48 blocks: 2-10
and 12-20); windows within a frame (st=1), as LTX-Video.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, call_arg, relative_placement, with_call_arg
from .spec import argument

MASK_KV_REFUSAL = (
    "the call passes a video_self_attention_mask (IC-LoRA's attention strengths), which LTX-2's attention "
    "processor sizes by the attention's input, not by downsampled keys; use a token method (tome, bigain-tm, sito)"
)
STG_KV_REFUSAL = (
    "spatio-temporal guidance perturbs this block (perturbation_mask): the processor mixes the values of "
    "every video token into the attention output, which downsampled keys and values cannot give; use a "
    "token method (tome, bigain-tm, sito) or leave this block out of the placement"
)


def _positions(patch: Any, length: int) -> tuple[torch.Tensor, int]:
    """(original index of every token of a reduced video sequence of `length`, the sequence's length
    before the method): the plan's grid tokens (B, N'), then the tokens appended after the grid
    (keyframes, references), whole and in order."""
    from ..patching.hooks import _plan_positions

    pos = _plan_positions(patch.plan)
    n, rest = patch.plan.inverse.shape[1], length - pos.shape[1]
    if rest == 0:
        return pos, n
    tail = torch.arange(n, n + rest, device=pos.device, dtype=pos.dtype)
    return torch.cat([pos, tail.expand(pos.shape[0], -1)], dim=1), n + rest


def _gather_rows(table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows `pos` (B, N) of a rotary table, (B, S, D) or split (B, heads, S, r)."""
    b = pos.shape[0]
    if table.dim() == 3:
        table = table.expand(b, -1, -1)
        return torch.gather(table, 1, pos[:, :, None].expand(-1, -1, table.shape[-1]))
    table = table.expand(b, -1, -1, -1)
    index = pos[:, None, :, None].expand(-1, table.shape[1], -1, table.shape[-1])
    return torch.gather(table, 2, index)


class _LTX2Hooks:
    """The adapter's own hooks on one patched block (see the module docstring)."""

    def __init__(self, patch: Any) -> None:
        self.patch = patch

    def refuse_kv(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        """Before a KV method's hook on `attn1`: a block perturbed by spatio-temporal guidance."""
        if kwargs.get("perturbation_mask") is not None and not self.patch.state.current().off:
            raise ValueError(f"bigain: {self.patch.cfg.name} cannot run on {self.patch.block.name}: {STG_KV_REFUSAL}")

    def gather_mask(self, module: nn.Module, args: tuple, kwargs: dict):
        """After a token method's hook on `attn1`: the pairwise mask's rows and columns of the tokens present."""
        p = self.patch
        mask = call_arg(args, kwargs, 2, "attention_mask")
        if mask is None or p.plan is None or "attn" not in p.reduced:
            return None
        x = call_arg(args, kwargs, 0, "hidden_states")
        pos, full = _positions(p, x.shape[1])
        if mask.dim() != 3 or mask.shape[-1] != full or mask.shape[-2] != full:
            raise ValueError(
                f"bigain: {p.cfg.name} changes the video tokens of {p.block.name}, but its self-attention mask "
                f"{tuple(mask.shape)} is not the (B, {full}, {full}) mask over its tokens bigain can gather"
            )
        b, n = pos.shape
        mask = mask.expand(b, -1, -1)
        rows = torch.gather(mask, 1, pos[:, :, None].expand(-1, -1, full))
        return with_call_arg(args, kwargs, 2, "attention_mask", torch.gather(rows, 2, pos[:, None, :].expand(-1, n, -1)))

    def reduce_a2v(self, module: nn.Module, args: tuple, kwargs: dict):
        """The audio-to-video attention on the merged video queries, its query tables' rows alike."""
        p = self.patch
        if p.plan is None:
            return None
        if call_arg(args, kwargs, 2, "attention_mask") is not None:
            raise ValueError(
                f"bigain: {p.cfg.name} merges the video queries of {p.block.name}'s audio-to-video attention, "
                "but the call passes an attention mask over them, which bigain does not cut"
            )
        reduced = p._reduce_pre(module, args, kwargs)
        if reduced is None:
            return None
        args, kwargs = reduced
        tables = call_arg(args, kwargs, 3, "query_rotary_emb")
        if tables is not None:
            x = call_arg(args, kwargs, 0, "hidden_states")
            pos, _ = _positions(p, x.shape[1])
            cos, sin = tables
            args, kwargs = with_call_arg(args, kwargs, 3, "query_rotary_emb", (_gather_rows(cos, pos), _gather_rows(sin, pos)))
        return args, kwargs


class LTX2Backbone(Backbone):
    name = "ltx2"
    classes = ("LTX2VideoTransformer3DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth (LTX-2's 48 blocks: 2-10 and 12-20); video tokens "
        "only, windows within a frame"
    )
    rope_kwarg = "query_rotary_emb"  # the block calls attn1 by keywords
    rope_position = 3  # LTX2Attention.forward(hidden_states, encoder_hidden_states, attention_mask, query_rotary_emb, ...)

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn1, "cross": b.attn2, "ff": b.ff}, image_first=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = argument(model, args, kwargs, "hidden_states")
        if x is None or x.dim() != 3:
            raise ValueError("bigain: the LTX-2 transformer's video input must be packed (B, S, C) tokens")
        dims = [argument(model, args, kwargs, n) for n in ("num_frames", "height", "width")]
        if any(d is None for d in dims):
            raise ValueError(
                "bigain: the LTX-2 transformer needs num_frames, height and width (the latent video grid, as "
                "the LTX-2 pipelines pass them); a call giving the positions only as video_coords has no grid "
                "bigain can read"
            )
        cfg = model.config
        steps = (int(cfg.patch_size_t), int(cfg.patch_size), int(cfg.patch_size))
        grid = ops.Grid(*(-(-int(d) // s) for d, s in zip(dims, steps)))  # the model's coordinate grid
        t = argument(model, args, kwargs, "timestep")
        if isinstance(t, torch.Tensor) and t.dim() == 2:
            t = t.amax(dim=1)  # per-token (image-to-video, conditions): the row's denoising step
        dev, host = as_timesteps(t, x.shape[0], x.device)
        extra = {}
        if argument(model, args, kwargs, "video_self_attention_mask") is not None:
            extra["kv_refused"] = MASK_KV_REFUSAL
        return ForwardInfo(grid, dev, host, extra)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def install_around(self, patch: Any, hooks: Any, after: bool) -> None:
        own = _LTX2Hooks(patch)
        block = patch.block.module
        if patch.cfg.mechanism == "kv":
            if not after:
                hooks.pre(block.attn1, own.refuse_kv)
            return
        if not after:
            return
        hooks.pre(block.attn1, own.gather_mask)
        if "cross" in patch.reduced and getattr(block, "audio_to_video_attn", None) is not None:
            hooks.pre(block.audio_to_video_attn, own.reduce_a2v)
            hooks.post(block.audio_to_video_attn, patch._expand_post)

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = tables
        if cos.dim() == 4:  # split: (B, heads, S, r) -> (B, S, heads * r)
            return cos.transpose(1, 2).flatten(2), sin.transpose(1, 2).flatten(2)
        return cos, sin  # interleaved: (B, S, inner), per sample

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        if getattr(attn, "rope_type", "interleaved") != "split":
            # adjacent channel pairs across every head: LTX's (B, S, inner) rotation, one "head"
            return ops.rope_pairs(x[:, :, None], cos, sin)[:, :, 0]
        # each head's first half against its second, in fp32: (a, b) -> (a cos - b sin, b cos + a sin)
        b, s, inner = x.shape
        heads = int(attn.heads)
        halves = x.reshape(b, s, heads, 2, inner // heads // 2).float()
        first, second = halves[..., 0, :], halves[..., 1, :]
        c = cos.unflatten(-1, (heads, -1))
        n = sin.unflatten(-1, (heads, -1))
        out_first = torch.addcmul(first * c, -n, second)
        out_second = torch.addcmul(second * c, n, first)
        return torch.stack([out_first, out_second], dim=-2).reshape(b, s, inner).to(x.dtype)
