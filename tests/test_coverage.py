"""The coverage contract, over the tiny-model registry (tests/tiny_models.py): every method an adapter
takes changes the output of each of its tiny models at the method's defaults, and `bigain.remove`
restores the output bit-exactly; every class the adapters support has a tiny model; docs/coverage.md
and the README's count are what the coverage script produces now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import bigain
from bigain.backbones import BACKBONES, SUPPORTED, coverage
from bigain.backbones.dit import DiTBackbone
from conftest import dit_inputs, make_tiny_dit
from tiny_models import TINY, Tiny, by_name, entries

ROOT = Path(__file__).resolve().parents[1]


def _methods(entry: Tiny) -> list[str]:
    bb = coverage.backbone_for_class(entry.cls)
    return coverage.methods_for(bb) if bb is not None else []


CASES = [(t.name, m) for t in entries() for m in _methods(t)]


@pytest.fixture(scope="module")
def built():
    """One model and its unpatched output per tiny config, shared by every method of this module."""
    cache: dict[str, tuple[torch.nn.Module, torch.Tensor]] = {}

    def get(entry: Tiny) -> tuple[torch.nn.Module, torch.Tensor]:
        if entry.name not in cache:
            model = entry.build().eval()
            assert type(model).__name__ == entry.cls, (
                f"tiny config {entry.name} builds {type(model).__name__}"
            )
            with torch.no_grad():
                cache[entry.name] = model, entry.forward(model)
        return cache[entry.name]

    return get


@pytest.mark.parametrize(("config", "method"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_method_compresses_at_defaults_and_removes_exactly(built, config, method):
    entry = by_name(config)
    model, base = built(entry)
    with torch.no_grad():
        try:
            report = bigain.apply(model, method)
            out = entry.forward(model)
        finally:
            bigain.remove(model)
        after = entry.forward(model)
    assert report.num_blocks > 0
    assert out.shape == base.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, base, atol=1e-6), f"{method} on {config} changed nothing"
    assert torch.equal(after, base), f"bigain.remove after {method} on {config} did not restore the output"


@pytest.mark.parametrize("config", [t.name for t in entries()])
def test_none_patches_nothing_and_refused_methods_fail_clearly(built, config):
    entry = by_name(config)
    model, base = built(entry)
    with torch.no_grad():
        report = bigain.apply(model, "none")
        out = entry.forward(model)
        bigain.remove(model)
    assert report.num_blocks == 0 and torch.equal(out, base)
    for method, why in coverage.refusals(coverage.backbone_for_class(entry.cls)).items():
        with pytest.raises(ValueError, match=re.escape(why)):
            bigain.apply(model, method)
        assert not bigain.is_patched(model)


def test_every_supported_class_has_a_tiny_model_and_only_those():
    untested = [c for c in SUPPORTED if c not in TINY]
    assert not untested, f"supported but without a tiny(...) entry in tests/tiny_models.py: {untested}"
    unsupported = [c for c in TINY if c not in SUPPORTED]
    assert not unsupported, f"tests/tiny_models.py has entries for classes no adapter takes: {unsupported}"


def test_the_coverage_script_reads_the_registry_as_the_tests_see_it():
    parsed = coverage.tiny_configs(ROOT / coverage.TINY_REGISTRY)
    assert parsed == {c: [t.name for t in ts] for c, ts in TINY.items()}, (
        'every entry of tests/tiny_models.py must be a tiny("Class", "name", ...) call with string literals'
    )


def test_committed_coverage_table_and_readme_count_are_current():
    import diffusers

    committed = (ROOT / coverage.TABLE).read_text()
    m = re.search(r"from diffusers (\S+),", committed)
    assert m, f"{coverage.TABLE} does not say which diffusers it was generated with"
    if m.group(1) != diffusers.__version__:
        pytest.skip(f"{coverage.TABLE} describes diffusers {m.group(1)}; this is {diffusers.__version__}")
    problems = coverage.stale(ROOT)
    assert not problems, "\n".join(problems)


class _LinearAttention(DiTBackbone):
    """A family whose attention has no keys to downsample (as a linear-attention model would)."""

    name = "test-linear"
    refuses = {"kv": "its linear attention has no keys and values to downsample"}


@pytest.fixture
def refusing_dit():
    adapter = _LinearAttention()
    BACKBONES.insert(0, adapter)
    try:
        yield adapter
    finally:
        BACKBONES.remove(adapter)


def test_an_adapter_can_refuse_a_mechanism_and_the_table_says_so(refusing_dit):
    kv = [m for m in coverage.compressing_methods() if bigain.make_config(m).mechanism == "kv"]
    assert kv and coverage.methods_for(refusing_dit) == [
        m for m in coverage.compressing_methods() if m not in kv
    ]
    assert set(coverage.refusals(refusing_dit)) == set(kv)
    dit = make_tiny_dit(layers=2)
    for method in kv:
        with pytest.raises(ValueError, match="no keys and values to downsample"):
            bigain.apply(dit, method)
    with torch.no_grad():
        bigain.apply(dit, "tome", blocks="all")
        dit(*dit_inputs(2))
        bigain.remove(dit)
    row = next(
        line for line in coverage.render(ROOT).splitlines() if line.startswith("| `DiTTransformer2DModel`")
    )
    assert "yes (`test-linear`)" in row and "refuses todo, bigain-td (its linear attention" in row
    assert row.count("its linear attention") == 1  # one reason, said once for the methods it refuses


def test_placement_falls_back_to_the_adapters_docstring(monkeypatch):
    monkeypatch.setattr(DiTBackbone, "placement", "")
    assert coverage.placement_of(DiTBackbone()) == (
        "the paper's DiT-XL/2 blocks 1-5 and 7-11 (0-based), taken literally on every DiT/PixArt "
        "(on a model with fewer blocks, the indices that exist)"
    )
