"""Mochi (`MochiTransformer3DModel`): the grid from the (B, C, F, H, W) latent over the spatial patch,
the reversed timestep read as 1000 - t, every block (the last, `context_pre_only`, too) compressed
on its video stream only, the text (another width) left whole and its padding still masked, rotary
rows (per head) that follow merged tokens and downsampled keys, Mochi's rotation bit for bit, and
grids the windows do not divide.
(tests/test_coverage.py runs every method at its defaults on the "mochi" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import relative_placement
from bigain.backbones.mochi import MochiBackbone
from conftest import run_kw, seen_forward
from tiny_models import make_tiny_mochi, mochi_inputs

METHODS = ["tome", "bigain-tm", "todo", "bigain-td", "sito"]
VIDEO = 3 * 6 * 10  # tokens of the default inputs


def test_grid_reversed_timesteps_and_default_placement():
    mochi = make_tiny_mochi(layers=3)
    report = bigain.apply(mochi, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 3) in {1-5, 7-11}
    fwd = seen_forward(mochi, mochi_inputs(2, latent=(2, 8, 14), t=(300.0, 970.0)))
    assert fwd.grid == ops.Grid(2, 4, 7)  # frames as they are, (8 / p, 14 / p)
    assert fwd.timesteps.tolist() == [700.0, 30.0]  # 1000 - t: the noise level on the 0-1000 scale
    bigain.remove(mochi)
    # Mochi 1's 48 blocks: 2-10 and 12-20
    assert relative_placement(48) == (*range(2, 11), *range(12, 21))


def test_every_method_compresses_every_block_and_removal_is_exact():
    mochi = make_tiny_mochi()
    kw = mochi_inputs(2)
    base = run_kw(mochi, kw)
    for method in METHODS:
        for blocks in ((0,), (2,)):  # a full joint block, the last (`context_pre_only`) block
            bigain.apply(mochi, method, blocks=blocks)
            out = run_kw(mochi, kw)
            bigain.remove(mochi)
            assert out.shape == base.shape and torch.isfinite(out).all()
            assert not torch.equal(out, base), (method, blocks)
    assert torch.equal(run_kw(mochi, kw), base)


@pytest.mark.parametrize("method", METHODS)
def test_text_tokens_are_untouched(method, monkeypatch):
    from diffusers.models.attention_processor import MochiAttnProcessor2_0

    mochi = make_tiny_mochi()
    kw = mochi_inputs(2)
    calls = []
    original = MochiAttnProcessor2_0.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb=None):
        calls.append({"video": hidden_states.shape[1], "text": encoder_hidden_states.shape, "mask": attention_mask})
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        calls[-1]["text_out"] = out[1].shape
        return out

    keys = []
    bigain.apply(mochi, method, blocks="all")
    monkeypatch.setattr(MochiAttnProcessor2_0, "__call__", spy)
    handles = [
        b.attn1.to_k.register_forward_hook(lambda m, a, out: keys.append(out.shape[1])) for b in mochi.transformer_blocks
    ]
    run_kw(mochi, kw)
    for h in handles:
        h.remove()
    bigain.remove(mochi)
    assert len(calls) == 3
    for c, n_keys in zip(calls, keys):
        assert c["text"] == (2, 5, 24) and c["text_out"][1] == 5  # the text stream, whole
        assert torch.equal(c["mask"], kw["encoder_attention_mask"])  # the text mask, as passed
        if method in ("todo", "bigain-td"):
            assert c["video"] == VIDEO and n_keys < VIDEO  # queries whole, video keys downsampled
        else:
            assert c["video"] < VIDEO and n_keys == c["video"]


@pytest.mark.parametrize("method", ["tome", "todo"])
def test_padded_text_stays_masked(method):
    # Row 0 pads its last text token, row 1 its last two: what they hold must not reach the video.
    mochi = make_tiny_mochi()
    kw = mochi_inputs(2)
    bigain.apply(mochi, method, blocks="all")
    base = run_kw(mochi, kw)
    enc = kw["encoder_hidden_states"].clone()
    enc[0, -1] += 5.0
    enc[1, -2:] -= 5.0
    torch.testing.assert_close(run_kw(mochi, dict(kw, encoder_hidden_states=enc)), base, rtol=0, atol=1e-6)
    enc[0, 0] += 5.0  # a real text token does reach it
    assert not torch.allclose(run_kw(mochi, dict(kw, encoder_hidden_states=enc)), base, atol=1e-4)
    bigain.remove(mochi)


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    mochi = make_tiny_mochi()
    kw = mochi_inputs(2)
    base = run_kw(mochi, kw)
    bigain.apply(mochi, _PermuteConfig(blocks="all", merge_mlp=True))
    permuted = run_kw(mochi, kw)
    bigain.remove(mochi)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    # The test has teeth: left in the call, the tables rotate the reordered tokens with the rows of
    # the model's order, and the output changes.
    monkeypatch.setattr(MochiBackbone, "rope_kwarg", None)
    bigain.apply(mochi, _PermuteConfig(blocks="all"))
    wrong = run_kw(mochi, kw)
    bigain.remove(mochi)
    assert (wrong - base).abs().max() > 1e-3


def test_rotary_positions_follow_downsampled_keys():
    mochi = make_tiny_mochi()
    kw = mochi_inputs(2)
    base = run_kw(mochi, kw)
    bigain.apply(mochi, _PermutedKeys(blocks="all"))
    permuted = run_kw(mochi, kw)
    bigain.remove(mochi)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_attention_is_the_processor_on_the_gathered_tokens(dtype, monkeypatch):
    """The slow reference: the processor itself, called on the kept tokens with the rows of their
    positions gathered from the model's tables, gives bit for bit what the patched attention gives
    (bigain rotating the q/k norm outputs with Mochi's arithmetic, per head)."""
    mochi = make_tiny_mochi(layers=1).to(dtype)
    kw = mochi_inputs(2)
    kw = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
    attn = mochi.transformer_blocks[0].attn1
    seen = {}

    def before(m, args, kwargs):
        seen.setdefault("call", (args, dict(kwargs)))

    bigain.apply(mochi, "sito", blocks="all")  # prunes: the attention sees the kept tokens only
    patch = mochi._bigain_patch.patches[0]
    plans = []
    h = attn.register_forward_pre_hook(before, with_kwargs=True)
    out = {}
    h2 = attn.register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    orig_plan = patch._make_plan

    def keep_plan(x):
        orig_plan(x)
        plans.append(patch.plan)

    monkeypatch.setattr(patch, "_make_plan", keep_plan)
    run_kw(mochi, kw)
    h.remove()
    h2.remove()
    bigain.remove(mochi)
    args, kwargs = seen["call"]
    # the call as the model made it: every video token and the full tables
    x = args[0] if args else kwargs["hidden_states"]
    cos, sin = kwargs["image_rotary_emb"]
    keep = plans[0].keep_idx  # (B, N') original positions of the kept tokens
    assert keep.shape[1] < x.shape[1]
    with torch.no_grad():
        ref = attn.processor(
            attn,
            torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1])),
            encoder_hidden_states=kwargs["encoder_hidden_states"],
            attention_mask=kwargs["attention_mask"],
            image_rotary_emb=(cos[keep], sin[keep]),  # (B, N', heads, D / 2): each sample's rows
        )
    assert torch.equal(plans[0].reduce(out["y"][0]), ref[0])  # the expanded output read at the kept tokens
    assert torch.equal(out["y"][1], ref[1])  # and the text stream


@pytest.mark.parametrize("latent", [(3, 10, 14), (1, 6, 6), (2, 6, 10)])
def test_grids_the_windows_do_not_divide_work(latent):
    mochi = make_tiny_mochi()
    kw = mochi_inputs(2, latent=latent)
    base = run_kw(mochi, kw)
    for method in METHODS:
        bigain.apply(mochi, method, blocks="all")
        out = run_kw(mochi, kw)
        bigain.remove(mochi)
        assert out.shape == base.shape and torch.isfinite(out).all()
        assert not torch.equal(out, base), method
    assert torch.equal(run_kw(mochi, kw), base)


def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid():
    mochi = make_tiny_mochi()
    bigain.apply(mochi, "tome", blocks="all", st=2)
    with pytest.raises(ValueError, match="option sx=2, sy=2, st=2 does not fit the 1x4x4 token grid"):
        run_kw(mochi, mochi_inputs(2, latent=(1, 8, 8)))
    bigain.remove(mochi)
