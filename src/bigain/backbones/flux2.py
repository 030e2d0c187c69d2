"""Flux 2 (`Flux2Transformer2DModel`; FLUX.2 dev and Klein): double-stream blocks (joint attention,
image and text with their own projections, `Flux2Attention`) followed by single-stream blocks whose
attention runs on [text; image] (`Flux2ParallelSelfAttention`). Tokens are packed latent patches;
the timestep arrives as a sigma in [0, 1] and is read as t = 1000 * sigma.

Written as a `FluxBackbone` subclass (code, not a `BackboneSpec`) because the grid comes from
`img_ids` and the rotary tables are Flux's, which only the Flux adapter reads. What differs:

- Forward signature: forward(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids,
  guidance, ...): the timestep and `img_ids` sit where Chroma's do.
- Position ids have four axes (t, row, column, l): image tokens are (0, row, column, 0), text tokens
  (0, 0, 0, index). The grid is read from the last image id's row and column, as on Flux. The rotary
  tables are Flux's layout: (cos, sin) of shape (text + image, sum of the four axes' channels) over
  [text; image], on adjacent channel pairs, applied after the q/k norms, so the Flux hooks move the
  rows with merged tokens unchanged. Both attentions take the tables by keyword, which the blocks
  always use (`rope_position` None: the two attention classes put them at different positions).
- Single-stream blocks are "parallel" blocks: one projection (`to_qkv_mlp_proj`) gives queries,
  keys, values and the MLP input, and one projection (`to_out`) maps [attention; MLP] back. A token
  method reduces the image tokens of that attention's input, so the single-stream MLP runs on the
  reduced tokens too (there is no separate feed-forward to leave whole; `merge_mlp` concerns the
  double-stream `ff` only).
- KV methods (ToDo, BiGain-TD) are refused: the single-stream processor splits the fused projection's
  output into queries, keys and values by channels, so keys and values always have as many tokens as
  the queries, and the values reach the attention without passing through any module a hook could
  shorten. Giving them a downsampled source would mean replacing the processor.
- Reference images (FLUX.2 editing, and Klein's KV-cache "extract" step) put the reference tokens into
  the same sequence as the image ([image; references] or [references; image], told apart by their
  t id): such calls are refused with a message, since the hooks reduce every token after the text as
  one image grid. Klein's "cached" steps (image tokens only, the references' keys and values coming
  from the cache inside the processor) are plain calls to the hooks.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in
forward order (double then single), as Flux.
"""

from __future__ import annotations

import torch

from .flux import FluxBackbone

_KV_REFUSAL = (
    "Flux 2's single-stream blocks make queries, keys, values and the MLP input in one fused projection "
    "(to_qkv_mlp_proj) that their processor splits by channels, so keys and values cannot come from a "
    "downsampled copy of the image tokens without replacing the attention processor"
)


class Flux2Backbone(FluxBackbone):
    name = "flux2"
    classes = ("Flux2Transformer2DModel",)
    label = "Flux 2"
    placement = (
        "the DiT-XL/2 placement mapped by relative depth over the double- then single-stream blocks "
        "(double 2-7, single 0-3 and 6-15 of FLUX.2 dev's 8 + 48)"
    )
    rope_position = None  # Flux2Attention: position 3; Flux2ParallelSelfAttention: 2; blocks pass it by keyword
    timestep_position = 2  # forward(hidden_states, encoder_hidden_states, timestep, img_ids, ...)
    img_ids_position = 3
    refuses = {"kv": _KV_REFUSAL}

    def ids_grid(self, ids: torch.Tensor) -> tuple[int, int]:
        first, last = torch.stack([ids[0], ids[-1]]).tolist()  # one host read per new ids tensor
        if int(first[0]) != int(last[0]):
            raise ValueError(
                f"bigain: the Flux 2 img_ids span images with different t ids ({int(first[0])} and "
                f"{int(last[0])}): reference-image tokens share the sequence with the image, and bigain "
                "compresses one image grid; calls with reference images are not supported"
            )
        return int(last[1]) + 1, int(last[2]) + 1
