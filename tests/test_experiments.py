"""The sweep package (`bigain.experiments`): grids, jobs, and the report's tests, on tiny models."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from bigain.experiments import Setting, job_list, paper_settings, run_sweep, select, worker_share
from bigain.experiments.grid import check_grid, generation_folders, infer_baselines
from conftest import TinyTokenizer, make_tiny_vae


def test_paper_grid_is_the_preregistered_one():
    s = paper_settings()
    labels = [x.label for x in s]
    assert labels[0] == "none" and len(labels) == 13 and len(set(labels)) == 13
    by = {x.label: x for x in s}
    for r in (0.5, 0.7):
        assert by[f"bigain-tm-r{r}"].baseline == f"tome-r{r}" and by[f"bigain-tm-r{r}"].family == "primary"
        ref = by[f"bigain-tm-ref-r{r}"]
        assert ref.options["dst_rule"] == "reference" and ref.baseline == f"tome-r{r}"
        assert ref.family == "secondary" and f"sito-r{r}" in by
    for f in (2, 4):
        assert by[f"bigain-td-s{f}"].baseline == f"todo-s{f}" and by[f"bigain-td-s{f}"].family == "primary"
    assert sum(x.family == "primary" for x in s) == 4
    # a declared secondary placement reaches every compressed setting, not none, in its own family
    sec = {x.label: x for x in paper_settings(placement="blocks123")}
    assert len(sec) == 9 and sum(x.family == "secondary" for x in sec.values()) == 4
    assert all(x.options.get("blocks") == [1, 2, 3] for x in sec.values() if x.method != "none")
    assert sec["none"].options == {} and all(x.family in (None, "secondary") for x in sec.values())
    l12 = {x.label: x for x in paper_settings(placement="levels12")}
    assert l12["tome-r0.5"].options == {"ratio": 0.5, "max_downsample": 2}
    assert l12["bigain-td-s4"].options == {"downsample_factor": 4, "downsample_factor_level_2": 4}
    with pytest.raises(ValueError, match="placement"):
        paper_settings(placement="everywhere")
    check_grid(s)
    with pytest.raises(ValueError, match="baselines"):
        check_grid([Setting("a", "tome", baseline="missing")])
    with pytest.raises(ValueError, match="duplicate"):
        check_grid([Setting("a", "none"), Setting("a", "none")])


def test_jobs_seeds_workers_and_baselines():
    s = select(paper_settings(), "none,tome,bigain-tm")
    assert [x.label for x in s] == ["none", "tome-r0.7", "bigain-tm-r0.7", "bigain-tm-ref-r0.7",
                                    "tome-r0.5", "bigain-tm-r0.5", "bigain-tm-ref-r0.5"]  # fmt: skip
    j = job_list(s, ("classify", "generate"), seeds=(0, 1, 2))
    assert len(j) == len(s) * 4 and j[:4] == [("classify", s[0], 0)] + [
        ("generate", s[0], k) for k in (0, 1, 2)
    ]
    shares = [worker_share(j, (i, 3)) for i in range(3)]
    assert sorted(map(repr, sum(shares, []))) == sorted(map(repr, j))
    with pytest.raises(ValueError, match="worker"):
        worker_share(j, (3, 3))
    assert generation_folders("tome-r0.5", (0, 2)) == {0: "tome-r0.5", 2: "tome-r0.5-seed2"}
    hand = infer_baselines([Setting("tome-r0.5", "tome"), Setting("bigain-tm-r0.5", "bigain-tm"),
                            Setting("bigain-td-s2", "bigain-td")])  # fmt: skip
    assert [x.baseline for x in hand] == [None, "tome-r0.5", None]


def _tiny_sd_bundle(prompts):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bigain.classify import bundle_from_pipeline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval()  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=16)
    ).eval()  # fmt: skip
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    pipe = SimpleNamespace(
        unet=unet, text_encoder=text, tokenizer=TinyTokenizer(), vae=make_tiny_vae(), scheduler=sched
    )
    return bundle_from_pipeline(pipe, prompts, name="tiny-sd")


def test_sweep_on_a_tiny_sd_pipeline_and_an_image_folder(tmp_path):
    # an SD-style pipeline (text encoder, U-Net, VAE) classifying an ImageNet-style folder of class folders
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "car"):
        (root / c).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / c / f"{k}.png")
    from bigain.classify.datasets import load_dataset

    data = load_dataset(str(root))
    bundle = _tiny_sd_bundle(data.prompts)
    settings = [Setting("none", "none"), Setting("tome-r0.5", "tome", {"ratio": 0.5}),
                Setting("bigain-tm-r0.5", "bigain-tm", {"ratio": 0.5}, baseline="tome-r0.5", family="primary")]  # fmt: skip
    out = tmp_path / "sweep"
    kw = dict(
        images=6, gen=3, settings=settings, batch_size=16, steps=2, progress=False, speed_batch=2, data=data
    )
    rep = run_sweep(bundle, str(out), **kw)
    rows = {r["setting"]: r for r in rep["rows"]}
    assert [r["images"] for r in rep["rows"]] == [6, 6, 6]
    assert all(r["generation"] is None for r in rep["rows"])  # a latent model: the sweep does not sample it
    assert rows["none"]["speedup"] == 1.0 and rows["tome-r0.5"]["gflops"] > 0
    (t,) = rep["mcnemar"]
    assert (t["candidate"], t["baseline"], t["n"], t["family"]) == (
        "bigain-tm-r0.5",
        "tome-r0.5",
        6,
        "primary",
    )
    assert t["p_holm"] == t["p_exact"] and t["decision"] in ("holds", "does not hold", "cannot tell",
                                                            "cannot tell (no headroom)")  # fmt: skip
    recs = [
        json.loads(x) for x in (out / "classify" / "tome-r0.5" / "results.jsonl").read_text().splitlines()
    ]
    assert sorted(r["id"] for r in recs) == sorted(s.id for s in data.samples)
    cfg = json.loads((out / "sweep_config.json").read_text())
    assert cfg["model"] == "tiny-sd" and cfg["settings"][2]["baseline"] == "tome-r0.5"
    assert "exact McNemar" in (out / "report.md").read_text()


def test_generation_over_seeds_and_the_fid_interval(tiny_folder, tmp_path):
    settings = [Setting("none", "none"), Setting("tome-r0.5", "tome", {"ratio": 0.5}),
                Setting("bigain-tm-r0.5", "bigain-tm", {"ratio": 0.5}, baseline="tome-r0.5", family="primary")]  # fmt: skip
    out = tmp_path / "sweep"
    kw = dict(images=2, gen=4, settings=settings, batch_size=32, gen_batch=4, steps=2, progress=False,
              seeds=(0, 1), fid_boot=20, phases=("generate", "report"))  # fmt: skip
    rep = run_sweep(str(tiny_folder), str(out), **kw)
    for label in ("none", "tome-r0.5", "bigain-tm-r0.5"):
        assert (out / "generate" / label / "manifest.jsonl").is_file()
        assert (out / "generate" / f"{label}-seed1" / "manifest.jsonl").is_file()
    rows = {r["setting"]: r for r in rep["rows"]}
    r = rows["tome-r0.5"]
    fids = [r["generation_seeds"][k]["fashion_fid"] for k in ("0", "1")]
    assert r["fid_seeds"] == 2 and r["fid_mean"] == pytest.approx(np.mean(fids))
    assert r["fid_min"] == min(fids) and r["fid_max"] == max(fids) and fids[0] != fids[1]
    (t,) = rep["fid_tests"]
    assert (t["candidate"], t["baseline"], t["seeds"]) == ("bigain-tm-r0.5", "tome-r0.5", [0, 1])
    assert t["mean_b"] == pytest.approx(r["fid_mean"]) and t["low"] <= t["high"]
    assert t["decision"] in ("holds", "does not hold", "cannot tell")
    assert rep["mcnemar"] == []  # no classification phase ran


def test_combine_corrects_families_across_runs_and_counts_missing_tests():
    from bigain.experiments.report import combine
    from bigain.metrics.stats import holm

    def t(cand, base, fam, p, diff=-0.03, high=-0.01):
        return {"candidate": cand, "baseline": base, "family": fam, "p_exact": p, "diff": diff,
                "diff_low": diff - 0.02, "diff_high": high, "headroom": 0.2, "n": 2000}  # fmt: skip

    a = {
        "mcnemar": [
            t("bigain-tm-r0.7", "tome-r0.7", "primary", 0.001),
            t("bigain-td-s2", "todo-s2", "primary", 0.04),
        ]
    }
    b = {"mcnemar": [t("bigain-tm-r0.7", "tome-r0.7", "primary", 0.02, diff=0.05, high=0.08)]}
    grid = [x for x in paper_settings() if x.label in ("none", "tome-r0.7", "bigain-tm-r0.7")]
    out = combine({"a": a, "b": b}, expected={"a": grid, "b": grid, "c": grid})
    acc = {(x["run"], x["candidate"]): x for x in out["accuracy"] if x["family"] == "primary"}
    assert set(acc) == {
        ("a", "bigain-tm-r0.7"),
        ("a", "bigain-td-s2"),
        ("b", "bigain-tm-r0.7"),
        ("c", "bigain-tm-r0.7"),
    }
    want = holm([0.001, 0.04, 0.02, 1.0])  # the missing run c counts with p = 1
    assert [acc[k]["p_holm"] for k in sorted(acc, key=list(acc).index)] == pytest.approx(want)
    assert acc[("a", "bigain-tm-r0.7")]["decision"] == "does not hold"  # significant loss
    assert acc[("b", "bigain-tm-r0.7")]["decision"] == "cannot tell"  # 0.02 * 3 = 0.06 after Holm
    assert acc[("c", "bigain-tm-r0.7")]["decision"] == "cannot tell (missing)"
