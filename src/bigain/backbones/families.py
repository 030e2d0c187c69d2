"""Image families described only by a `BackboneSpec` record (see `spec.py`).

AuraFlow (`AuraFlowTransformer2DModel`): MMDiT blocks, where one joint attention takes the image
tokens and the text (with AuraFlow's register tokens) as `encoder_hidden_states`, then single blocks
over [text; image] in one sequence. No rotary embedding (a learned position table added at the patch
embedding), so every method applies; the timestep arrives as t / 1000.

SANA (`SanaTransformer2DModel`): a flat list of blocks on one patch grid, each a linear
self-attention (`attn1`), a cross-attention to text (`attn2`) and a convolutional feed-forward
(`GLUMBConv`, which reshapes its input to the H x W map, so it is not a role: `merge_mlp` reduces
nothing there). Token merging and pruning apply to the linear self-attention. KV downsampling
(ToDo, BiGain-TD) is refused: a linear attention never forms the N x N attention map whose cost
those methods cut (it sums keys and values once into a d x d state), so downsampling its keys and
values saves only their projections while still changing the output. The SANA pipeline passes t
times `config.timestep_scale` (1.0 on SANA 1.x, read as the 0-1000 scale).

CogView3-Plus (`CogView3PlusTransformer2DModel`): blocks whose attention takes the text as
`encoder_hidden_states`, joins [text; image] in the processor (no rotary embedding) and returns the
two streams apart; the feed-forward runs on [text; image] joined by the block. Token methods reduce
the image tokens the attention receives. KV downsampling is refused: the key/value projections see
text and image as one tensor, which the hooks cannot split (they swap the image input of `to_k` /
`to_v`). The pipeline passes t on the 0-1000 scale.

Default placement: the paper's DiT-XL/2 placement mapped by relative depth over all blocks in forward
order (AuraFlow: the MMDiT then the single blocks).
"""

from __future__ import annotations

from .spec import BackboneSpec, Stack

AURAFLOW = BackboneSpec(
    name="auraflow",
    classes=("AuraFlowTransformer2DModel",),
    stacks=(
        Stack("joint_transformer_blocks", {"attn": "attn", "ff": "ff"}, text="joint"),
        Stack("single_transformer_blocks", {"attn": "attn", "ff": "ff"}, text="prefix"),
    ),
    timestep_scale=1000.0,
    placement="relative",
    placement_text=(
        "the DiT-XL/2 placement mapped by relative depth over the MMDiT then the single blocks; image tokens only"
    ),
)

SANA = BackboneSpec(
    name="sana",
    classes=("SanaTransformer2DModel",),
    stacks=(Stack("transformer_blocks", {"attn": "attn1", "cross": "attn2"}),),
    placement="relative",
    placement_text="the DiT-XL/2 placement mapped by relative depth (blocks 1-8 of SANA-1.6B's 20)",
    refuses={
        "kv": "its self-attention is linear: there is no N x N attention map for KV downsampling to make cheaper"
    },
)

COGVIEW3PLUS = BackboneSpec(
    name="cogview3plus",
    classes=("CogView3PlusTransformer2DModel",),
    # The feed-forward runs on [text; image] while the attention takes the text separately, so the
    # feed-forward is not a role (`merge_mlp` reduces nothing there).
    stacks=(Stack("transformer_blocks", {"attn": "attn1"}, text="joint"),),
    placement="relative",
    placement_text="the DiT-XL/2 placement mapped by relative depth (blocks 2-6 and 8-12 of CogView3-Plus's 30); image tokens only",
    refuses={
        "kv": (
            "its attention processor joins text and image before the key/value projections, so the image "
            "keys and values cannot be downsampled apart from the text"
        )
    },
)

SPECS: tuple[BackboneSpec, ...] = (AURAFLOW, SANA, COGVIEW3PLUS)
