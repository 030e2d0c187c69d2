"""The spec-described image families (AuraFlow, SANA, CogView3-Plus) beyond their tiny defaults: every block and
every reduced sub-layer, on odd non-square grids, and what stays untouched."""

from __future__ import annotations

import pytest
import torch

import bigain
from bigain.backbones import coverage, find_backbone
from tiny_models import by_name

FAMILIES = ("auraflow", "sana", "cogview3plus")


@pytest.fixture(scope="module")
def models():
    cache = {}
    for name in FAMILIES:
        entry = by_name(name)
        model = entry.build().eval()
        with torch.no_grad():
            cache[name] = entry, model, entry.forward(model)
    return cache


def _options(method: str) -> list[dict]:
    if bigain.make_config(method).mechanism == "tokens":
        return [{}, {"merge_crossattn": True, "merge_mlp": True}]
    return [{}]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_block_and_sub_layer_compresses_and_removes_exactly(models, family):
    entry, model, base = models[family]
    for method in coverage.methods_for(find_backbone(model)):
        for options in _options(method):
            with torch.no_grad():
                report = bigain.apply(model, method, blocks="all", **options)
                out = entry.forward(model)
                bigain.remove(model)
                after = entry.forward(model)
            assert report.num_blocks == len(find_backbone(model).blocks(model))
            assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-6), (method, options)
            assert torch.equal(after, base)


def test_auraflow_blocks_roles_and_text_layout(models):
    _, model, _ = models["auraflow"]
    blocks = find_backbone(model).blocks(model)
    assert [b.name for b in blocks] == [
        "joint_transformer_blocks.0",
        "joint_transformer_blocks.1",
        "single_transformer_blocks.0",
        "single_transformer_blocks.1",
        "single_transformer_blocks.2",
    ]
    assert [(b.joint, b.text_prefix) for b in blocks] == [(True, False)] * 2 + [(False, True)] * 3
    assert all(sorted(b.roles) == ["attn", "ff"] for b in blocks)


def test_auraflow_token_methods_leave_the_text_tokens_of_a_single_block_alone(models):
    """In a single block over [text; image], merging reduces the image rows the attention projects;
    its text rows reach the projections unchanged."""
    entry, model, _ = models["auraflow"]
    seen = []
    handle = model.single_transformer_blocks[0].attn.to_q.register_forward_pre_hook(
        lambda m, args: seen.append(args[0])
    )
    try:
        with torch.no_grad():
            entry.forward(model)
            bigain.apply(model, "tome", blocks=[2])
            entry.forward(model)
            bigain.remove(model)
    finally:
        handle.remove()
    plain, reduced = seen
    text = 5 + model.register_tokens.shape[1]
    assert plain.shape[1] == text + 9 * 7
    assert text < reduced.shape[1] < plain.shape[1]
    assert torch.equal(reduced[:, :text], plain[:, :text])


@pytest.mark.parametrize(("family", "why"), [("sana", "linear"), ("cogview3plus", "joins text and image")])
def test_kv_methods_are_refused_with_the_reason(models, family, why):
    _, model, _ = models[family]
    for method in ("todo", "bigain-td"):
        with pytest.raises(ValueError, match=why):
            bigain.apply(model, method)
    report = bigain.apply(model, "tome", merge_mlp=True)
    assert report.num_blocks > 0
    bigain.remove(model)


def test_cogview3plus_token_methods_keep_every_text_token(models):
    """The joint attention projects all the text and fewer image tokens; both outputs keep their length."""
    entry, model, _ = models["cogview3plus"]
    attn = model.transformer_blocks[1].attn1
    queries, outputs = [], []
    handles = [
        attn.to_q.register_forward_pre_hook(lambda m, args: queries.append(args[0].shape[1])),
        attn.register_forward_hook(lambda m, args, out: outputs.append([o.shape[1] for o in out])),
    ]
    try:
        with torch.no_grad():
            bigain.apply(model, "tome")
            entry.forward(model)
            bigain.remove(model)
    finally:
        for h in handles:
            h.remove()
    assert 5 < queries[0] < 5 + 9 * 7  # [text; reduced image]
    assert outputs == [[9 * 7, 5]]  # (image expanded back, text)
