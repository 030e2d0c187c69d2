"""Denoisers built on CogVideoX's block: the CogVideoX adapter (`cogvideox.py`) with their own class
names. A subclass, not a `BackboneSpec` record, because CogVideoX's [text; video] key/value join in
the processor and its rotary rows on the video part are code.

ConsisID (`ConsisIDTransformer3DModel`, identity-preserving text-to-video): `ConsisIDBlock` is
CogVideoX's block (`attn1` with `CogVideoXAttnProcessor2_0`, which joins [text; video] before the
q/k/v projections; a feed-forward on [text; video] joined by the block, so not a role; adaLN at full
length) and the forward passes the same arguments in the same positions (the (B, F, C, H, W) latent,
the text, the 0-1000 timestep third, the pipeline's `image_rotary_emb` of video rows only). The
video tokens, their rotary rows and the KV join are handled as on CogVideoX. Differences: there is
no temporal patch (no `config.patch_size_t`: one token frame per latent frame), and with
`is_train_face` the forward adds the output of a face perceiver cross-attention to the video tokens
after every `cross_attn_interval`-th block. That addition happens outside the blocks, on block
outputs that have every token back in place, so it meets the tokens it was computed for; the
perceiver attentions (video queries, face keys) are not compression sites.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth, as CogVideoX (blocks 2-8
and 11-17 of ConsisID's 42, a CogVideoX-5B stack). Windows stay within a frame (st=1).
"""

from __future__ import annotations

from .cogvideox import CogVideoXBackbone


class ConsisIDBackbone(CogVideoXBackbone):
    name = "consisid"
    classes = ("ConsisIDTransformer3DModel",)
    placement = (
        "the DiT-XL/2 placement mapped by relative depth, as CogVideoX (blocks 2-8 and 11-17 of ConsisID's 42); "
        "windows within a frame"
    )
