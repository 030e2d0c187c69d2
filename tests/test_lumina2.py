"""Lumina-Image 2.0 (`Lumina2Transformer2DModel`): the grid from the latent (non-square), the reversed
timestep read on the 1000 scale, the default placement over the noise-refiner then the main blocks,
caption tokens left whole, and, in a batch whose captions differ in length (each row's image at
another offset of the joint sequence): rows reordered so the image sits at one offset, the padding
kept masked, every row of a mixed batch what it is alone, rotary rows that follow merged tokens and
downsampled keys, and a slow per-sample reference of a compressed block.
(tests/test_coverage.py runs every method at its defaults on the "lumina2" and
"lumina2-mixed-captions" tiny configs.)"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import find_backbone, lumina2
from bigain.backbones.lumina2 import Lumina2Backbone, joint_order
from bigain.bench.dispatch import count_traffic
from bigain.methods import ToDoConfig
from bigain.patching.hooks import _plan_positions
from conftest import run_kw, seen_forward
from tiny_models import lumina2_inputs, make_tiny_lumina2

H, W, N = 6, 10, 60
MIXED = (6, 3)  # caption lengths of the two rows: row 1's image starts 3 tokens earlier
REFINER, MAIN = (0, 1), (2, 3, 4)  # block indices on the tiny model (2 noise-refiner, 3 main blocks)


def test_adapter_grid_timesteps_and_default_placement():
    model = make_tiny_lumina2()
    assert isinstance(find_backbone(model), Lumina2Backbone)
    report = bigain.apply(model, "tome")
    assert [b.name for b in report.blocks] == ["noise_refiner.1", "layers.0"]
    fwd = seen_forward(model, lumina2_inputs(2, h=4, w=12, t=(0.3, 0.8)))
    assert fwd.grid == ops.Grid.image(4, 12)
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 200.0])  # 1000 * (1 - t): Lumina's 0 is noise
    bigain.remove(model)
    # Lumina-Image 2.0's 2 + 26 blocks take exactly the paper's DiT-XL/2 blocks 1-5 and 7-11
    full = make_tiny_lumina2(layers=26)
    names = [b.name for b in bigain.apply(full, "todo").blocks]
    assert names == ["noise_refiner.1", *(f"layers.{i}" for i in (0, 1, 2, 3, 5, 6, 7, 8, 9))]
    bigain.remove(full)


@pytest.mark.parametrize("lengths", [(5, 5), MIXED], ids=["equal", "mixed"])
def test_every_method_compresses_both_block_kinds_and_removal_is_exact(lengths):
    every_method_changes_the_output(make_tiny_lumina2(), lumina2_inputs(2, lengths=lengths), (REFINER, MAIN))


def test_joint_order_puts_each_image_at_one_offset_without_reading_the_mask():
    lengths, s = torch.tensor([6, 3, 4]), 6 + 5
    mask = torch.arange(s)[None] < (lengths[:, None] + 5)  # [caption; 5 image tokens; padding]
    order, inverse = joint_order(mask, 5)
    assert order.tolist() == [
        list(range(11)),
        [0, 1, 2, 8, 9, 10, 3, 4, 5, 6, 7],  # caption, padding, image
        [0, 1, 2, 3, 9, 10, 4, 5, 6, 7, 8],
    ]
    x = torch.randn(3, s, 2)
    moved = x.gather(1, order[..., None].expand(-1, -1, 2))
    assert torch.equal(moved.gather(1, inverse[..., None].expand(-1, -1, 2)), x)
    assert mask.gather(1, order)[:, -5:].all()  # the image last and kept in every row
    meta = mask.to("meta")
    assert count_traffic(lambda: joint_order(meta, 5)).transfers == 0


def _calls(model, monkeypatch):
    """Record what each attention gets before bigain's hooks, what its processor gets after them, and
    the keys to_k makes."""
    from diffusers.models.transformers.transformer_lumina2 import Lumina2AttnProcessor2_0

    calls, handles = [], []
    original = Lumina2AttnProcessor2_0.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None, **kw):
        if attn in sites:  # not the context refiner's
            calls[-1].update(hidden=hidden_states, context=encoder_hidden_states, mask=attention_mask)
        return original(self, attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, **kw)

    def before(m, args, kwargs):
        calls.append({"x": kwargs["hidden_states"], "main": m in main})

    def keys(m, args, out):
        calls[-1]["keys"] = out

    main = {b.attn for b in model.layers}
    sites = main | {b.attn for b in model.noise_refiner}
    monkeypatch.setattr(Lumina2AttnProcessor2_0, "__call__", spy)
    for block in [*model.noise_refiner, *model.layers]:
        handles.append(block.attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attn.to_k.register_forward_hook(keys))
    return calls, handles


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("lengths", [(5, 5), MIXED], ids=["equal", "mixed"])
def test_caption_tokens_are_untouched_and_the_mask_follows_the_image(method, lengths, monkeypatch):
    model = make_tiny_lumina2()
    bigain.apply(model, method, blocks="all")
    calls, handles = _calls(model, monkeypatch)
    run_kw(model, lumina2_inputs(2, lengths=lengths))
    for h in handles:
        h.remove()
    bigain.remove(model)
    assert len(calls) == 5
    kv = method in ("todo", "bigain-td")
    text = max(lengths)
    for c in calls:
        t = text if c["main"] else 0
        queries, n_keys = c["hidden"].shape[1], c["keys"].shape[1]
        assert c["x"].shape[1] == t + N
        # the caption (and the joint padding) first and whole: the attention's input rows, reordered
        # to [caption; padding; image] in a mixed batch
        assert torch.equal(c["hidden"][:, :t], c["x"][:, :t])
        if kv:
            assert queries == t + N and n_keys < queries
            if not c["main"]:  # the refiner's self-attention: its downsampled keys as the context
                assert c["context"].shape[1] == n_keys
        else:
            assert queries < t + N and n_keys == queries and c["context"] is c["hidden"]
        if not c["main"] or lengths[0] == lengths[1]:
            assert c["mask"] is None  # the model passes none: every image at one offset
            continue
        # row i: its caption, the padding (masked), then the image (kept), cut to the keys present
        assert c["mask"].shape == (2, 1, 1, n_keys)
        for i, length in enumerate(lengths):
            expect = torch.ones(n_keys, dtype=torch.bool)
            expect[length:text] = False
            assert torch.equal(c["mask"][i, 0, 0], expect)


@pytest.mark.parametrize("method", METHODS)
def test_each_row_of_a_mixed_batch_is_what_it_is_alone(method, monkeypatch):
    # Row 1's 3-token caption puts its image 3 tokens earlier than row 0's: with the reordering, the
    # joint padding stays masked and each row gets exactly its own compression (random draws are
    # keyed by the row's timestep), so the batch gives each row's output alone (no padding, no mask).
    model = make_tiny_lumina2()
    kw = lumina2_inputs(2, lengths=MIXED)
    alone = [{k: v[i : i + 1] if isinstance(v, torch.Tensor) else v for k, v in kw.items()} for i in range(2)]
    bigain.apply(model, method, blocks="all")
    out = run_kw(model, kw)
    for i in range(2):
        torch.testing.assert_close(out[i : i + 1], run_kw(model, alone[i]), rtol=1e-5, atol=1e-5)
    bigain.remove(model)
    # The test has teeth: left in the model's order, row 1's "image" is read 3 tokens late (its last
    # 3 padding tokens in, its first 3 image tokens out), and row 1 is not what it is alone.
    identity = lambda mask, n: (torch.arange(mask.shape[1]).expand(mask.shape),) * 2  # noqa: E731
    monkeypatch.setattr(lumina2, "joint_order", identity)
    bigain.apply(model, method, blocks="all")
    wrong = run_kw(model, kw)
    assert not torch.allclose(wrong[1:], run_kw(model, alone[1]), atol=1e-3)
    torch.testing.assert_close(wrong[:1], run_kw(model, alone[0]), rtol=1e-5, atol=1e-5)  # row 0: the longest
    bigain.remove(model)


@pytest.mark.parametrize("lengths", [(5, 5), MIXED], ids=["equal", "mixed"])
def test_rotary_positions_follow_reordered_tokens(lengths, monkeypatch):
    kw = lumina2_inputs(2, lengths=lengths)
    rows_follow_tokens(make_tiny_lumina2(), kw, teeth=monkeypatch, merge_mlp=True)


@pytest.mark.parametrize("lengths", [(5, 5), MIXED], ids=["equal", "mixed"])
def test_rotary_positions_follow_downsampled_keys(lengths, monkeypatch):
    rows_follow_keys(make_tiny_lumina2(), lumina2_inputs(2, lengths=lengths), teeth=monkeypatch)


# -- a slow reference: one block, one row alone, the compressed attention written out -----------------
def _attention(attn, q_in, kv_in, q_rows, k_rows):
    """Lumina2's attention with queries and keys/values from different tokens, each with its rows."""
    from diffusers.models.embeddings import apply_rotary_emb

    d = attn.to_q.out_features // attn.heads
    q = attn.norm_q(attn.to_q(q_in).unflatten(-1, (-1, d)))
    k = attn.norm_k(attn.to_k(kv_in).unflatten(-1, (-1, d)))
    v = attn.to_v(kv_in).unflatten(-1, (-1, d))
    q = apply_rotary_emb(q, q_rows, use_real=False).transpose(1, 2)
    k = apply_rotary_emb(k, k_rows, use_real=False).transpose(1, 2)
    rep = attn.heads // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.transpose(1, 2).repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(q, k, v, scale=attn.scale).transpose(1, 2).flatten(2)
    return attn.to_out[1](attn.to_out[0](out))


class _Reference:
    """An attention processor computing, for row `row` alone, what the method should make of it."""

    def __init__(self, captured, row, batch):
        self.c, self.row, self.batch = captured, row, batch

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        assert attention_mask is None and hidden_states.shape[0] == 1
        t = hidden_states.shape[1] - N
        cap, img = hidden_states[:, :t], hidden_states[:, t:]
        cap_rows, img_rows = image_rotary_emb[:, :t], image_rotary_emb[:, t:]
        plan, i = self.c.get("plan"), self.row
        if plan is None:  # ToDo: queries whole, keys and values at the nearest-exact samples
            pos = self.c["kv_pos"]
            kv = torch.cat([cap, img[:, pos]], dim=1)
            return _attention(attn, hidden_states, kv, image_rotary_emb, torch.cat([cap_rows, img_rows[:, pos]], 1))
        wide = img.expand(self.batch, -1, -1)  # the plan is made for the batch: use row i of it
        q = torch.cat([cap, plan.reduce(wide)[i : i + 1]], dim=1)
        pos = _plan_positions(plan)[i]
        out = _attention(attn, q, q, *(torch.cat([cap_rows, img_rows[:, pos]], 1),) * 2)
        expanded = plan.expand(out[:, t:].expand(self.batch, -1, -1))[i : i + 1]
        return torch.cat([out[:, :t], expanded], dim=1)


@pytest.mark.parametrize("method", ["tome", "bigain-tm", "sito", "todo"])
@pytest.mark.parametrize("block", ["noise_refiner.1", "layers.1"])
def test_a_compressed_block_matches_a_per_row_reference(method, block):
    model = make_tiny_lumina2()
    kw = lumina2_inputs(2, lengths=MIXED)
    index = [b.name for b in bigain.inspect_model(model).blocks].index(block)
    bigain.apply(model, method, blocks=(index,))
    patch = model._bigain_patch.patches[0]
    target = model.get_submodule(block)
    captured = {}

    def block_pre(m, args):  # the model's call: (hidden, mask, rotary rows, temb), its own layout
        captured["args"] = args

    def attn_post(m, args, out):
        captured["plan"] = getattr(patch, "plan", None)

    def block_post(m, args, out):
        captured["out"] = out

    handles = [
        target.register_forward_pre_hook(block_pre),
        target.attn.register_forward_hook(attn_post),
        target.register_forward_hook(block_post),
    ]
    run_kw(model, kw)
    for h in handles:
        h.remove()
    bigain.remove(model)
    if method == "todo":
        cfg = ToDoConfig()
        grid = ops.Grid.image(H, W)
        captured["kv_pos"] = cfg.kv_positions(grid, 2, torch.device("cpu"))
        img = torch.randn(1, N, 4)  # ToDo's source is the tokens at those positions
        assert torch.equal(cfg.kv_source(img, grid, 2, None, cfg.kv_prepare(None, img.dtype)), img[:, captured["kv_pos"]])
    x, _, rows, temb = captured["args"]
    reference = copy.deepcopy(target)
    for i, length in enumerate(MIXED):
        n = (length if block.startswith("layers") else 0) + N  # the row's own tokens, no padding
        reference.attn.set_processor(_Reference(captured, i, 2))
        with torch.no_grad():
            expect = reference(x[i : i + 1, :n], None, rows[i : i + 1, :n], temb[i : i + 1])
        torch.testing.assert_close(captured["out"][i : i + 1, :n], expect, rtol=1e-5, atol=1e-5)
