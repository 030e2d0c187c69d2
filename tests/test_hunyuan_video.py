"""HunyuanVideo (`HunyuanVideoTransformer3DModel`): grid from the latent over (p_t, p, p), the
default placement over dual- then single-stream blocks, the padded-text key mask cut with the video
keys, text tokens left whole (also in the single-stream [video; text] sequence), rotary rows that
follow merged tokens and downsampled keys, and grids the windows do not fit.
(tests/test_coverage.py runs every method at its defaults on the "hunyuan-video" tiny config.)"""

from __future__ import annotations

import pytest
import torch
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import HunyuanVideoBackbone, relative_placement
from conftest import run_kw, seen_forward
from tiny_models import hunyuan_video_inputs, make_tiny_hunyuan_video


def test_grid_timesteps_and_default_placement():
    hy = make_tiny_hunyuan_video(layers=2, single_layers=2, patch_size_t=2)
    report = bigain.apply(hy, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(hy, hunyuan_video_inputs(2, latent=(4, 6, 10), t=(700, 30)))
    assert fwd.grid == ops.Grid(2, 3, 5)  # (4 / p_t, 6 / p, 10 / p)
    assert fwd.timesteps.tolist() == [700.0, 30.0]  # as passed
    bigain.remove(hy)
    # the published 20 dual- + 40 single-stream blocks: dual 3-12 and 15-19, single 0-5
    chosen = relative_placement(60)
    assert chosen == (*range(3, 13), *range(15, 20), *range(20, 26))


def test_every_method_compresses_both_block_kinds_and_removal_is_exact():
    dual, single = (0, 1), (2, 3)
    every_method_changes_the_output(make_tiny_hunyuan_video(), hunyuan_video_inputs(2), (dual, single))


def _attention_calls(hy, monkeypatch):
    """Record what every attention processor call gets (after bigain's hooks) and its keys."""
    from diffusers.models.transformers.transformer_hunyuan_video import HunyuanVideoAttnProcessor2_0

    calls, handles = [], []
    original = HunyuanVideoAttnProcessor2_0.__call__

    def spy(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None
    ):
        calls.append(
            {
                "attn": attn,
                "single": attn.add_q_proj is None,
                "video": hidden_states.shape[1],
                "text_in": encoder_hidden_states,
                "mask": attention_mask.shape[-1],
            }
        )
        return original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)

    def keys(m, args, out):
        calls[-1]["keys"] = out

    monkeypatch.setattr(HunyuanVideoAttnProcessor2_0, "__call__", spy)
    for block in [*hy.transformer_blocks, *hy.single_transformer_blocks]:
        handles.append(block.attn.to_k.register_forward_hook(keys))
    return calls, handles


@pytest.mark.parametrize("method", METHODS)
def test_text_tokens_are_untouched_and_the_mask_follows_the_video_keys(method, monkeypatch):
    hy = make_tiny_hunyuan_video()
    kw = hunyuan_video_inputs(2)
    bigain.apply(hy, method, blocks="all")
    calls, handles = _attention_calls(hy, monkeypatch)
    run_kw(hy, kw)
    for h in handles:
        h.remove()
    bigain.remove(hy)
    assert len(calls) == 4
    for c in calls:
        text = c["text_in"]
        assert text.shape[1] == 5  # the text is never merged, pruned or downsampled
        k = c["keys"]
        n_keys = k.shape[1] + (0 if c["single"] else 5)  # dual-stream: the text's keys come from add_k_proj
        assert c["mask"] == n_keys  # one mask entry per key: [video keys; text]
        if method in ("todo", "bigain-td"):
            assert c["video"] == 48 and n_keys < 48 + 5  # queries whole, keys downsampled
        else:
            assert c["video"] < 48 and n_keys == c["video"] + 5
        if c["single"]:  # single-stream: to_k sees [video; text], the text last and whole
            with torch.no_grad():
                torch.testing.assert_close(k[:, -5:], c["attn"].to_k(text), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["tome", "todo"])
def test_padded_text_stays_masked(method):
    # Row 0 pads its last text token, row 1 its last two: what they hold must not reach the video.
    # Had the mask lost its padding entries (cut from the wrong end), it would.
    hy = make_tiny_hunyuan_video()
    kw = hunyuan_video_inputs(2)
    bigain.apply(hy, method, blocks="all")
    base = run_kw(hy, kw)
    enc = kw["encoder_hidden_states"].clone()
    enc[0, -1] += 5.0
    enc[1, -2:] -= 5.0
    out = run_kw(hy, dict(kw, encoder_hidden_states=enc))
    torch.testing.assert_close(out, base, rtol=0, atol=1e-6)
    enc[0, 0] += 5.0  # a real text token does reach it
    assert not torch.allclose(run_kw(hy, dict(kw, encoder_hidden_states=enc)), base, atol=1e-4)
    bigain.remove(hy)


def test_a_mask_bigain_cannot_cut_is_refused():
    hy = make_tiny_hunyuan_video()
    bigain.apply(hy, "tome", blocks="all")
    handle = hy.transformer_blocks[0].attn.register_forward_pre_hook(
        lambda m, a, k: (a, dict(k, attention_mask=k["attention_mask"].expand(-1, -1, 48 + 5, -1))),
        with_kwargs=True,
    )
    with pytest.raises(
        ValueError, match=r"attention mask \(2, 1, 53, 53\) is not the \(B, 1, 1, 53\) key mask"
    ):
        run_kw(hy, hunyuan_video_inputs(2))
    handle.remove()
    bigain.remove(hy)


def test_rotary_positions_follow_reordered_tokens(monkeypatch):
    rows_follow_tokens(make_tiny_hunyuan_video(), hunyuan_video_inputs(2), teeth=monkeypatch, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys():
    rows_follow_keys(make_tiny_hunyuan_video(), hunyuan_video_inputs(2))


def test_the_rotation_is_hunyuan_arithmetic_bit_for_bit():
    from diffusers.models.embeddings import apply_rotary_emb

    hy = make_tiny_hunyuan_video(layers=1, single_layers=0)
    cos, sin = hy.rope(torch.zeros(1, 4, 3, 8, 8))
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, 48, 2, 16).to(dtype)
        ours = HunyuanVideoBackbone().rope(x, cos, sin, hy.transformer_blocks[0].attn)
        assert torch.equal(ours, apply_rotary_emb(x, (cos, sin), sequence_dim=1))


@pytest.mark.parametrize("latent", [(3, 10, 14), (1, 6, 6), (2, 6, 10)])
def test_grids_the_windows_do_not_divide_work(latent):
    every_method_changes_the_output(make_tiny_hunyuan_video(), hunyuan_video_inputs(2, latent=latent))


@pytest.mark.parametrize(
    ("method", "options", "latent", "message"),
    [
        ("tome", {"st": 2}, (1, 8, 8), "option sx=2, sy=2, st=2 does not fit the 1x4x4 token grid"),
        (
            "bigain-td",
            {"downsample_factor": 4},
            (2, 4, 8),
            "option downsample_factor=4 does not fit the 2x2x4 token grid",
        ),
    ],
)
def test_windows_that_do_not_fit_fail_naming_the_option_and_the_grid(method, options, latent, message):
    hy = make_tiny_hunyuan_video()
    bigain.apply(hy, method, blocks="all", **options)
    with pytest.raises(ValueError, match=message):
        run_kw(hy, hunyuan_video_inputs(2, latent=latent))
    bigain.remove(hy)


def test_token_replace_image_to_video_is_refused():
    from diffusers import HunyuanVideoTransformer3DModel

    hy = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=16,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 6, 6),
        image_condition_type="token_replace",
    )
    with pytest.raises(ValueError, match="token_replace"):
        bigain.apply(hy, "tome")
