"""Denoisers laid out as HunyuanVideo (`hunyuan_video.py`): the HunyuanVideo adapter with their own
class names and the points where they differ. Each is a subclass, not a `BackboneSpec` record,
because what they share with HunyuanVideo is code: (cos, sin) rotary tables over the video/image
tokens only (adjacent channel pairs, float32, applied after the q/k norms to the image part of the
joined sequence), attention processors that join [image; text] (after the projections on
dual-stream blocks, before them on single-stream ones: `Block.text_suffix`), and a grid read from a
(B, C, F, H, W) latent. Both models number their rotary rows as their patch embedding orders the
tokens (`Conv*d` then `flatten(2)`: frame-major, then row-major; rotary axes meshgrid'ed with
indexing "ij"), so the rows of merged tokens and downsampled keys are the rows of their positions.

HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`, text-to-video and image-to-video; 54 blocks
published): dual-stream blocks only (`transformer_blocks`, no single-stream list). Each attention
(`HunyuanVideo15AttnProcessor2_0`) takes the video as `hidden_states` and the conditioning sequence
as `encoder_hidden_states` with its own projections, joins [video; conditions] after the
projections, and rotates the video queries and keys only, as HunyuanVideo's dual-stream blocks.
- Conditions: the forward puts, per sample, the valid vision tokens (`image_embeds`, SigLIP; zeroed
  and masked out on text-to-video), the valid ByT5 glyph tokens and the valid MLLM tokens first,
  then each one's padding, all in the encoder stream, which bigain never touches. Image-to-video
  also concatenates the first frame's latent and a mask on channels (`in_channels` 65), so every
  video token is a target token: text-to-video and image-to-video are both taken.
- Mask: the blocks get the (B, conditions) boolean mask of that sequence, and the processor pads it
  in front with True up to its query count (video + conditions) before squaring it into a
  (B, 1, S, S) mask. A token method shortens the video in the call, and the pad follows by itself
  (nothing to cut: `mask_kwarg` None). KV methods (ToDo, BiGain-TD) are refused: with keys fewer
  than queries the processor's square mask no longer fits the keys, and the mask is made inside
  the processor, which bigain would have to replace.
- Grid: the latent over (`patch_size_t`, `patch_size`, `patch_size`), the same config names as
  HunyuanVideo (published: 1, 1, 1 on 32-channel latents). Timestep: as passed (the flow-matching
  scheduler's 0-1000 timesteps); MeanFlow's `timestep_r` only adds an embedding.
- Default placement: the DiT-XL/2 placement mapped by relative depth over the blocks: 2-11 and
  14-23 of the published 54; windows within a frame (st=1), as HunyuanVideo.

HunyuanImage 2.1 (`HunyuanImageTransformer2DModel`: the text-to-image model, its distilled
variants, and the refiner): HunyuanVideo's layout, block for block. Dual-stream blocks
(`transformer_blocks`), then single-stream blocks (`single_transformer_blocks`) that call their
attention with the image and the text apart; the processor `HunyuanImageAttnProcessor` is
HunyuanVideo's line for line ([image; text] joined before to_q/to_k/to_v on single-stream blocks,
the image part rotated), so KV methods give the single-stream to_k/to_v [downsampled image; text].
- Text: the MLLM tokens, or with ByT5 (`text_embed_2_dim`) the valid ByT5 and MLLM tokens first
  and their padding after, in the encoder stream, untouched.
- Mask: (B, 1, 1, image + text), True on the image, False on padded text, passed to every
  attention: HunyuanVideo's key mask, cut in front when a method shortens the image keys.
- Grid: a (B, C, H, W) latent over `config.patch_size` (p_h, p_w) (the text-to-image model:
  (1, 1) on 64-channel latents), or a (B, C, F, H, W) latent over (p_t, p_h, p_w) (the refiner:
  one frame, the condition image's latent concatenated on channels, so every token is a target
  token); windows within a frame. Timestep: as passed (0-1000); the distilled models' `guidance`
  and MeanFlow's `timestep_r` only add embeddings.
- Default placement: as HunyuanVideo (dual 3-12 and 15-19, single 0-5 of the published 20 + 40).
"""

from __future__ import annotations

from torch import nn

from .. import ops
from .base import Block, ForwardInfo, as_timesteps, relative_placement
from .hunyuan_video import HunyuanVideoBackbone

_V15_KV_REFUSAL = (
    "HunyuanVideo 1.5's attention processor builds its attention mask inside the call, padding the "
    "conditions' mask to the number of queries and squaring it, so it cannot serve fewer keys than "
    "queries; downsampled keys and values would need a replaced processor"
)


class HunyuanVideo15Backbone(HunyuanVideoBackbone):
    name = "hunyuan-video-1.5"
    classes = ("HunyuanVideo15Transformer3DModel",)
    label = "HunyuanVideo 1.5"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the dual-stream blocks (2-11 and 14-23 "
        "of the published 54); windows within a frame"
    )
    # The (B, conditions) mask is padded to the query count by the processor itself: nothing to cut.
    mask_kwarg = None
    mask_position = None
    kv_suffix_join_processors = ()
    refuses = {"kv": _V15_KV_REFUSAL}

    def blocks(self, model: nn.Module) -> list[Block]:
        return [
            Block(i, f"transformer_blocks.{i}", b, 1, {"attn": b.attn, "ff": b.ff}, joint=True)
            for i, b in enumerate(model.transformer_blocks)
        ]

    def default_blocks(self, model: nn.Module, blocks: list[Block]) -> tuple[int, ...] | None:
        return relative_placement(len(blocks))


class HunyuanImageBackbone(HunyuanVideoBackbone):
    name = "hunyuan-image"
    classes = ("HunyuanImageTransformer2DModel",)
    label = "HunyuanImage"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the dual- then single-stream blocks "
        "(dual 3-12, 15-19 and single 0-5 of the published 20 + 40); windows within a frame"
    )
    kv_suffix_join_processors = ("HunyuanImageAttnProcessor",)

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = args[0] if args else kwargs.get("hidden_states")
        patch = tuple(int(p) for p in model.config.patch_size)
        if x is None or x.dim() != 2 + len(patch):
            shape = "(B, C, H, W)" if len(patch) == 2 else "(B, C, F, H, W)"
            raise ValueError(
                f"bigain: the HunyuanImage transformer with patch_size {list(patch)} takes a {shape} latent"
            )
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        dev, host = as_timesteps(t, x.shape[0], x.device)
        sizes = [int(s) // p for s, p in zip(x.shape[2:], patch)]
        grid = ops.Grid.image(*sizes) if len(sizes) == 2 else ops.Grid(*sizes)
        return ForwardInfo(grid, dev, host)
