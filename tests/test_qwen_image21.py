"""Qwen-Image 2.1 (`QwenImage21Transformer2DModel`): the grid from the target of img_shapes (after
condition images), sigmas read on the 0-1000 scale, the prefix (prompt and condition images) left
whole, the prefix key/value cache steps, the padded-prompt key masks cut with the image keys, complex
rotary rows that follow merged tokens and downsampled keys (against a slow reference), the rotary
split made once per forward, and what is refused.
(tests/test_coverage.py runs every method at its defaults on the "qwen-image-2.1" tiny config.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_checks import METHODS, rope_split_once_per_forward, rows_follow_tokens
from test_wan import _PermutedKeys

import bigain
from bigain import ops
from bigain.backbones import QwenImage21Backbone, find_backbone
from conftest import run_kw, seen_forward
from tiny_models import make_tiny_qwen_image21, qwen_image21_inputs

TEXT, COND, H, W = 7, (2, 4), 6, 10
PREFIX = TEXT + 2 * 4  # the prompt's text tokens and the condition image's latent tokens


@pytest.fixture(scope="module")
def qwen():
    return make_tiny_qwen_image21(layers=2)


def _cache_steps(model, kw):
    """The pipeline's two cache modes: a prefill that stores the prefix keys/values, then a step that
    recomputes the target only."""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21KVCache

    cache = QwenImage21KVCache(len(model.transformer_blocks))
    first = run_kw(model, dict(kw, kv_cache=cache, kv_cache_mode="extract"))
    return first, run_kw(model, dict(kw, kv_cache=cache, kv_cache_mode="cached"))


def test_grid_sigmas_and_default_placement():
    model = make_tiny_qwen_image21(layers=4)
    assert isinstance(find_backbone(model), QwenImage21Backbone)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["transformer_blocks.1"]  # floor(28 j / 4) in {1-5, 7-11}
    fwd = seen_forward(model, qwen_image21_inputs(2, h=4, w=12, cond=COND, sigma=(0.7, 0.25)))
    assert fwd.grid == ops.Grid.image(4, 12)  # the target, not the 2x4 condition image before it
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])
    bigain.remove(model)
    # the default config's 32 blocks
    assert bigain.backbones.relative_placement(32) == (*range(2, 7), *range(8, 14))


def _attention_calls(model, monkeypatch):
    """What every attention gets before bigain's hooks, what its processor gets after them, and the
    keys to_k makes (its input as bigain's hook changed it is not visible to a torch hook)."""
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21AttnProcessor

    calls, handles = [], []
    original = QwenImage21AttnProcessor.__call__

    def spy(self, attn, hidden_states, **kwargs):
        calls[-1].update(hidden=hidden_states, key_valid=kwargs.get("key_valid"), mask=kwargs.get("attention_mask"))
        return original(self, attn, hidden_states, **kwargs)

    def before(m, args, kwargs):
        calls.append({"attn": m, "x": kwargs["hidden_states"]})

    def keys(m, args, out):
        calls[-1]["keys"] = out

    monkeypatch.setattr(QwenImage21AttnProcessor, "__call__", spy)
    for block in model.transformer_blocks:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attn.to_k.register_forward_hook(keys))
    return calls, handles


@pytest.mark.parametrize("method", METHODS)
def test_the_target_alone_is_compressed_and_removal_is_exact(qwen, method, monkeypatch):
    kw = qwen_image21_inputs(2, cond=COND, mask=True)
    base = run_kw(qwen, kw)
    opts = {"merge_mlp": True} if method in ("tome", "bigain-tm") else {}
    bigain.apply(qwen, method, blocks="all", **opts)
    calls, handles = _attention_calls(qwen, monkeypatch)
    out = run_kw(qwen, kw)
    for h in handles:
        h.remove()
    bigain.remove(qwen)
    assert out.shape == base.shape and torch.isfinite(out).all()
    # the prefix never attends to the target: its outputs are the model's, bit for bit
    assert torch.equal(out[:, :PREFIX], base[:, :PREFIX])
    assert not torch.equal(out[:, PREFIX:], base[:, PREFIX:])
    kv = method in ("todo", "bigain-td")
    for c in calls:
        n = H * W
        assert torch.equal(c["hidden"][:, :PREFIX], c["x"][:, :PREFIX])  # prompt and condition image whole
        with torch.no_grad():
            torch.testing.assert_close(c["keys"][:, :PREFIX], c["attn"].to_k(c["x"][:, :PREFIX]), rtol=0, atol=1e-6)
        queries, keys = c["hidden"].shape[1], c["keys"].shape[1]
        if kv:
            assert queries == PREFIX + n and keys == PREFIX + n // 4  # queries whole, a 3x5 key grid
        else:
            assert queries < PREFIX + n and keys == queries
        # the padded-prompt key mask is cut with the image keys: its prefix entries are the model's
        assert c["key_valid"].shape == (2, keys) and c["mask"] is None
        assert c["key_valid"][:, PREFIX:].all() and c["key_valid"][0, :PREFIX].sum() == PREFIX - 2
    assert torch.equal(run_kw(qwen, kw), base)


@pytest.mark.parametrize("method", METHODS)
def test_the_prefix_cache_steps_equal_the_full_forward(qwen, method):
    # the pipeline's default: the first step stores the prefix keys/values, the later ones see the
    # target tokens only (and a (B, 1, 1, keys) key mask); compression is the same in both modes
    kw = qwen_image21_inputs(2, cond=COND, mask=True)
    bigain.apply(qwen, method, blocks="all")
    full = run_kw(qwen, kw)
    first, cached = _cache_steps(qwen, kw)
    bigain.remove(qwen)
    assert torch.equal(first, full)
    torch.testing.assert_close(cached, full[:, PREFIX:], rtol=0, atol=1e-6)
    assert not torch.allclose(cached, run_kw(qwen, kw)[:, PREFIX:], atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_padded_prompt_tokens_stay_masked(qwen, method):
    # Row 0 pads its last two prompt tokens: what they hold must not reach the target image.
    kw = qwen_image21_inputs(2, cond=COND, mask=True)
    bigain.apply(qwen, method, blocks="all")
    base = run_kw(qwen, kw)[:, PREFIX:]
    enc = kw["encoder_hidden_states"].clone()
    enc[0, -2:] += 5.0
    torch.testing.assert_close(run_kw(qwen, dict(kw, encoder_hidden_states=enc))[:, PREFIX:], base, rtol=0, atol=1e-6)
    _, cached = _cache_steps(qwen, dict(kw, encoder_hidden_states=enc))
    torch.testing.assert_close(cached, base, rtol=0, atol=1e-6)
    # The test has teeth: unmasked, the padding reaches the image.
    unmasked = dict(kw, encoder_hidden_states_mask=None)
    changed = run_kw(qwen, dict(unmasked, encoder_hidden_states=enc))[:, PREFIX:]
    assert not torch.allclose(changed, run_kw(qwen, unmasked)[:, PREFIX:], atol=1e-4)
    bigain.remove(qwen)


def test_rotary_positions_follow_reordered_tokens(qwen, monkeypatch):
    rows_follow_tokens(qwen, qwen_image21_inputs(2, cond=COND), merge_mlp=True)
    rows_follow_tokens(qwen, qwen_image21_inputs(2, h=4, w=12), teeth=monkeypatch, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys(qwen, monkeypatch):
    kw = qwen_image21_inputs(2, cond=COND)
    base = run_kw(qwen, kw)
    bigain.apply(qwen, _PermutedKeys(blocks="all"))
    permuted = run_kw(qwen, kw)
    _, cached = _cache_steps(qwen, kw)
    bigain.remove(qwen)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cached, base[:, PREFIX:], rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(QwenImage21Backbone, "rope_kwarg", None)
    bigain.apply(qwen, _PermutedKeys(blocks="all"))
    wrong = run_kw(qwen, kw)
    bigain.remove(qwen)
    assert (wrong - base).abs().max() > 1e-3


def test_todo_attention_against_a_slow_reference(qwen):
    """ToDo's attention in a block, computed here from the attention's weights: every query (rotated
    with its own row) attends over [prefix; the target's nearest-exact 3x5 samples], each key rotated
    with the row of the token it samples."""
    from diffusers.models.transformers.transformer_qwenimage21 import apply_rotary_emb_qwen

    kw = qwen_image21_inputs(2, cond=COND, h=H, w=W)
    attn = qwen.transformer_blocks[1].attn
    seen = {}
    h1 = attn.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True, prepend=True)
    h2 = attn.register_forward_hook(lambda m, a, o: seen.update(out=o))
    bigain.apply(qwen, "todo", blocks=(1,))
    run_kw(qwen, kw)
    bigain.remove(qwen)
    h1.remove()
    h2.remove()
    x, table = seen["hidden_states"], seen["rotary_emb"]
    rows = torch.tensor([r * W + c for r in (1, 3, 5) for c in (1, 3, 5, 7, 9)])  # nearest-exact, factor 2
    kin = torch.cat([x[:, :PREFIX], x[:, PREFIX:][:, rows]], dim=1)
    k_table = torch.cat([table[:PREFIX], table[PREFIX:][rows]])
    with torch.no_grad():
        heads = lambda t: t.unflatten(-1, (2, 16))  # noqa: E731
        q = apply_rotary_emb_qwen(attn.norm_q(heads(attn.to_q(x))), table, use_real=False)
        k = apply_rotary_emb_qwen(attn.norm_k(heads(attn.to_k(kin))), k_table, use_real=False)
        v = heads(attn.to_v(kin))
        o = F.scaled_dot_product_attention(*(t[:, PREFIX:].transpose(1, 2) if t is q else t.transpose(1, 2) for t in (q, k, v)))
        ref = attn.to_out[0](o.transpose(1, 2).flatten(2))
    torch.testing.assert_close(seen["out"][:, PREFIX:], ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ref, attn.to_out[0](  # teeth: the keys' own rows, not the full table's first 15
        F.scaled_dot_product_attention(
            q[:, PREFIX:].transpose(1, 2),
            apply_rotary_emb_qwen(attn.norm_k(heads(attn.to_k(kin))), table[: PREFIX + 15], use_real=False).transpose(1, 2),
            v.transpose(1, 2),
        ).transpose(1, 2).flatten(2)
    ), atol=1e-4)


def test_the_rotary_split_is_made_once_per_forward_with_the_same_output(qwen, monkeypatch):
    rope_split_once_per_forward(qwen, qwen_image21_inputs(2, cond=COND), monkeypatch)


def test_the_rotation_is_the_processors_arithmetic_bit_for_bit(qwen):
    from diffusers.models.transformers.transformer_qwenimage21 import apply_rotary_emb_qwen

    kw = qwen_image21_inputs(2, cond=COND)
    seen = {}
    h = qwen.transformer_blocks[0].attn.register_forward_pre_hook(
        lambda m, a, k: seen.update(table=k["rotary_emb"]), with_kwargs=True
    )
    run_kw(qwen, kw)
    h.remove()
    table = seen["table"]
    backbone, attn = QwenImage21Backbone(), qwen.transformer_blocks[0].attn
    cos, sin = backbone.rope_rows(table)
    g = torch.Generator().manual_seed(0)
    n = table.shape[0]
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(2, n, 2, 16, generator=g).to(dtype)
        ref = apply_rotary_emb_qwen(x, table, use_real=False)
        assert torch.equal(backbone.rope(x, cos, sin, attn), ref)
        # per-sample rows (merged tokens): the rows of each sample's tokens, in its order
        pos = torch.stack([torch.randperm(n, generator=g) for _ in range(2)])
        xs = torch.stack([x[b, pos[b]] for b in range(2)])
        assert torch.equal(backbone.rope(xs, cos[pos], sin[pos], attn), torch.stack([ref[b, pos[b]] for b in range(2)]))


def test_calls_bigain_cannot_serve_are_refused_with_a_message(qwen):
    from diffusers.models.transformers.transformer_qwenimage21 import QwenImage21FlexAttnProcessor

    kw = qwen_image21_inputs(2)
    bigain.apply(qwen, "tome", blocks="all")
    with pytest.raises(ValueError, match="img_shapes differ between samples"):
        run_kw(qwen, dict(kw, img_shapes=[[(1, H, W)], [(1, W, H)]]))
    with pytest.raises(ValueError, match="2 frames"):
        bigain_forward = qwen._bigain_patch.backbone.read_forward
        bigain_forward(qwen, (), dict(kw, img_shapes=[[(2, H, W)]] * 2), {})
    bigain.remove(qwen)
    # the flex processor's prefill block mask is made for the model's own sequence
    processors = qwen.attn_processors
    qwen.set_attn_processor(QwenImage21FlexAttnProcessor())
    try:
        for method in ("tome", "todo"):
            bigain.apply(qwen, method, blocks="all")
            with pytest.raises(ValueError, match="attention_mask is a BlockMask, not a tensor bigain can cut"):
                run_kw(qwen, kw)
            bigain.remove(qwen)
    finally:
        qwen.set_attn_processor(processors)
