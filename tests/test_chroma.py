"""Chroma (`ChromaTransformer2DModel`): the grid from `img_ids` (non-square), sigmas read on the
1000 scale, the default placement over double- then single-stream blocks, text tokens left whole
(also in the single-stream [text; image] sequence), the (B, 1, N, N) attention mask over
[text; image] cut with the image queries and keys so padded text stays masked, and rotary rows that
follow merged tokens and downsampled keys.
(tests/test_coverage.py runs every method at its defaults on the "chroma" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import ChromaBackbone, find_backbone
from conftest import run_kw, seen_forward
from tiny_models import chroma_inputs, make_tiny_chroma

TEXT, H, W = 5, 6, 10


def test_adapter_grid_timesteps_and_default_placement():
    ch = make_tiny_chroma(layers=2, single_layers=3)
    assert isinstance(find_backbone(ch), ChromaBackbone)
    report = bigain.apply(ch, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1", "single_transformer_blocks.0"]
    fwd = seen_forward(ch, chroma_inputs(2, h=4, w=12, sigma=(0.7, 0.25)))
    assert fwd.grid == ops.Grid.image(4, 12)  # rows and columns from img_ids, not a square
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])  # sigma * 1000
    bigain.remove(ch)


def test_every_method_compresses_both_block_kinds_and_removal_is_exact():
    double, single = (0, 1), (2, 3)
    every_method_changes_the_output(make_tiny_chroma(), chroma_inputs(2), (double, single))


def _attention_calls(ch, monkeypatch):
    """Record what every attention gets before bigain's hooks, what its processor gets after them,
    and the keys to_k makes."""
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    calls, handles = [], []
    original = FluxAttnProcessor.__call__

    def spy(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None
    ):
        calls[-1].update(hidden=hidden_states, text_in=encoder_hidden_states, mask=attention_mask)
        return original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def before(m, args, kwargs):
        calls.append(
            {"attn": m, "single": getattr(m, "add_k_proj", None) is None, "x": kwargs["hidden_states"]}
        )

    def keys(m, args, out):
        calls[-1]["keys"] = out

    monkeypatch.setattr(FluxAttnProcessor, "__call__", spy)
    for block in [*ch.transformer_blocks, *ch.single_transformer_blocks]:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attn.to_k.register_forward_hook(keys))
    return calls, handles


@pytest.mark.parametrize("method", METHODS)
def test_text_tokens_are_untouched_and_the_mask_follows_the_image(method, monkeypatch):
    ch = make_tiny_chroma()
    kw = chroma_inputs(2)
    bigain.apply(ch, method, blocks="all")
    calls, handles = _attention_calls(ch, monkeypatch)
    run_kw(ch, kw)
    for h in handles:
        h.remove()
    bigain.remove(ch)
    assert len(calls) == 4
    kv = method in ("todo", "bigain-td")
    for c in calls:
        if c["single"]:  # [text; image]: the text first and whole
            assert torch.equal(c["hidden"][:, :TEXT], c["x"][:, :TEXT])
            queries, n_keys = c["hidden"].shape[1], c["keys"].shape[1]
        else:
            assert c["text_in"].shape[1] == TEXT
            queries, n_keys = TEXT + c["hidden"].shape[1], TEXT + c["keys"].shape[1]
        if kv:
            assert queries == TEXT + H * W and n_keys < queries  # queries whole, image keys downsampled
        else:
            assert queries < TEXT + H * W and n_keys == queries
        mask = c["mask"]
        assert mask.shape == (2, 1, queries, n_keys)  # one entry per query and key
        # the text part is the model's: row 0 masks text token 4, row 1 tokens 3-4; image all kept
        full = kw["attention_mask"]
        expect = full[:, None, :queries, None] & full[:, None, None, :n_keys]
        assert torch.equal(mask, expect)


@pytest.mark.parametrize("method", METHODS)
def test_padded_text_stays_masked(method):
    # Row 0 pads its last text token, row 1 its last two: what they hold must not reach the image.
    ch = make_tiny_chroma()
    kw = chroma_inputs(2)
    bigain.apply(ch, method, blocks="all")
    base = run_kw(ch, kw)
    enc = kw["encoder_hidden_states"].clone()
    enc[0, -1] += 5.0
    enc[1, -2:] -= 5.0
    out = run_kw(ch, dict(kw, encoder_hidden_states=enc))
    torch.testing.assert_close(out, base, rtol=0, atol=1e-6)
    # The test has teeth: without the mask the padding does reach the image, and so does real text.
    unmasked = dict(kw, attention_mask=None)
    assert not torch.allclose(
        run_kw(ch, dict(unmasked, encoder_hidden_states=enc)), run_kw(ch, unmasked), atol=1e-4
    )
    enc[0, 0] += 5.0
    assert not torch.allclose(run_kw(ch, dict(kw, encoder_hidden_states=enc)), base, atol=1e-4)
    bigain.remove(ch)


def test_a_mask_bigain_cannot_cut_is_refused():
    ch = make_tiny_chroma()
    bigain.apply(ch, "tome", blocks="all")
    handle = ch.transformer_blocks[0].attn.register_forward_pre_hook(
        lambda m, a, k: (a, dict(k, attention_mask=k["attention_mask"][:, 0])), with_kwargs=True
    )
    n = TEXT + H * W
    with pytest.raises(
        ValueError, match=rf"attention mask \(2, {n}, {n}\) is not the \(B, 1, {n}, {n}\) mask"
    ):
        run_kw(ch, chroma_inputs(2))
    handle.remove()
    bigain.remove(ch)


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    rows_follow_tokens(make_tiny_chroma(), chroma_inputs(2), teeth=monkeypatch, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys(monkeypatch):
    rows_follow_keys(make_tiny_chroma(), chroma_inputs(2), teeth=monkeypatch)


def test_img_ids_that_do_not_match_the_tokens_are_refused():
    ch = make_tiny_chroma()
    bigain.apply(ch, "tome", blocks="all")
    kw = chroma_inputs(2)
    with pytest.raises(ValueError, match="img_ids describe a 6x4 grid but there are 60 tokens"):
        run_kw(ch, dict(kw, img_ids=kw["img_ids"][:54]))
    bigain.remove(ch)
