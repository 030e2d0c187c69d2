"""`bigain sweep` end to end on a tiny saved model, plus its pure helpers (the demo: test_demo.py)."""

from __future__ import annotations

import json

import pytest
import torch

from bigain.sweep import Setting, default_settings, main, pareto_front, run_sweep, sweep_jobs


def test_default_grid_and_worker_split():
    s = default_settings()
    labels = [x.label for x in s]
    assert labels[0] == "none" and len(set(labels)) == len(labels)
    for m in ("tome", "bigain-tm", "sito"):
        assert {f"{m}-r0.5", f"{m}-r0.7"} <= set(labels)
    for m in ("todo", "bigain-td"):
        assert {f"{m}-s2", f"{m}-s4"} <= set(labels)
    jobs = sweep_jobs(s, ("classify", "generate"))
    # per-call settings are classifier-only; every other setting has both phases
    assert len(jobs) == 2 * len(s) - sum(x.pattern == "per-call" for x in s)
    shares = [sweep_jobs(s, ("classify", "generate"))[i::3] for i in range(3)]
    flat = [(p, x.label) for share in shares for p, x in share]
    assert sorted(flat) == sorted((p, x.label) for p, x in jobs) and len(set(flat)) == len(flat)


def test_pareto_front_brute_force():
    g = torch.Generator().manual_seed(0)
    pts = [tuple(v) for v in torch.rand(40, 2, generator=g).tolist()]
    for maximize in (True, False):
        want = []
        for i, (x, y) in enumerate(pts):
            better = [
                j
                for j, (x2, y2) in enumerate(pts)
                if j != i and x2 >= x and ((y2 >= y) if maximize else (y2 <= y))
            ]
            if not better:
                want.append(i)
        assert pareto_front(pts, maximize) == want


def test_tiny_sweep_end_to_end(tiny_folder, tmp_path):
    settings = [Setting("none", "none")] + [
        Setting(f"{m}-r0.5", m, {"ratio": 0.5}) for m in ("tome", "bigain-tm")
    ]
    out = tmp_path / "sweep"
    kw = dict(
        images=2, gen=3, settings=settings, batch_size=32, gen_batch=3, steps=2, progress=False, speed_batch=4
    )
    rep = run_sweep(str(tiny_folder), str(out), **kw)
    for f in ("report.md", "summary.json", "speed.json", "accuracy_vs_speedup.png", "fid_vs_speedup.png"):
        assert (out / f).is_file(), f
    rows = {r["setting"]: r for r in rep["rows"]}
    assert set(rows) == {"none", "tome-r0.5", "bigain-tm-r0.5"}
    for r in rows.values():
        assert r["images"] == 2 and 0 <= r["accuracy"] <= 1
        assert r["generation"]["n"] == 3 and r["generation"]["complete"]
        assert r["generation"]["fashion_fid"] >= 0 and r["speedup"] > 0
        assert r["gflops"] > 0
    assert rows["none"]["speedup"] == 1.0 and rows["tome-r0.5"]["flops_reduction"] > 0
    (pair,) = rep["mcnemar"]
    assert (pair["candidate"], pair["baseline"], pair["n"]) == ("bigain-tm-r0.5", "tome-r0.5", 2)
    report = (out / "report.md").read_text()
    assert "bigain-tm-r0.5" in report and "McNemar" in report
    # rerunning resumes: nothing is scored or generated twice
    lines = (out / "classify" / "tome-r0.5" / "results.jsonl").read_text().splitlines()
    manifest = (out / "generate" / "tome-r0.5" / "manifest.jsonl").read_text()
    rep2 = run_sweep(str(tiny_folder), str(out), **{**kw, "phases": ("classify", "generate", "report")})
    assert (out / "classify" / "tome-r0.5" / "results.jsonl").read_text().splitlines() == lines
    assert (out / "generate" / "tome-r0.5" / "manifest.jsonl").read_text() == manifest
    assert [r["accuracy"] for r in rep2["rows"]] == [r["accuracy"] for r in rep["rows"]]
    assert json.loads((out / "summary.json").read_text())["rows"][0]["setting"] == "none"
    # a report-only run (e.g. on another machine) must not rewrite the description of the runs
    config = (out / "sweep_config.json").read_text()
    run_sweep(str(tiny_folder), str(out), **{**kw, "phases": ("report",), "dtype": "bf16", "steps": 7})
    assert (out / "sweep_config.json").read_text() == config


def test_cli_rejects_bad_arguments(capsys):
    for argv in (["--phases", "classify,bogus"], ["--worker", "3/2"], ["--methods", "nothing-like-this"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "error" in capsys.readouterr().err


def test_cli_verbs(tiny_folder, tmp_path, capsys):
    from bigain.cli import main as cli

    assert cli(["no-such-verb"]) == 2
    assert cli(["methods"]) == 0
    printed = capsys.readouterr().out
    for name in ("none", "tome", "bigain-tm", "todo", "bigain-td", "sito"):
        assert f"{name}:" in printed
    out = tmp_path / "gen"
    argv = [
        "generate",
        "--model",
        str(tiny_folder),
        "--method",
        "bigain-td",
        "--option",
        "downsample_factor=2",
    ]
    assert cli([*argv, "--num", "3", "--steps", "2", "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["options"] == {
        "downsample_factor": 2,
        "alpha_schedule": [0.8, 1.2],
    }  # the paper's generation default
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 3 and (out / "grid.png").is_file()
