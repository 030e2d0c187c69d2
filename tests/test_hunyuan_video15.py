"""HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`): grid from the latent over (p_t, p, p), the
default placement over the dual-stream blocks, the conditions (vision, ByT5 and MLLM tokens) left
whole, the (B, conditions) mask passed unchanged and padded by the processor to the reduced video,
padded conditions kept masked, rotary rows that follow the merged tokens (against the processor run
on explicitly gathered rows), text-to-video and image-to-video, grids the windows do not fit, and
KV methods refused with the reason.
(tests/test_coverage.py runs every method at its defaults on the "hunyuan-video-1.5" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import every_method_changes_the_output, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import HunyuanVideo15Backbone, relative_placement
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import hunyuan_video15_inputs, make_tiny_hunyuan_video15

METHODS = ["tome", "bigain-tm", "sito"]  # the token methods; KV methods are refused
N = 2 * 6 * 10  # video tokens of the default inputs
CONDITIONS = 3 + 4 + 5  # vision, ByT5 and MLLM tokens


@pytest.fixture(scope="module")
def hy():
    return make_tiny_hunyuan_video15()


def test_grid_timesteps_and_default_placement():
    hy = make_tiny_hunyuan_video15(layers=4, patch_size_t=2)
    report = bigain.apply(hy, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(hy, hunyuan_video15_inputs(2, latent=(4, 6, 10), t=(700, 30)))
    assert fwd.grid == ops.Grid(2, 3, 5)  # (4 / p_t, 6 / p, 10 / p)
    assert fwd.timesteps.tolist() == [700.0, 30.0]  # as passed
    bigain.remove(hy)
    # the published 54 dual-stream blocks
    assert relative_placement(54) == (*range(2, 12), *range(14, 24))
    with pytest.raises(ValueError, match=r"HunyuanVideo 1\.5 transformer input must be a \(B, C, F, H, W\)"):
        HunyuanVideo15Backbone().read_forward(hy, (torch.zeros(1, 4, 6, 10),), {}, {})


def test_every_token_method_compresses_and_removal_is_exact(hy):
    for image in (True, False):  # image-to-video, text-to-video (zero vision tokens, masked out)
        kw = hunyuan_video15_inputs(2, image=image)
        every_method_changes_the_output(hy, kw, ((0, 1), (2, 3)), methods=METHODS, merge_mlp=True, atol=1e-5)


@pytest.mark.parametrize("method", ["todo", "bigain-td"])
def test_kv_methods_are_refused_with_the_reason(hy, method):
    with pytest.raises(ValueError, match="builds its attention mask inside the call"):
        bigain.apply(hy, method)
    assert not bigain.is_patched(hy)


def _spy(model, monkeypatch):
    """Record, for every attention call: what the attention gets before bigain's hooks, what the
    processor gets after them and what it returns, and the block's plan positions."""
    from diffusers.models.transformers.transformer_hunyuan_video15 import HunyuanVideo15AttnProcessor2_0

    calls, handles = [], []
    original = HunyuanVideo15AttnProcessor2_0.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        patch = getattr(model, "_bigain_patch", None)
        plans = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
        plan = getattr(plans[0], "plan", None) if plans else None
        calls[-1].update(
            hidden=hidden_states,
            text=encoder_hidden_states,
            mask=attention_mask,
            tables=image_rotary_emb,
            out=out,
            pos=None if plan is None else _plan_positions(plan),
        )
        return out

    def before(m, args, kwargs):
        calls.append(
            {
                "attn": m,
                "x": kwargs["hidden_states"],
                "text_in": kwargs["encoder_hidden_states"],
                "mask_in": kwargs["attention_mask"],
                "tables_in": kwargs["image_rotary_emb"],
            }
        )

    monkeypatch.setattr(HunyuanVideo15AttnProcessor2_0, "__call__", spy)
    for block in model.transformer_blocks:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
    return calls, handles, original


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("image", [True, False])
def test_conditions_are_untouched_the_mask_is_padded_and_rows_follow_the_tokens(hy, method, image, monkeypatch):
    kw = hunyuan_video15_inputs(2, image=image)
    bigain.apply(hy, method, blocks="all")
    calls, handles, processor = _spy(hy, monkeypatch)
    run_kw(hy, kw)
    for h in handles:
        h.remove()
    bigain.remove(hy)
    assert len(calls) == 4
    for c in calls:
        x, hidden, attn = c["x"], c["hidden"], c["attn"]
        assert x.shape[1] == N and hidden.shape[1] < N  # the video is reduced
        assert c["text"] is c["text_in"] and c["text"].shape[1] == CONDITIONS  # the conditions are whole
        # the (B, conditions) mask reaches the processor as the model passed it: it pads it itself
        assert c["mask"] is c["mask_in"] and c["mask"].shape == (2, CONDITIONS)
        assert c["tables"] is None  # bigain rotates the video queries and keys itself
        # A slow reference: the processor itself, per sample, given the rotary rows of the tokens present.
        cos, sin = c["tables_in"]
        for b in range(2):
            rows = (cos[c["pos"][b]], sin[c["pos"][b]])
            one = slice(b, b + 1)
            ref = processor(attn.processor, attn, hidden[one], c["text"][one], c["mask"][one], rows)
            torch.testing.assert_close(c["out"][0][one], ref[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c["out"][1][one], ref[1], rtol=1e-5, atol=1e-6)


def _disturb(block, rows):
    """A pre-hook adding noise to the conditions' rows `rows` at `block`'s input."""

    def hook(m, args, kwargs):
        args = list(args)
        enc = args[1].clone()
        enc[:, rows] += 3.0 * torch.randn(enc[:, rows].shape, generator=torch.Generator().manual_seed(0))
        args[1] = enc
        return tuple(args), kwargs

    return block.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("method", METHODS)
def test_padded_conditions_stay_masked(hy, method):
    # The forward orders the conditions [valid vision, ByT5, MLLM; padding]: row 0 ends with 3 padded
    # tokens, row 1 with 2. What the last two hold at a block's input must not reach the video.
    kw = hunyuan_video15_inputs(2)
    bigain.apply(hy, method, blocks="all")
    base = run_kw(hy, kw)
    handle = _disturb(hy.transformer_blocks[1], slice(CONDITIONS - 2, CONDITIONS))
    out = run_kw(hy, kw)
    handle.remove()
    torch.testing.assert_close(out, base, rtol=0, atol=1e-6)
    handle = _disturb(hy.transformer_blocks[1], slice(0, 1))  # a valid vision token does reach it
    out = run_kw(hy, kw)
    handle.remove()
    bigain.remove(hy)
    assert not torch.allclose(out, base, atol=1e-4)


def test_rotary_positions_follow_reordered_tokens(hy, monkeypatch):
    rows_follow_tokens(hy, hunyuan_video15_inputs(2), teeth=monkeypatch, merge_mlp=True)


def test_the_rotation_is_the_processors_arithmetic_bit_for_bit(hy):
    from diffusers.models.embeddings import apply_rotary_emb

    cos, sin = hy.rope(torch.zeros(1, 4, 2, 12, 20))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, N, 2, 16).to(dtype)
        ours = HunyuanVideo15Backbone().rope(x, cos, sin, hy.transformer_blocks[0].attn)
        assert torch.equal(ours, apply_rotary_emb(x, (cos, sin), sequence_dim=1))


@pytest.mark.parametrize("latent", [(3, 10, 14), (1, 6, 6), (2, 6, 10)])
def test_grids_the_windows_do_not_divide_work(hy, latent):
    every_method_changes_the_output(hy, hunyuan_video15_inputs(2, latent=latent), methods=METHODS)


def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid(hy):
    bigain.apply(hy, "tome", blocks="all", st=2)
    with pytest.raises(ValueError, match="option sx=2, sy=2, st=2 does not fit the 1x4x4 token grid"):
        run_kw(hy, hunyuan_video15_inputs(2, latent=(1, 8, 8)))
    bigain.remove(hy)
