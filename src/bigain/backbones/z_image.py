"""Z-Image (`ZImageTransformer2DModel`: Z-Image / Z-Image-Turbo text-to-image): a single-stream DiT.

Layout: the forward takes the latents as a list, one (C, F, H, W) tensor per sample (F = 1 for an
image), patchifies each (`patch_size` x `patch_size` pixels, `f_patch_size` frames; tokens frame-,
then row-major), and pads every sample's image tokens to a multiple of 32 with a learned pad token
(`x_pad_token`, rotary position (0, 0, 0)). Three block lists follow:
- `noise_refiner`: blocks over the image alone, [image; image padding];
- `context_refiner`: blocks over the caption alone (never a compression site: no image tokens);
- `layers`: the main blocks over one joint sequence per sample, [image; image padding; caption]
  (the caption also padded to a multiple of 32), the samples then padded to the longest.
The image is first, at offset 0 in every sample, in both compression sites: they are `image_first`
blocks, whose attention input, feed-forward input and q/k norm outputs are [image; rest], and
bigain reduces or downsamples the first grid-many tokens and leaves the rest (image padding,
caption, batch padding) as it is. Each block calls its attention `attention` (role "attn") with
the whole sequence as `hidden_states`, and its processor (`ZSingleStreamAttnProcessor`) projects
q/k/v from that one tensor, so KV methods give `to_k`/`to_v` [downsampled image; rest].
The feed-forward `feed_forward` is role "ff" (`merge_mlp`).

Grid: read from the shapes of the latent list (no device read): (F / f_patch_size, H / patch_size,
W / patch_size) with the forward's `patch_size` / `f_patch_size` (defaults 2 and 1). Every sample
must have the same grid (the pipelines repeat one latent shape, CFG included); a call whose
samples differ is refused with a message, as is the Omni call (`x` a list of lists: several images
per sample, [caption; images; SigLIP] order, per-token noise masks).

Timestep: the pipeline passes t = (1000 - T) / 1000 for the scheduler's timestep T (0 is pure
noise, 1 the clean image; the model embeds t * `t_scale`), so the 0-1000 noise scale is read as
T = 1000 * (1 - t).

Rotary embedding: the model computes complex64 tables per sample, (B, S, head_dim / 2), from three
position axes (caption: (1 + k, 0, 0); image: (padded caption length + 1 + f, h, w), so the image
rows differ between samples whose padded captions differ; padding: (0, 0, 0); batch padding: zero
rows), and passes them to every attention as `freqs_cis`. The processor multiplies the q/k norm
outputs, (B, S, heads, head_dim) viewed as complex pairs of adjacent channels in float32, by them.
When a method changes the tokens an attention sees, bigain takes the tables out of the call and
applies them itself with the processor's arithmetic: each sample's rows of the tokens actually
present (kept or merged-into tokens, or the downsampled keys' nearest samples) for the image, and
the model's rows for the rest.

Attention mask: `None`, or a (B, S) boolean key mask over the joint sequence that masks only the
batch padding after the caption (samples whose padded captions differ in length); every image entry
is kept. When a method shortens the image keys, bigain drops as many entries from the front of the
mask (mask layout "tokens", as HiDream), so the padding stays masked.

Why code and not a `BackboneSpec`: the latent is a list of tensors (no (B, C, H, W) argument), the
timestep runs backwards, and the tables are complex and per sample.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over the noise-refiner
then the main blocks (block j when floor(28 j / depth) is in {1-5, 7-11}): on Z-Image's 2 + 30,
main layers 0-4 and 6-11.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps, relative_placement

# forward(x, t, cap_feats, return_dict, controlnet_block_samples, siglip_feats, image_noise_mask,
#         patch_size, f_patch_size, joint_attention_kwargs)
_POSITIONS = {"x": 0, "t": 1, "patch_size": 7, "f_patch_size": 8}


def _arg(args: tuple, kwargs: dict, name: str, default: Any = None) -> Any:
    position = _POSITIONS[name]
    value = args[position] if len(args) > position else kwargs.get(name)
    return default if value is None else value


def _token_grid(x: Any, p: int, pf: int) -> tuple[int, int, int]:
    """The one (frames, rows, columns) token grid of a call's latent list."""
    if x is None or len(x) == 0:
        raise ValueError("bigain: the Z-Image transformer got no latents `x`")
    if isinstance(x[0], (list, tuple)):
        raise ValueError(
            "bigain: the Z-Image call is in Omni mode (`x` a list of lists: several images per sample, "
            "caption first, per-token noise masks); bigain supports one image per sample"
        )
    grids = set()
    for sample in x:
        if not isinstance(sample, torch.Tensor) or sample.dim() != 4:
            raise ValueError("bigain: the Z-Image latents must be (C, F, H, W) tensors, one per sample")
        f, h, w = (int(s) for s in sample.shape[1:])
        grids.add((f // pf, h // p, w // p))
    if len(grids) != 1:
        found = ", ".join("x".join(str(v) for v in g) for g in sorted(grids))
        raise ValueError(
            f"bigain: the Z-Image call's samples have different token grids ({found}): their image tokens "
            "differ in number, which one grid per forward cannot describe; call the model per size"
        )
    return next(iter(grids))


class ZImageBackbone(Backbone):
    name = "z-image"
    classes = ("ZImageTransformer2DModel",)
    default_metric = "attn"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the noise-refiner then the main blocks "
        "(main layers 0-4 and 6-11 of Z-Image's 2 + 30); image tokens only"
    )
    rope_kwarg = "freqs_cis"  # the block calls its attention with keywords after hidden_states
    mask_kwarg = "attention_mask"
    mask_position = 2  # Attention.forward(hidden_states, encoder_hidden_states, attention_mask, ...)
    mask_layout = "tokens"  # (B, S) over the attention input [image; rest]: cut from the front

    def blocks(self, model: nn.Module) -> list[Block]:
        out: list[Block] = []
        for path in ("noise_refiner", "layers"):
            for i, b in enumerate(getattr(model, path)):
                roles = {"attn": b.attention, "ff": b.feed_forward}
                out.append(Block(len(out), f"{path}.{i}", b, 1, roles, image_first=True))
        return out

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = _arg(args, kwargs, "x")
        p = int(_arg(args, kwargs, "patch_size", 2))
        pf = int(_arg(args, kwargs, "f_patch_size", 1))
        f, h, w = _token_grid(x, p, pf)
        t = _arg(args, kwargs, "t")
        dev, host = as_timesteps(t, len(x), x[0].device)
        if dev is not None:  # t = 1 - T / 1000 (0: noise, 1: clean)
            dev = (1.0 - dev) * 1000.0
        if host is not None:
            host = tuple((1.0 - v) * 1000.0 for v in host)
        return ForwardInfo(ops.Grid(f, h, w), dev, host)

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        return None  # the config has no sample size

    def rope_rows(self, tables: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(tables, torch.Tensor) or not tables.is_complex():
            raise ValueError(
                "bigain: Z-Image's freqs_cis must be the model's complex (B, S, D/2) table when a method "
                "changes the tokens the attention sees"
            )
        return tables.real, tables.imag

    def rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn: nn.Module) -> torch.Tensor:
        return ops.rope_complex(x, cos, sin)  # `ZSingleStreamAttnProcessor`'s rotation
