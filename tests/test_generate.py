"""Sampling and resumable generation runs on a tiny random DiT bundle."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import bigain
from bigain.classify.testing import tiny_dit_bundle
from bigain.generate import SAMPLERS, SamplerConfig, generate_run, generation_options, read_png, sample


@pytest.fixture(scope="module")
def bundle():
    return tiny_dit_bundle(size=16, layers=2)


def test_images_do_not_depend_on_batching(bundle):
    labels = [0, 1, 2, 3, 4]
    cfg = SamplerConfig("ddim", steps=3, guidance=2.0, batch_size=5)
    whole = sample(bundle, labels, cfg, progress=False)
    parts = torch.cat(
        [
            sample(bundle, labels[:2], SamplerConfig("ddim", 3, 2.0, batch_size=2), progress=False),
            sample(
                bundle, labels[2:], SamplerConfig("ddim", 3, 2.0, batch_size=2), progress=False, first_index=2
            ),
        ]
    )
    assert whole.shape == (5, *bundle.sample_shape)
    torch.testing.assert_close(whole, parts, atol=1e-5, rtol=0)
    again = sample(bundle, labels, cfg, progress=False)
    assert torch.equal(whole, again)
    other_seed = sample(bundle, labels, SamplerConfig("ddim", 3, 2.0, seed=1, batch_size=5), progress=False)
    assert not torch.allclose(whole, other_seed)


def test_guidance_formula(bundle):
    """guidance 0 keeps only the null-class prediction, so the label cannot matter; guidance 1 has no null pass."""
    g0 = [sample(bundle, [y] * 2, SamplerConfig("ddim", 3, 0.0), progress=False) for y in (1, 7)]
    torch.testing.assert_close(g0[0], g0[1], atol=1e-6, rtol=0)
    g1 = [sample(bundle, [y] * 2, SamplerConfig("ddim", 3, 1.0), progress=False) for y in (1, 7)]
    assert not torch.allclose(g1[0], g1[1])
    null_run = sample(bundle, [1, 1], SamplerConfig("ddim", 3, 1.0), progress=False)
    torch.testing.assert_close(null_run, g1[0])


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_runs(bundle, name):
    x = sample(bundle, [0, 3], SamplerConfig(name, steps=3, guidance=3.0), progress=False)
    assert x.shape == (2, *bundle.sample_shape) and torch.isfinite(x).all()
    assert x.min() >= -1 and x.max() <= 1


def test_bad_sampler_options():
    with pytest.raises(ValueError, match="sampler"):
        SamplerConfig("heun")
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="guidance"):
        SamplerConfig(guidance=-1)


def test_labels_out_of_range(bundle):
    with pytest.raises(ValueError, match="labels"):
        sample(bundle, [bundle.num_classes], SamplerConfig(steps=1), progress=False)


def test_generation_defaults_per_method():
    assert generation_options("bigain-td", {"downsample_factor": 2})["alpha_schedule"] == (0.8, 1.2)
    assert "alpha_schedule" not in generation_options("bigain-td", {"alpha": 0.9})
    assert generation_options("todo", {"downsample_factor": 2}) == {"downsample_factor": 2}


def test_run_resumes_after_a_kill(bundle, tmp_path):
    labels = [0, 1, 2, 3, 4, 5]
    cfg = SamplerConfig("ddim", steps=2, guidance=3.0, batch_size=2)
    full = generate_run(
        bundle, tmp_path / "a", labels, "tome", {"ratio": 0.5, "seed": 3}, cfg, progress=False
    )
    assert not bigain.is_patched(bundle.denoiser)
    assert (tmp_path / "a" / "grid.png").is_file()
    # a second run cut after two images, with a torn last manifest line
    part = tmp_path / "b"
    generate_run(bundle, part, labels[:2], "tome", {"ratio": 0.5, "seed": 3}, cfg, progress=False)
    (part / "config.json").unlink()
    with open(part / "manifest.jsonl", "a") as f:
        f.write('{"index": 2, "lab')
    resumed = generate_run(bundle, part, labels, "tome", {"ratio": 0.5, "seed": 3}, cfg, progress=False)
    assert torch.equal(full, resumed)
    recs = [json.loads(x) for x in (part / "manifest.jsonl").read_text().splitlines() if x.endswith("}")]
    assert sorted(r["index"] for r in recs) == list(range(6))
    assert torch.equal(read_png(part / recs[0]["file"]), full[recs[0]["index"]])
    with pytest.raises(
        ValueError, match=r"options.ratio: folder has 0.5, this run has 0.7; options.seed: folder"
    ):
        generate_run(bundle, part, labels, "tome", {"ratio": 0.7}, cfg, progress=False)


def test_run_pipeline_on_a_dit_pipeline():
    """run_pipeline applies the method around the user's own pipeline, with the paper's DiT defaults."""
    from diffusers import DDIMScheduler, DDPMScheduler, DiTPipeline, DiTTransformer2DModel

    from bigain.generate import pipeline_defaults, run_pipeline
    from conftest import make_tiny_vae

    vae = make_tiny_vae(sample_size=32)
    dit = DiTTransformer2DModel(  # DiTPipeline's null class is 1000, as in DiT-XL/2
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        sample_size=16,
        patch_size=2,
        num_embeds_ada_norm=1000,
    ).eval()
    pipe = DiTPipeline(transformer=dit, vae=vae, scheduler=DDPMScheduler())
    assert pipeline_defaults(pipe) == {"num_inference_steps": 50, "guidance_scale": 4.0, "scheduler": "ddim"}
    base = run_pipeline(pipe, [1, 2], "none", num_inference_steps=2, output_type="np")
    assert isinstance(pipe.scheduler, DDIMScheduler) and not bigain.is_patched(pipe.transformer)
    direct = pipe(
        class_labels=[1, 2],
        generator=torch.Generator().manual_seed(0),
        num_inference_steps=2,
        guidance_scale=4.0,
        output_type="np",
    ).images
    base = np.stack(base)
    assert base.shape[0] == 2 and np.array_equal(base, direct)
    merged = run_pipeline(pipe, [1, 2], "tome", {"ratio": 0.5}, num_inference_steps=2, output_type="np")
    assert not bigain.is_patched(pipe.transformer) and not np.array_equal(np.stack(merged), base)


def test_run_is_single_writer_and_validates_before_writing(bundle, tmp_path):
    from bigain import runs

    cfg = SamplerConfig("ddim", steps=1, guidance=3.0, batch_size=2)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="sx=100"):  # only the model can tell: checked before any write
        generate_run(bundle, out, [0, 1], "tome", {"sx": 100}, cfg, progress=False)
    assert not out.exists()
    generate_run(bundle, out, [0, 1], "tome", {"ratio": 0.5}, cfg, progress=False)
    with runs.lock(out / ".lock"):  # another process is writing this folder
        with pytest.raises(runs.RunLockedError, match=f"pid {os.getpid()}"):
            generate_run(bundle, out, [0, 1], "tome", {"ratio": 0.5}, cfg, progress=False)
    # an explicit default is the same run
    generate_run(bundle, out, [0, 1], "tome", {"ratio": 0.5, "seed": 0}, cfg, progress=False)


def test_manifest_lines_that_are_not_records_are_regenerated(bundle, tmp_path):
    cfg = SamplerConfig("ddim", steps=1, guidance=3.0, batch_size=3)
    labels = [0, 1, 2]
    full = generate_run(bundle, tmp_path / "a", labels, "none", {}, cfg, progress=False)
    out = tmp_path / "b"
    generate_run(bundle, out, labels, "none", {}, cfg, progress=False)
    lines = (out / "manifest.jsonl").read_text().splitlines()
    (out / "manifest.jsonl").write_text("\n".join([lines[0], "7", '{"index": "x", "file": 3}']) + "\n")
    (out / "images" / "000000.png").unlink()  # a record whose image is gone is redone too
    with pytest.warns(UserWarning, match="not valid records"):
        again = generate_run(bundle, out, labels, "none", {}, cfg, progress=False)
    assert torch.equal(full, again)


def test_nonfinite_images_are_recorded_as_failed(bundle, tmp_path, monkeypatch):
    import bigain.generate.run as run_mod

    real = run_mod.sample

    def half_nan(b, labels, cfg, **kw):
        x = real(b, labels, cfg, **kw)
        x[0] = float("nan")
        return x

    monkeypatch.setattr(run_mod, "sample", half_nan)
    cfg = SamplerConfig("ddim", steps=1, guidance=3.0, batch_size=2)
    with pytest.raises(run_mod.NonFiniteImageError, match="1 of 2 images"):
        generate_run(bundle, tmp_path, [0, 1], "none", {}, cfg, progress=False)
    recs = [
        json.loads(x, parse_constant=pytest.fail)
        for x in (tmp_path / "manifest.jsonl").read_text().splitlines()
    ]
    assert [(r["index"], bool(r.get("error"))) for r in recs] == [(0, True), (1, False)]
    monkeypatch.setattr(run_mod, "sample", real)
    images = generate_run(bundle, tmp_path, [0, 1], "none", {}, cfg, progress=False)  # retried
    assert images.shape[0] == 2 and torch.isfinite(images).all()
