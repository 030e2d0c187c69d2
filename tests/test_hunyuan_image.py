"""HunyuanImage 2.1 (`HunyuanImageTransformer2DModel`, the text-to-image model and the refiner): the
grid from a (B, C, H, W) latent over (p_h, p_w) or the refiner's (B, C, F, H, W) over (p_t, p_h,
p_w), the default placement over dual- then single-stream blocks, the text (MLLM and ByT5 tokens)
left whole, also in the single-stream [image; text] sequence, the padded-text key mask cut with the
image keys, rotary rows that follow merged tokens (against the processor run on explicitly gathered
rows) and downsampled keys, and grids the windows do not fit.
(tests/test_coverage.py runs every method at its defaults on the "hunyuan-image" and
"hunyuan-image-refiner" tiny configs.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import HunyuanImageBackbone
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import hunyuan_image_inputs, make_tiny_hunyuan_image

N = 6 * 10  # image tokens of the default inputs
TEXT = 4 + 5  # ByT5 and MLLM tokens


@pytest.fixture(scope="module")
def hi():
    return make_tiny_hunyuan_image()


@pytest.fixture(scope="module")
def refiner():
    return make_tiny_hunyuan_image(patch_size=(1, 2, 2), byt5=False)


def test_grid_timesteps_and_default_placement(hi, refiner):
    report = bigain.apply(hi, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(hi, hunyuan_image_inputs(2, latent=(6, 10), t=(700, 30)))
    assert fwd.grid == ops.Grid.image(3, 5) and fwd.grid.is_image  # (6 / p_h, 10 / p_w)
    assert fwd.timesteps.tolist() == [700.0, 30.0]  # as passed
    bigain.remove(hi)
    bigain.apply(refiner, "tome")
    fwd = seen_forward(refiner, hunyuan_image_inputs(2, latent=(2, 12, 20), byt5=False))
    assert fwd.grid == ops.Grid(2, 6, 10)  # (F / p_t, H / p_h, W / p_w)
    bigain.remove(refiner)
    with pytest.raises(ValueError, match=r"patch_size \[2, 2\] takes a \(B, C, H, W\) latent"):
        HunyuanImageBackbone().read_forward(hi, (torch.zeros(1, 4, 1, 6, 10),), {}, {})
    with pytest.raises(ValueError, match=r"patch_size \[1, 2, 2\] takes a \(B, C, F, H, W\) latent"):
        HunyuanImageBackbone().read_forward(refiner, (torch.zeros(1, 4, 6, 10),), {}, {})


def test_every_method_compresses_both_block_kinds_and_removal_is_exact(hi):
    dual, single = (0, 1), (2, 3)
    every_method_changes_the_output(hi, hunyuan_image_inputs(2), (dual, single), atol=1e-5)


def _spy(model, monkeypatch):
    """Record, for every attention call: what the processor gets after bigain's hooks and returns,
    the keys to_k makes, the rotary tables before the hooks, and the block's plan positions."""
    from diffusers.models.transformers.transformer_hunyuanimage import HunyuanImageAttnProcessor

    calls, handles = [], []
    original = HunyuanImageAttnProcessor.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        patch = getattr(model, "_bigain_patch", None)
        plans = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
        plan = getattr(plans[0], "plan", None) if plans else None
        calls[-1].update(
            single=attn.add_q_proj is None,
            hidden=hidden_states,
            text=encoder_hidden_states,
            mask=attention_mask,
            tables=image_rotary_emb,
            out=out,
            pos=None if plan is None else _plan_positions(plan),
        )
        return out

    def before(m, args, kwargs):
        calls.append({"attn": m, "x": kwargs["hidden_states"], "tables_in": kwargs["image_rotary_emb"]})

    def keys(m, args, out):
        calls[-1]["keys"] = out

    monkeypatch.setattr(HunyuanImageAttnProcessor, "__call__", spy)
    for block in [*model.transformer_blocks, *model.single_transformer_blocks]:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attn.to_k.register_forward_hook(keys))
    return calls, handles, original


@pytest.mark.parametrize("method", METHODS)
def test_text_is_untouched_the_mask_follows_the_keys_and_rows_follow_the_tokens(hi, method, monkeypatch):
    kw = hunyuan_image_inputs(2)
    bigain.apply(hi, method, blocks="all")
    calls, handles, processor = _spy(hi, monkeypatch)
    run_kw(hi, kw)
    for h in handles:
        h.remove()
    bigain.remove(hi)
    assert len(calls) == 4
    kv = method in ("todo", "bigain-td")
    for c in calls:
        attn, text, k = c["attn"], c["text"], c["keys"]
        assert text.shape[1] == TEXT  # the text is never merged, pruned or downsampled
        n_keys = k.shape[1] + (0 if c["single"] else TEXT)  # dual-stream: the text's keys come from add_k_proj
        assert c["mask"].shape == (2, 1, 1, n_keys)  # one mask entry per key: [image keys; text]
        # [image; valid ByT5 and MLLM tokens; padding]: row 0 keeps 2 + 4 text tokens, row 1 4 + 3
        valid = torch.tensor([[True] * 6 + [False] * 3, [True] * 7 + [False] * 2])
        assert torch.equal(c["mask"][:, 0, 0, -TEXT:], valid) and c["mask"][..., :-TEXT].all()
        assert c["tables"] is None  # bigain rotates the image queries and keys itself
        if kv:
            assert c["hidden"].shape[1] == N and n_keys < N + TEXT  # queries whole, keys downsampled
        else:
            assert c["hidden"].shape[1] < N and n_keys == c["hidden"].shape[1] + TEXT
        if c["single"]:  # single-stream: to_k sees [image; text], the text last and whole
            with torch.no_grad():
                torch.testing.assert_close(k[:, -TEXT:], attn.to_k(text), rtol=0, atol=1e-6)
        if kv:
            continue
        # A slow reference: the processor itself, per sample, given the rotary rows of the tokens present.
        cos, sin = c["tables_in"]
        for b in range(2):
            rows = (cos[c["pos"][b]], sin[c["pos"][b]])
            one = slice(b, b + 1)
            ref = processor(attn.processor, attn, c["hidden"][one], text[one], c["mask"][one], rows)
            torch.testing.assert_close(c["out"][0][one], ref[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(c["out"][1][one], ref[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["tome", "todo"])
def test_padded_text_stays_masked(hi, method):
    # Row 0 pads its last MLLM token and its last two ByT5 tokens, row 1 its last two MLLM tokens:
    # what they hold must not reach the image. Had the mask lost its padding entries (cut from the
    # wrong end), it would.
    kw = hunyuan_image_inputs(2)
    bigain.apply(hi, method, blocks="all")
    base = run_kw(hi, kw)
    enc, enc2 = kw["encoder_hidden_states"].clone(), kw["encoder_hidden_states_2"].clone()
    enc[0, -1] += 5.0
    enc[1, -2:] -= 5.0
    enc2[0, -2:] += 5.0
    out = run_kw(hi, dict(kw, encoder_hidden_states=enc, encoder_hidden_states_2=enc2))
    torch.testing.assert_close(out, base, rtol=0, atol=1e-6)
    enc[0, 0] += 5.0  # a real text token does reach it
    assert not torch.allclose(run_kw(hi, dict(kw, encoder_hidden_states=enc)), base, atol=1e-4)
    bigain.remove(hi)


def test_rotary_positions_follow_reordered_tokens(hi, monkeypatch):
    rows_follow_tokens(hi, hunyuan_image_inputs(2), teeth=monkeypatch, merge_mlp=True)


@pytest.mark.parametrize("which", ["image", "refiner"])
def test_rotary_positions_follow_downsampled_keys(hi, refiner, which):
    model = hi if which == "image" else refiner
    kw = hunyuan_image_inputs(2) if which == "image" else hunyuan_image_inputs(2, latent=(2, 12, 20), byt5=False)
    rows_follow_keys(model, kw)


@pytest.mark.parametrize("latent", [(10, 14), (6, 6), (2, 12, 20), (1, 10, 14)])
def test_grids_the_windows_do_not_divide_work(hi, refiner, latent):
    model, byt5 = (hi, True) if len(latent) == 2 else (refiner, False)
    every_method_changes_the_output(model, hunyuan_image_inputs(2, latent=latent, byt5=byt5))


def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid(hi):
    bigain.apply(hi, "bigain-td", blocks="all", downsample_factor=4)
    with pytest.raises(ValueError, match="option downsample_factor=4 does not fit the 2x4 token grid"):
        run_kw(hi, hunyuan_image_inputs(2, latent=(4, 8)))
    bigain.remove(hi)
