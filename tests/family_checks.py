"""Checks that the per-family test files (tests/test_<family>.py) share: every method changes the
output and `bigain.remove` restores it bit for bit, rotary rows follow reordered tokens or keys, and
the adapter's rotary split is made once per forward."""

from __future__ import annotations

import torch
from test_backbones import _PermuteConfig
from test_wan import _PermutedKeys

import bigain
from bigain.backbones import find_backbone
from conftest import run_kw

METHODS = ("tome", "bigain-tm", "todo", "bigain-td", "sito")


def every_method_changes_the_output(
    model, kw, block_sets=("all",), *, methods=METHODS, run=run_kw, merge_mlp=(), atol=None
):
    """Each method on each of `block_sets` keeps the output's shape, finite, and changes it (by more
    than `atol` when given); after `bigain.remove` the model gives its own output bit for bit.
    `merge_mlp`: the methods that also merge the MLP (True: ToMe and BiGain-TM). Returns the model's
    own output."""
    mlp = ("tome", "bigain-tm") if merge_mlp is True else tuple(merge_mlp)
    base = run(model, kw)
    for method in methods:
        opts = {"merge_mlp": True} if method in mlp else {}
        for blocks in block_sets:
            bigain.apply(model, method, blocks=blocks, **opts)
            out = run(model, kw)
            bigain.remove(model)
            assert out.shape == base.shape and torch.isfinite(out).all()
            changed = not torch.equal(out, base) if atol is None else not torch.allclose(out, base, atol=atol)
            assert changed, (method, blocks)
    assert torch.equal(run(model, kw), base)
    return base


def rows_follow_tokens(model, kw, *, run=run_kw, teeth=None, **options):
    """A plan that merges nothing but reorders every image token (`_PermuteConfig` with `options`,
    e.g. merge_mlp=True, on every block) leaves the output as the model's, to float rounding: the
    rotary rows moved with the tokens. `teeth` (pytest's monkeypatch): also check that with the
    tables left in the call (the adapter's `rope_kwarg` None), which rotate the reordered tokens
    with the rows of the model's order, the output changes."""
    _rows_follow(model, kw, _PermuteConfig, options, run, teeth)


def rows_follow_keys(model, kw, *, run=run_kw, teeth=None):
    """The same for a key/value source of every image token in another order (`_PermutedKeys`):
    the keys' rotary rows follow them."""
    _rows_follow(model, kw, _PermutedKeys, {}, run, teeth)


def _rows_follow(model, kw, config, options, run, teeth):
    base = run(model, kw)
    bigain.apply(model, config(blocks="all", **options))
    permuted = run(model, kw)
    bigain.remove(model)
    torch.testing.assert_close(permuted, base, rtol=1e-5, atol=1e-5)
    if teeth is None:
        return
    teeth.setattr(type(find_backbone(model)), "rope_kwarg", None)
    bigain.apply(model, config(blocks="all"))
    wrong = run(model, kw)
    bigain.remove(model)
    assert (wrong - base).abs().max() > 1e-3


def rope_split_once_per_forward(model, kw, monkeypatch):
    """The adapter's `rope_rows` (the tables' join or split) runs once per forward, and the downsampled
    keys' positions are made once, not per block; the output is bit-identical to splitting the
    tables again in every block (the hooks before the per-forward cache)."""
    from bigain.methods import ToDoConfig
    from bigain.patching import hooks

    backbone = type(find_backbone(model))
    blocks = len(bigain.inspect_model(model).blocks)
    calls = {"rows": 0, "positions": 0}
    rope_rows, kv_positions = backbone.rope_rows, ToDoConfig.kv_positions

    def counted_rows(self, tables):
        calls["rows"] += 1
        return rope_rows(self, tables)

    def counted_positions(self, grid, factor, device):
        calls["positions"] += 1
        return kv_positions(self, grid, factor, device)

    def split_per_block(self, tables, rest):
        cos, sin = self.state.backbone.rope_rows(tables)
        n_text = cos.shape[0] - self.state.current().grid.tokens
        return (cos[:n_text], sin[:n_text]), cos[n_text:], sin[n_text:], None

    monkeypatch.setattr(backbone, "rope_rows", counted_rows)
    monkeypatch.setattr(ToDoConfig, "kv_positions", counted_positions)
    outs = {}
    for per_block in (False, True):
        if per_block:
            monkeypatch.setattr(hooks._BlockHooks, "_split_rope", split_per_block)
        for method in ("tome", "todo"):
            bigain.apply(model, method, blocks="all")
            calls.update(rows=0, positions=0)
            out = run_kw(model, kw)
            bigain.remove(model)
            times = blocks if per_block else 1
            assert calls["rows"] == times and calls["positions"] == (times if method == "todo" else 0)
            if per_block:
                assert torch.equal(out, outs[method]), method
            outs[method] = out
