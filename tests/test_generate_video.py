"""Video generation (`bigain generate --model PIPELINE_FOLDER`, `run_pipeline(..., out_dir=...)`) on a
tiny random Wan 2.1 pipeline saved to and loaded from disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from video_fixtures import SMALL_VIDEO, tiny_wan_fixture, tiny_wan_folder_fixture  # noqa: F401

import bigain
from bigain.cli import main
from bigain.generate import is_video_pipeline, run_pipeline
from bigain.generate.video import contact_row, read_mp4, to_uint8_video

CLI_SMALL = ["--steps", "2", "--frames", "5", "--height", "32", "--width", "32"]


def cli(capsys, *argv):
    code = main(["generate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def records(folder):
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def sheet(folder, i):
    return np.asarray(Image.open(folder / "sheets" / f"{i:06d}.png"))


def bigain_supports(pipe) -> bool:
    """Whether bigain.apply accepts this pipeline's denoiser (Wan: once its adapter exists)."""
    try:
        bigain.inspect_model(pipe)
    except TypeError:
        return False
    return True


def test_cli_writes_mp4s_and_a_contact_sheet_and_resumes(tiny_wan_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", tiny_wan_folder, "--prompt", "a cat", "--prompt", "a dog", "--num", "3", *CLI_SMALL]
    code, stdout, err = cli(capsys, *argv, "--seed", "1", "--out", out)  # progress bars on
    assert code == 0, err
    assert "wrote 3 videos (mp4; 0 resumed)" in stdout and "generating 3 videos" in err
    recs = records(out)
    assert [(r["index"], r["prompt"], r["seed"]) for r in recs] == [
        (0, "a cat", 1),
        (1, "a dog", 2),
        (2, "a cat", 3),
    ]
    videos = [read_mp4(out / r["file"]) for r in recs]
    assert all(v.shape == (5, 32, 32, 3) for v in videos)
    assert not np.array_equal(sheet(out, 0), sheet(out, 1))  # another prompt and seed
    # the contact sheet: one row per sample of 5 frames (all of them, as there are fewer than 8)
    whole = np.asarray(Image.open(out / "contact_sheet.png"))
    rows = [sheet(out, i) for i in range(3)]
    assert rows[0].shape == (32 + 4, 5 * 34 + 2, 3)
    assert np.array_equal(whole, np.concatenate(rows))
    # the MP4 holds the frames of the sheet, up to H.264's loss
    first = rows[0][2:34, 2:34].astype(int)
    assert np.abs(videos[0][0].astype(int) - first).mean() < 8
    # a rerun resumes: nothing regenerated, nothing rewritten
    stamps = [(out / r["file"]).stat().st_mtime_ns for r in recs]
    code, stdout, err = cli(capsys, *argv, "--seed", "1", "--no-progress", "--out", out)
    assert code == 0 and "wrote 3 videos (mp4; 3 resumed)" in stdout
    assert [(out / r["file"]).stat().st_mtime_ns for r in recs] == stamps and len(records(out)) == 3
    assert json.loads((out / "summary.json").read_text())["generated_now"] == 0
    # other settings in the same folder are refused in one line naming them
    code, _, err = cli(capsys, *argv, "--seed", "2", "--no-progress", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "seed: folder has 1, this run has 2" in err


def test_resume_after_an_interruption_equals_one_uninterrupted_run(tiny_wan, tmp_path, monkeypatch):
    """A run stopped after its first sample (and a torn record line) finishes the rest only; every
    sample is what one uninterrupted call gives, since sample i is seeded with seed + i."""
    import bigain.generate.pipeline as pl

    prompts = ["a red ball", "waves"]
    whole = run_pipeline(tiny_wan, prompts, num=3, seed=5, **SMALL_VIDEO)  # in memory
    assert is_video_pipeline(tiny_wan) and len(whole) == 3 and whole[0].shape == (5, 32, 32, 3)
    real, calls = pl._generate_video, []

    def stop_at_second(pipe, prompt, seed, kwargs):
        calls.append(seed)
        if len(calls) == 2:
            raise KeyboardInterrupt  # what the process sees of a Ctrl-C; a kill -9 leaves the same files
        return real(pipe, prompt, seed, kwargs)

    monkeypatch.setattr(pl, "_generate_video", stop_at_second)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny_wan, prompts, out_dir=out, num=3, seed=5, progress=False, **SMALL_VIDEO)
    assert [r["index"] for r in records(out)] == [0]
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"index": 1, "prom')  # a record cut by the kill
    calls.clear()
    monkeypatch.setattr(pl, "_generate_video", lambda *a: calls.append(a[2]) or real(*a))
    summary = run_pipeline(tiny_wan, prompts, out_dir=out, num=3, seed=5, progress=False, **SMALL_VIDEO)
    assert calls == [6, 7]  # samples 1 and 2 only
    assert summary["resumed"] == 1 and summary["generated_now"] == 2 and summary["finished"] == 3
    assert summary["files"] == [f"samples/{i:06d}.mp4" for i in range(3)]
    assert sorted(r["index"] for r in records(out)) == [0, 1, 2]
    for i in range(3):
        assert np.array_equal(sheet(out, i), np.asarray(contact_row(whole[i])))


def test_sigkill_midway_loses_no_finished_sample(tiny_wan_folder, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--model", tiny_wan_folder, "--prompt", "a cat", "--num", "4", *CLI_SMALL, "--no-progress"]
    argv += ["--out", out]
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1"}
    code = f"import sys; from bigain.cli import main; sys.exit(main({['generate', *map(str, argv)]!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if manifest.exists() and manifest.read_bytes().count(b"\n") >= 1:
                break
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {r["index"] for r in records(out)}
    assert 1 <= len(finished) < 4, "the child was not killed mid-run"
    stamps = {i: (out / f"samples/{i:06d}.mp4").stat().st_mtime_ns for i in finished}
    code, stdout, err = cli(capsys, *argv)
    assert code == 0, err
    assert f"wrote 4 videos (mp4; {len(finished)} resumed)" in stdout
    assert {i: (out / f"samples/{i:06d}.mp4").stat().st_mtime_ns for i in finished} == stamps
    assert sorted(r["index"] for r in records(out)) == list(range(4))


def test_png_frames_and_one_warning_line_without_pyav(tiny_wan_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now fails, as when it is not installed
    out = tmp_path / "run"
    code, stdout, err = cli(
        capsys, "--model", tiny_wan_folder, "--prompt", "a cat", *CLI_SMALL, "--no-progress", "--out", out
    )
    assert code == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning == [
        "bigain generate: warning: PyAV is not installed: writing PNG frames instead of MP4 "
        '(pip install "bigain[video]" (PyAV) to get MP4 files)'
    ]
    assert "wrote 1 video (png" in stdout
    frames = sorted(p.name for p in (out / "samples" / "000000").iterdir())
    assert frames == [f"frame_{i:04d}.png" for i in range(5)] and records(out)[0]["file"] == "samples/000000"
    pngs = np.stack([np.asarray(Image.open(out / "samples" / "000000" / f)) for f in frames])
    assert np.array_equal(np.asarray(contact_row(pngs)), sheet(out, 0))  # lossless: the sheet's own frames


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--prompt", "x", "--frames", "4"],
            "frames=4 does not fit WanPipeline: it makes 4k + 1 frames (e.g. 1 or 5)",
        ),
        (
            ["--prompt", "x", "--height", "40"],
            "height=40 does not fit WanPipeline: expected a multiple of 16",
        ),
        (["--prompt", "x", "--seed", "-1"], "seed=-1 is out of range"),
        (
            ["--prompt", "x", "--labels", "1,2"],
            "--labels: options of class-conditional models, not of WanPipeline",
        ),
        (["--prompt", "x", "--method", "tome", "--ratio", "2"], "ratio=2"),
        ([], "a video pipeline needs --prompt TEXT (repeatable) or --prompts FILE"),
        (["--prompts", "/nonexistent/prompts.txt"], "--prompts /nonexistent/prompts.txt: no such file"),
    ],
)
def test_settings_are_checked_before_anything_is_written(tiny_wan_folder, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    code, _, err = cli(capsys, "--model", tiny_wan_folder, *extra, "--no-progress", "--out", out)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_video_options_on_a_class_model_are_refused(tiny_folder, tmp_path, capsys):
    code, _, err = cli(capsys, "--model", tiny_folder, "--frames", "5", "--out", tmp_path / "r")
    assert code == 2 and "--frames: options of video pipelines" in err


def test_prompts_file_cycles_over_samples(tmp_path, capsys):
    """Also runs the README's `python -m bigain.generate.tiny_wan FOLDER`."""
    from bigain.generate import tiny_wan

    tiny_wan_folder = tmp_path / "tiny-wan"
    assert tiny_wan.main([str(tiny_wan_folder)]) == 0
    assert f"wrote a tiny random Wan pipeline to {tiny_wan_folder}" in capsys.readouterr().out
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\n  a dog  \n")
    out = tmp_path / "run"
    argv = ["--model", tiny_wan_folder, "--prompts", prompts, "--num", "3", "--frames", "1", "--steps", "1"]
    code, _, err = cli(capsys, *argv, "--height", "16", "--width", "16", "--no-progress", "--out", out)
    assert code == 0, err
    assert [r["prompt"] for r in records(out)] == ["a cat", "a dog", "a cat"]
    assert read_mp4(out / "samples" / "000002.mp4").shape == (1, 16, 16, 3)


def test_compressed_method_on_wan(tiny_wan_folder, tiny_wan, tmp_path, capsys):
    """A compressed method on Wan runs at its default placement and differs from `none`; the
    pipeline is left unpatched."""
    out = tmp_path / "tome"
    argv = ["--model", tiny_wan_folder, "--prompt", "a cat", *CLI_SMALL, "--no-progress"]
    code, _, err = cli(capsys, *argv, "--method", "tome", "--ratio", "0.5", "--out", out)
    assert bigain_supports(tiny_wan)
    assert code == 0, err
    code, _, err = cli(capsys, *argv, "--out", tmp_path / "none")
    assert code == 0, err
    assert not np.array_equal(sheet(out, 0), sheet(tmp_path / "none", 0))
    merged = run_pipeline(tiny_wan, ["a cat"], "tome", {"ratio": 0.5}, **SMALL_VIDEO)
    assert not bigain.is_patched(tiny_wan.transformer)
    plain = run_pipeline(tiny_wan, ["a cat"], **SMALL_VIDEO)
    assert not np.array_equal(to_uint8_video(merged[0]), to_uint8_video(plain[0]))
