"""`bigain sweep` checks all of its settings before any work or write, and a job that fails at run
time ends the sweep with exit status 1 while its failure record does not outlive a corrected rerun."""

from __future__ import annotations

import json

import pytest

import bigain.classify.runner as runner
from bigain.cli import main
from bigain.experiments.grid import Setting
from bigain.experiments.jobs import SweepFailed, run_sweep


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--ratios", "0.5,1.5"], "--ratios '0.5,1.5': setting tome-r1.5: option ratio=1.5 is out of range"),
        (["--factors", "2,0"], "--factors '2,0': setting todo-s0"),
        (["--images", "0", "--gen", "0"], "--images 0 with the classify phase"),
        (["--gen", "0", "--phases", "generate"], "--gen 0 with the generate phase"),
        (["--phases", ""], "--phases '' names no phase"),
        (["--phases", "classify,classify"], "repeats a phase"),
        (["--methods", ""], "--methods '' names no setting"),
        (["--methods", "tome,tomee"], "['tomee'] match no setting"),
        (["--guidance", "nan"], "--guidance: 'nan' is not a finite number"),
        (["--steps", "0"], "--steps: 0 is out of range"),
        (["--ratios", "0.5,nan"], "--ratios '0.5,nan': expected finite"),
        (["--seeds", "1,1"], "--seeds '1,1' repeats a value"),
        (["--deadline-minutes", "-1"], "--deadline-minutes -1.0"),
        (["--fid-features", "inception"], "--fid-features 'inception'"),
    ],
)
def test_bad_sweep_settings_end_in_one_line_before_any_write(capsys, tmp_path, argv, needle):
    out = tmp_path / "sweep"
    code = main(["sweep", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err
    assert not out.exists()


def test_run_sweep_refuses_an_empty_grid_and_unknown_phases(tmp_path):
    with pytest.raises(ValueError, match="settings is empty"):
        run_sweep("builtin:fashion-dit", str(tmp_path / "a"), settings=[], phases=("classify",))
    with pytest.raises(ValueError, match="phases"):
        run_sweep("builtin:fashion-dit", str(tmp_path / "b"), phases=())
    with pytest.raises(ValueError, match="setting tome-r2: option ratio=2"):
        run_sweep(
            "builtin:fashion-dit", str(tmp_path / "c"), settings=[Setting("tome-r2", "tome", {"ratio": 2})]
        )
    assert not any(tmp_path.iterdir())


def test_a_failed_job_fails_the_sweep_and_its_record_goes_with_the_corrected_rerun(
    tiny_folder, tmp_path, monkeypatch, capsys
):
    real = runner.run_classification

    def broken_for_tome(bundle, dataset, out_dir, **kw):
        if kw.get("method") == "tome":
            raise RuntimeError("disk full (simulated)")
        return real(bundle, dataset, out_dir, **kw)

    settings = [Setting("none", "none"), Setting("tome-r0.5", "tome", {"ratio": 0.5})]
    kw = dict(
        images=1, gen=1, settings=settings, batch_size=64, steps=1, progress=False, phases=("classify",)
    )
    out = tmp_path / "sweep"
    monkeypatch.setattr(runner, "run_classification", broken_for_tome)
    with pytest.raises(
        SweepFailed, match=r"1 sweep job\(s\) failed: classify tome-r0.5 \(RuntimeError: disk full"
    ):
        run_sweep(str(tiny_folder), str(out), **kw)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "[sweep] classify tome-r0.5 failed: RuntimeError: disk full" in err
    (rec,) = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert rec["setting"] == "tome-r0.5" and "Traceback" in rec["traceback"]

    monkeypatch.setattr(runner, "run_classification", real)  # the cause is fixed: the rerun succeeds
    run_sweep(str(tiny_folder), str(out), **kw)
    assert not (out / "failures.jsonl").exists()
    assert (out / "classify" / "tome-r0.5" / "summary.json").is_file()


def test_sweep_cli_exits_1_when_a_job_fails(tiny_folder, tmp_path, monkeypatch, capsys):
    def always_fails(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(runner, "run_classification", always_fails)
    argv = ["sweep", "--model", str(tiny_folder), "--out", str(tmp_path / "s"), "--methods", "none"]
    code = main([*argv, "--images", "1", "--phases", "classify", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("bigain sweep: error: 1 sweep job(s) failed: classify none"), err
