"""apply/remove mechanics, placement, reports, errors and backbones."""

from __future__ import annotations

import warnings

import pytest
import torch

import bigain
from conftest import dit_inputs, make_tiny_dit, make_tiny_pixart, make_tiny_unet, unet_inputs

ALL = ["none", "tome", "bigain-tm", "todo", "bigain-td", "sito"]


def _unet_out(m, inputs):
    with torch.no_grad():
        return m(*inputs).sample


def _dit_out(m, inputs):
    x, t, y = inputs
    with torch.no_grad():
        return m(x, timestep=t, class_labels=y).sample


def test_methods_registry():
    assert bigain.list_methods() == ALL


def test_apply_remove_many_times_restores_exactly():
    unet = make_tiny_unet()
    inputs = unet_inputs(2)
    base = _unet_out(unet, inputs)
    state_before = {k: v.clone() for k, v in unet.state_dict().items()}
    procs_before = dict(unet.attn_processors)
    for _ in range(2):
        for m in ALL:
            bigain.apply(unet, m, max_downsample=2)
            out = _unet_out(unet, inputs)
            if m != "none":
                assert not torch.equal(out, base), m
        bigain.remove(unet)
        assert torch.equal(_unet_out(unet, inputs), base)
    assert not bigain.is_patched(unet)
    assert all(torch.equal(v, state_before[k]) for k, v in unet.state_dict().items())
    assert {k: type(v) for k, v in unet.attn_processors.items()} == {k: type(v) for k, v in procs_before.items()}
    assert not unet._forward_pre_hooks and all(not m._forward_hooks and not m._forward_pre_hooks for m in unet.modules())


def test_apply_twice_replaces_patch():
    unet = make_tiny_unet()
    inputs = unet_inputs(2)
    bigain.apply(unet, "todo")
    once = _unet_out(unet, inputs)
    bigain.apply(unet, "tome", use_rand=False)
    bigain.apply(unet, "todo")
    assert torch.equal(_unet_out(unet, inputs), once)
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in unet.modules())
    bigain.remove(unet)
    bigain.apply(unet, "todo")
    assert hooks == sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in unet.modules())


def test_context_manager_restores_previous_patch():
    dit = make_tiny_dit()
    inputs = dit_inputs(2)
    base = _dit_out(dit, inputs)
    with bigain.compressed(dit, "bigain-tm", ratio=0.5) as rep:
        assert rep.num_blocks == 3  # blocks 1,2,3 of a 4-layer DiT
        assert not torch.equal(_dit_out(dit, inputs), base)
    assert torch.equal(_dit_out(dit, inputs), base)
    bigain.apply(dit, "todo")
    todo = _dit_out(dit, inputs)
    with bigain.compressed(dit, "tome"):
        pass
    assert torch.equal(_dit_out(dit, inputs), todo)


def test_pipeline_like_objects_are_accepted():
    class Pipe:
        def __init__(self):
            self.unet = make_tiny_unet()

    p = Pipe()
    rep = bigain.apply(p, "tome")
    assert bigain.is_patched(p.unet) and rep.model == "UNet2DConditionModel"
    bigain.remove(p)
    assert not bigain.is_patched(p.unet)


def test_unet_default_placement_and_report():
    unet = make_tiny_unet()
    rep = bigain.apply(unet, "tome", ratio=0.5)
    assert rep.levels == [1] and rep.num_blocks == 3
    assert all(b.tokens == 256 and b.reduced == 128 for b in rep.blocks)
    rep = bigain.apply(unet, "tome", ratio=0.5, max_downsample=2)
    assert rep.levels == [1, 2] and rep.num_blocks == 7  # + down 1, mid, up 0 (x2)
    rep = bigain.apply(unet, "todo", downsample_factor=2)
    assert rep.levels == [1] and all(b.reduced == 64 for b in rep.blocks)
    rep = bigain.apply(unet, "todo", downsample_factor=2, downsample_factor_level_2=2)
    assert rep.levels == [1, 2]
    rep = bigain.apply(unet, "bigain-tm", blocks=[0, 5])
    assert [b.index for b in rep.blocks] == [0, 5]
    assert "down_blocks.0.attentions.0.transformer_blocks.0" in str(rep)


def test_dit_compresses_at_default_options():
    dit = make_tiny_dit(layers=14)
    rep = bigain.apply(dit, "tome")
    assert [b.index for b in rep.blocks] == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    assert rep.blocks[0].tokens == 64 and rep.blocks[0].reduced == 32


def test_pixart_is_supported():
    pix = make_tiny_pixart()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=g)
    ctx = torch.randn(2, 5, 24, generator=g)
    t = torch.tensor([10, 500])

    def run():
        with torch.no_grad():
            return pix(x, encoder_hidden_states=ctx, timestep=t, added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample

    base = run()
    for m in ALL[1:]:
        bigain.apply(pix, m)
        out = run()
        assert out.shape == base.shape and not torch.equal(out, base) and torch.isfinite(out).all()
    bigain.remove(pix)
    assert torch.equal(run(), base)


def test_unsupported_model_lists_supported():
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        bigain.apply(torch.nn.Linear(2, 2), "tome")
    with pytest.raises(TypeError):
        bigain.apply(object(), "tome")


@pytest.mark.parametrize(
    "method,opts,match",
    [
        ("tome", dict(ratio=1.0), "ratio"),
        ("tome", dict(ratio=-0.1), "ratio"),
        ("tome", dict(sx=0), "sx"),
        ("todo", dict(downsample_factor=0), "downsample_factor"),
        ("bigain-tm", dict(dst_rule="x"), "dst_rule"),
        ("nope", {}, "unknown method"),
        ("tome", dict(bogus=1), "bogus"),
        ("tome", dict(max_downsample=0), "max_downsample"),
    ],
)
def test_bad_options_raise_value_error_naming_option(method, opts, match):
    with pytest.raises(ValueError, match=match):
        bigain.apply(make_tiny_unet(), method, **opts)


def test_stride_or_factor_that_does_not_fit_raises():
    unet = make_tiny_unet()
    bigain.apply(unet, "tome", sx=32, sy=2)
    with pytest.raises(ValueError, match="sx=32"):
        _unet_out(unet, unet_inputs(2))
    bigain.apply(unet, "todo", downsample_factor=64)
    with pytest.raises(ValueError, match="downsample_factor=64"):
        _unet_out(unet, unet_inputs(2))


def test_patch_that_compresses_nothing_errors_or_warns():
    dit = make_tiny_dit(layers=1)  # default DiT placement starts at block 1
    with pytest.raises(ValueError, match="compress nothing"):
        bigain.apply(dit, "tome")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        bigain.apply(dit, "tome", on_empty="warn")
    assert any("compress nothing" in str(x.message) for x in w)
    with pytest.raises(ValueError, match="out of range"):
        bigain.apply(dit, "tome", blocks=[3])


@pytest.mark.parametrize("size", [(15, 17), (18, 12), (13, 13)])
@pytest.mark.parametrize("method", ALL[1:])
def test_odd_and_non_square_latents(size, method):
    unet = make_tiny_unet()
    inputs = unet_inputs(2, size)
    base = _unet_out(unet, inputs)
    bigain.apply(unet, method, max_downsample=2, downsample_factor_level_2=2) if method in ("todo", "bigain-td") else bigain.apply(unet, method, max_downsample=2)
    out = _unet_out(unet, inputs)
    assert out.shape == base.shape and torch.isfinite(out).all() and not torch.equal(out, base)


def test_bigain_td_alpha_one_equals_todo_and_schedule_uses_each_samples_t():
    unet = make_tiny_unet()
    x, _, c = unet_inputs(2)
    t = torch.tensor([900, 100])
    bigain.apply(unet, "todo")
    todo = _unet_out(unet, (x, t, c))
    bigain.apply(unet, "bigain-td", alpha=1.0)
    assert torch.equal(_unet_out(unet, (x, t, c)), todo)
    # per-sample schedule: row b of a mixed batch equals that row run alone
    bigain.apply(unet, "bigain-td", alpha_schedule=(0.8, 1.2))
    mixed = _unet_out(unet, (x, t, c))
    for b in range(2):
        alone = _unet_out(unet, (x[b : b + 1], t[b : b + 1], c[b : b + 1]))
        torch.testing.assert_close(mixed[b : b + 1], alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[1:], _unet_out(unet, (x[1:], t[:1], c[1:])))


def test_kv_methods_are_off_at_t_zero():
    unet = make_tiny_unet()
    x, _, c = unet_inputs(2)
    t0 = torch.zeros(2, dtype=torch.long)
    base = _unet_out(unet, (x, t0, c))
    for m in ("todo", "bigain-td"):
        bigain.apply(unet, m)
        with bigain.host_timesteps(unet, [0, 0]):  # the t <= stop_t decision takes host values
            assert torch.equal(_unet_out(unet, (x, t0, c)), base)
        assert not torch.equal(_unet_out(unet, (x, t0 + 1, c)), _unet_out(make_tiny_unet(), (x, t0 + 1, c)))
        bigain.remove(unet)


@pytest.mark.parametrize("method", ["tome", "sito"])
def test_sample_keys_make_rows_independent_of_batch(method):
    dit = make_tiny_dit()
    x, t, y = dit_inputs(4)
    bigain.apply(dit, method, ratio=0.5)
    keys = torch.tensor([11, 12, 13, 14])
    perm = torch.tensor([2, 0, 3, 1])
    with bigain.sample_keys(dit, keys):
        full = _dit_out(dit, (x, t, y))
    with bigain.sample_keys(dit, keys[perm]):
        permuted = _dit_out(dit, (x[perm], t[perm], y[perm]))
    with bigain.sample_keys(dit, keys[1:3]):
        part = _dit_out(dit, (x[1:3], t[1:3], y[1:3]))
    torch.testing.assert_close(permuted, full[perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(part, full[1:3], rtol=1e-5, atol=1e-6)
    # without keys the draws are a function of (seed, block, timestep): the same call repeats them
    a, b = _dit_out(dit, (x, t, y)), _dit_out(dit, (x, t, y))
    assert torch.equal(a, b)
    # ...and the keys are what made the rows differ from the unkeyed call
    assert not torch.equal(a, full)
    # rng="generator" (tomesd's stream) draws anew at every call
    bigain.remove(dit)
    bigain.apply(dit, method, ratio=0.5, rng="generator")
    a, b = _dit_out(dit, (x, t, y)), _dit_out(dit, (x, t, y))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("method", ["tome", "sito"])
def test_seed_gives_same_numbers_and_another_seed_other_numbers(method):
    x = unet_inputs(2)
    outs = []
    for seed in (3, 3, 4):
        unet = make_tiny_unet()
        bigain.apply(unet, method, seed=seed)
        outs.append(_unet_out(unet, x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_kv_switch_off_needs_every_row_at_or_below_stop_t():
    """Off for a forward whose timesteps are all <= stop_t; a mixed batch is compressed in every row."""
    x, _, c = unet_inputs(2)
    plain = make_tiny_unet()
    unet = make_tiny_unet()
    bigain.apply(unet, "bigain-td")
    mixed_t = torch.tensor([0, 500])
    with bigain.host_timesteps(unet, [0, 500]):
        mixed = _unet_out(unet, (x, mixed_t, c))
    with bigain.host_timesteps(unet, [0]):
        row0_alone = _unet_out(unet, (x[:1], mixed_t[:1], c[:1]))
    assert torch.equal(row0_alone, _unet_out(plain, (x[:1], mixed_t[:1], c[:1])))  # all rows at t=0: off
    assert not torch.allclose(mixed[:1], row0_alone, atol=1e-6)  # the t=0 row of a mixed batch is compressed
    assert torch.equal(_unet_out(unet, (x, 0, c)), _unet_out(plain, (x, 0, c)))  # a Python-number t works too
    bigain.apply(unet, "bigain-td", stop_t=None)
    assert not torch.allclose(_unet_out(unet, (x, 0, c)), _unet_out(plain, (x, 0, c)), atol=1e-6)
