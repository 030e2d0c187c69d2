"""A pipeline with several denoisers (Wan 2.2 A14B: the high-noise `transformer` and the low-noise
`transformer_2`) is patched, restored and steered as a whole; a model alone behaves as before."""

from __future__ import annotations

import types
import warnings

import pytest
import torch
from torch import nn

import bigain
from bigain.backbones import resolve_denoiser, resolve_denoisers
from bigain.generate.tiny_wan import tiny_wan_pipeline, tiny_wan_transformer

pytest.importorskip("transformers")

SMALL_VIDEO = {
    "num_frames": 5,
    "height": 32,
    "width": 32,
    "num_inference_steps": 2,
    "max_sequence_length": 16,
}


@pytest.fixture(scope="module")
def pipe():
    """A real ``WanPipeline`` with two tiny experts; the high-noise one takes t >= 900 (the first of
    two steps), the low-noise one the rest."""
    from diffusers import WanPipeline

    base = tiny_wan_pipeline()
    return WanPipeline(
        tokenizer=base.tokenizer,
        text_encoder=base.text_encoder,
        vae=base.vae,
        scheduler=base.scheduler,
        transformer=base.transformer,
        transformer_2=tiny_wan_transformer(seed=7),
        boundary_ratio=0.9,
    )


def inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(
            1, 4, 2, 8, 8, generator=g
        ),  # 2 x 4 x 4 tokens after the (1, 2, 2) patch
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 6, 16, generator=g),
        "return_dict": False,
    }


@torch.no_grad()
def outputs(pipe):
    return [m(**inputs())[0] for m in (pipe.transformer, pipe.transformer_2)]


def test_resolve_denoisers(pipe):
    assert resolve_denoisers(pipe) == [
        ("transformer", pipe.transformer),
        ("transformer_2", pipe.transformer_2),
    ]
    assert resolve_denoiser(pipe) is pipe.transformer
    assert resolve_denoisers(pipe.transformer) == [("", pipe.transformer)]  # a model alone
    same = types.SimpleNamespace(transformer=pipe.transformer, transformer_2=pipe.transformer)
    assert resolve_denoisers(same) == [("transformer", pipe.transformer)]
    with pytest.raises(TypeError, match="expected a diffusers pipeline or model, got SimpleNamespace"):
        resolve_denoisers(types.SimpleNamespace(transformer=None, transformer_2=None))


def test_apply_patches_both_experts_and_remove_restores_them(pipe):
    plain = outputs(pipe)
    report = bigain.apply(pipe, "tome", ratio=0.5)
    try:
        assert report.model == "transformer (WanTransformer3DModel) + transformer_2 (WanTransformer3DModel)"
        names = [b.name for b in report.blocks]
        assert names == ["transformer.blocks.1", "transformer_2.blocks.1"]  # default placement: block 1 of 4
        assert "bigain: tome on transformer (WanTransformer3DModel) + transformer_2" in str(report)
        s1, s2 = pipe.transformer._bigain_patch, pipe.transformer_2._bigain_patch
        assert s1 is not s2 and s1.config.name == s2.config.name == "tome"
        assert bigain.is_patched(pipe)
        for a, b in zip(outputs(pipe), plain):
            assert not torch.equal(a, b)
    finally:
        bigain.remove(pipe)
    assert not bigain.is_patched(pipe)
    assert not hasattr(pipe.transformer, "_bigain_patch") and not hasattr(pipe.transformer_2, "_bigain_patch")
    for a, b in zip(outputs(pipe), plain):
        assert torch.equal(a, b)


def test_a_model_alone_is_patched_alone(pipe):
    report = bigain.apply(pipe.transformer_2, "tome", ratio=0.5)
    try:
        assert report.model == "WanTransformer3DModel" and [b.name for b in report.blocks] == ["blocks.1"]
        assert not bigain.is_patched(pipe.transformer) and bigain.is_patched(pipe.transformer_2)
        assert bigain.is_patched(pipe)  # one expert patched: the pipeline reports it
    finally:
        bigain.remove(pipe)
    assert not bigain.is_patched(pipe.transformer_2)


def test_compressed_restores_both_and_an_earlier_patch(pipe):
    plain = outputs(pipe)
    with bigain.compressed(pipe, "tome", ratio=0.5) as report:
        assert (
            report.num_blocks == 2
            and bigain.is_patched(pipe.transformer)
            and bigain.is_patched(pipe.transformer_2)
        )
    assert not bigain.is_patched(pipe)
    for a, b in zip(outputs(pipe), plain):
        assert torch.equal(a, b)
    bigain.apply(pipe.transformer_2, "todo")  # only the low-noise expert, before
    try:
        with bigain.compressed(pipe, "tome", ratio=0.5):
            assert pipe.transformer_2._bigain_patch.config.name == "tome"
        assert not bigain.is_patched(pipe.transformer)
        assert pipe.transformer_2._bigain_patch.config.name == "todo"
    finally:
        bigain.remove(pipe)


def test_steering_reaches_both_experts(pipe):
    with pytest.raises(ValueError, match="not patched"):
        bigain.set_grid(pipe, (4, 4))
    bigain.apply(pipe, "todo")
    try:
        states = [pipe.transformer._bigain_patch, pipe.transformer_2._bigain_patch]
        with bigain.host_timesteps(pipe, [800.0]), bigain.sample_keys(pipe, torch.tensor([3])):
            for st in states:
                assert st.host_timesteps == (800.0,) and st.keys.tolist() == [3]
        for st in states:
            assert st.host_timesteps is None and st.keys is None
        bigain.set_grid(pipe, (4, 4))
        assert [st.backbone_cache["pinned"] for st in states] == [(4, 4), (4, 4)]
    finally:
        bigain.remove(pipe)


def test_nothing_is_patched_when_one_expert_is_refused(pipe):
    mixed = types.SimpleNamespace(transformer=pipe.transformer, transformer_2=nn.Linear(2, 2))
    with pytest.raises(TypeError, match="bigain does not support Linear"):
        bigain.apply(mixed, "tome")
    assert not bigain.is_patched(pipe.transformer)


def test_run_pipeline_generates_with_both_experts_compressed(pipe):
    from bigain.generate import run_pipeline

    calls: list[tuple[str, bool]] = []  # (expert, patched) of every denoiser forward
    handles = [
        getattr(pipe, k).register_forward_pre_hook(
            lambda m, *_, k=k: calls.append((k, hasattr(m, "_bigain_patch")))
        )
        for k in ("transformer", "transformer_2")
    ]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            merged = run_pipeline(pipe, ["a cat"], "tome", {"ratio": 0.5}, progress=False, **SMALL_VIDEO)
            assert not bigain.is_patched(pipe)
            plain = run_pipeline(pipe, ["a cat"], progress=False, **SMALL_VIDEO)
    finally:
        for h in handles:
            h.remove()
    # classifier-free guidance: two forwards a step; step 1 on the high-noise expert, step 2 on the other
    # classifier-free guidance: two forwards a step; step 1 (t ~ 1000) on the high-noise expert,
    # step 2 (t ~ 750 < 0.9 * 1000) on the low-noise one; patched in the first run, not in the second
    step = [("transformer", True)] * 2 + [("transformer_2", True)] * 2
    assert calls == step + [(k, False) for k, _ in step]
    assert merged[0].shape == plain[0].shape and not (merged[0] == plain[0]).all()
