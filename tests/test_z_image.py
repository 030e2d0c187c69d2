"""Z-Image (`ZImageTransformer2DModel`): the grid from the latent list (non-square, frames), t read
backwards on the 0-1000 scale, the placement over the noise-refiner then the main blocks, [image;
rest] sequences whose rest (image padding, caption, batch padding) is left whole, the (B, S) key
mask cut with the image keys so each sample's batch padding stays masked, per-sample complex rotary
rows that follow merged tokens and downsampled keys (checked against the processor itself on
explicitly gathered rows), and the calls that are refused.
(tests/test_coverage.py runs every method at its defaults on the "z-image" tiny config.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from family_checks import METHODS, every_method_changes_the_output, rows_follow_keys, rows_follow_tokens

import bigain
from bigain import ops
from bigain.backbones import find_backbone, relative_placement
from bigain.backbones.z_image import ZImageBackbone
from bigain.patching.hooks import _plan_positions
from conftest import seen_forward
from tiny_models import make_tiny_z_image, z_image_inputs

H, W = 6, 10
N = H * W  # image tokens; the model pads them to 64


def run(model, kw) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack(model(**kw, return_dict=False)[0])


@pytest.fixture(scope="module")
def zi():
    return make_tiny_z_image()


def test_grid_timesteps_and_default_placement():
    model = make_tiny_z_image(layers=4)
    assert isinstance(find_backbone(model), ZImageBackbone)
    report = bigain.apply(model, "tome")
    # 1 noise-refiner + 4 main blocks: floor(28 j / 5) in {1-5, 7-11} for j = 1, 2
    assert [b.name for b in report.blocks] == ["layers.0", "layers.1"]
    fwd = seen_forward(model, z_image_inputs(2, h=4, w=12, t=(0.3, 0.75)))
    assert fwd.grid == ops.Grid.image(4, 12)  # rows and columns from the latent's shape
    assert fwd.timesteps.tolist() == pytest.approx([700.0, 250.0])  # T = 1000 (1 - t)
    bigain.remove(model)
    bigain.apply(model, "tome", blocks="all")
    assert seen_forward(model, z_image_inputs(2, h=3, w=5, frames=2)).grid == ops.Grid(2, 3, 5)
    bigain.remove(model)
    # Z-Image's 2 + 30 blocks: main layers 0-4 and 6-11
    assert relative_placement(32) == (*range(2, 7), *range(8, 14))


def test_every_method_compresses_both_block_kinds_and_removal_is_exact(zi):
    refiner, main = (0,), (1, 2)
    kw = z_image_inputs(2)
    every_method_changes_the_output(zi, kw, (refiner, main), run=run, merge_mlp=True, atol=1e-5)
    # a non-square grid of two frames runs too
    kw2 = z_image_inputs(2, h=3, w=5, frames=2)
    base2 = run(zi, kw2)
    bigain.apply(zi, "todo", blocks="all")
    assert not torch.allclose(run(zi, kw2), base2, atol=1e-5)
    bigain.remove(zi)


def _spy(model, monkeypatch):
    """Record, for every attention call: what the attention gets before bigain's hooks (`x`, the
    mask, the tables), what the processor gets after them and returns, the keys and values to_k
    and to_v make, and the block's plan (token methods) or factor (KV methods)."""
    from diffusers.models.transformers.transformer_z_image import ZSingleStreamAttnProcessor

    calls, handles = [], []
    original = ZSingleStreamAttnProcessor.__call__

    def spy(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, freqs_cis=None):
        out = original(self, attn, hidden_states, encoder_hidden_states, attention_mask, freqs_cis)
        patch = getattr(model, "_bigain_patch", None)
        plans = [p for p in (patch.patches if patch else []) if p.block.roles["attn"] is attn]
        plan = getattr(plans[0], "plan", None) if plans else None
        calls[-1].update(
            hidden=hidden_states,
            mask=attention_mask,
            tables=freqs_cis,
            out=out,
            pos=None if plan is None else _plan_positions(plan),
            factor=plans[0].param if plans else None,
        )
        return out

    def before(m, args, kwargs):
        calls.append(
            {
                "attn": m,
                "x": args[0],
                "mask_in": kwargs.get("attention_mask"),
                "tables_in": kwargs["freqs_cis"],
            }
        )

    def projected(name):
        return lambda m, args, out: calls[-1].update({name: out})

    monkeypatch.setattr(ZSingleStreamAttnProcessor, "__call__", spy)
    for block in [*model.noise_refiner, *model.context_refiner, *model.layers]:
        handles.append(block.attention.register_forward_pre_hook(before, with_kwargs=True, prepend=True))
        handles.append(block.attention.to_k.register_forward_hook(projected("keys")))
        handles.append(block.attention.to_v.register_forward_hook(projected("values")))
    return calls, handles, original


def _rotate(x, freqs):
    """The processor's rotation, written out: adjacent pairs as complex numbers times the rows."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs[:, :, None]).flatten(3).type_as(x)


def _gather(table, pos):
    return torch.stack([table[b, pos[b]] for b in range(table.shape[0])])


@pytest.mark.parametrize("method", METHODS)
def test_rest_is_untouched_the_mask_follows_the_image_and_rows_follow_the_tokens(zi, method, monkeypatch):
    kw = z_image_inputs(2)  # captions of 5 and 35 tokens: joint sequences of 96 and 128, a (2, 128) mask
    bigain.apply(zi, method, blocks="all")
    calls, handles, processor = _spy(zi, monkeypatch)
    run(zi, kw)
    for h in handles:
        h.remove()
    bigain.remove(zi)
    assert len(calls) == 1 + 1 + 4  # noise refiner, context refiner, main layers
    kv = method in ("todo", "bigain-td")
    changed = 0
    for c in calls:
        x, hidden, attn = c["x"], c["hidden"], c["attn"]
        if attn is zi.context_refiner[0].attention:  # the caption alone: never touched
            assert hidden is x and c["tables"] is c["tables_in"]
            continue
        changed += 1
        rest = x.shape[1] - N  # image padding, then (main layers) the caption and the batch padding
        assert c["tables"] is None  # bigain rotates the queries and keys itself
        queries, keys = hidden.shape[1], c["keys"].shape[1]
        if kv:
            assert torch.equal(hidden, x) and keys < queries
            own = attn.to_k(x[:, N:])  # the rest's keys are its own
            torch.testing.assert_close(c["keys"][:, keys - rest :], own, rtol=1e-6, atol=1e-6)
        else:
            assert queries == keys < x.shape[1]
            assert torch.equal(hidden[:, queries - rest :], x[:, N:])
        cut = x.shape[1] - keys
        mask_in = c["mask_in"]
        if attn is zi.noise_refiner[0].attention:
            assert mask_in is None  # every sample has the same image tokens
        else:
            assert mask_in.shape == (2, x.shape[1]) and mask_in[1].all() and not mask_in[0].all()
        # the mask loses as many image entries (all kept) as there are fewer keys: the padding stays masked
        assert (c["mask"] is None) if mask_in is None else torch.equal(c["mask"], mask_in[:, cut:])

        # A slow reference: the processor itself, given each sample's rotary rows of the tokens present.
        table = c["tables_in"]  # (B, S, D/2) complex, per sample
        if not kv:
            rows = torch.cat([_gather(table[:, :N], c["pos"]), table[:, N:]], dim=1)
            ref = processor(attn.processor, attn, hidden, None, c["mask"], rows)
            assert torch.equal(c["out"], ref)
        else:
            pos = bigain.make_config(method).kv_positions(ops.Grid.image(H, W), c["factor"], x.device)
            heads = attn.heads
            q = _rotate(attn.norm_q(attn.to_q(x).unflatten(-1, (heads, -1))), table)
            k = attn.norm_k(c["keys"].unflatten(-1, (heads, -1)))
            k = _rotate(k, torch.cat([table[:, pos], table[:, N:]], dim=1))
            v = c["values"].unflatten(-1, (heads, -1))
            m = None if c["mask"] is None else c["mask"][:, None, None, :]
            o = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=m
            )
            ref = attn.to_out[0](o.transpose(1, 2).flatten(2))
            torch.testing.assert_close(c["out"], ref, rtol=1e-5, atol=1e-5)
    assert changed == 5


@pytest.mark.parametrize("method", METHODS)
def test_each_sample_is_what_it_is_alone(zi, method):
    # The short caption's sample attends over its batch padding only through the mask: with the mask
    # cut right, each sample of a batch gives what it gives alone (its random draws are keyed by its
    # timestep, not by its place in the batch).
    kw = z_image_inputs(2)
    bigain.apply(zi, method, blocks="all")
    batched = run(zi, kw)
    alone = [
        run(zi, dict(x=kw["x"][i : i + 1], t=kw["t"][i : i + 1], cap_feats=kw["cap_feats"][i : i + 1]))
        for i in (0, 1)
    ]
    torch.testing.assert_close(batched, torch.cat(alone), rtol=1e-4, atol=1e-5)
    # The test has teeth: without its mask the short caption's sample sees the batch padding.
    handle = zi.layers[0].attention.register_forward_pre_hook(
        lambda m, a, k: (a, dict(k, attention_mask=None)), with_kwargs=True, prepend=True
    )
    unmasked = run(zi, kw)
    handle.remove()
    bigain.remove(zi)
    assert (unmasked[0] - alone[0][0]).abs().max() > 1e-3


def test_rotary_positions_follow_reordered_tokens(zi, monkeypatch):
    rows_follow_tokens(zi, z_image_inputs(2), run=run, teeth=monkeypatch, merge_mlp=True)


def test_rotary_positions_follow_downsampled_keys(zi):
    rows_follow_keys(zi, z_image_inputs(2), run=run)


def test_omni_calls_and_samples_of_different_sizes_are_refused(zi):
    bigain.apply(zi, "tome", blocks="all")
    kw = z_image_inputs(2)
    with pytest.raises(ValueError, match="Omni mode"):
        run(zi, dict(kw, x=[[x] for x in kw["x"]], siglip_feats=[None, None], image_noise_mask=[[1], [1]]))
    other = z_image_inputs(1, h=4, w=12)["x"]
    with pytest.raises(ValueError, match=r"different token grids \(1x4x12, 1x6x10\)"):
        run(zi, dict(kw, x=[kw["x"][0], other[0]]))
    bigain.remove(zi)
