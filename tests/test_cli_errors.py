"""Every user error and common operational failure of the `bigain` verbs ends in one line on stderr:
exit 2 for usage errors, 1 for runtime failures, and no folder is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bigain.cli import main

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_unknown_command_names_itself_and_the_closest_match(capsys):
    code, err = run(capsys, "clasify", "--out", "x")
    assert code == 2 and "'clasify'" in one_line(err) and "did you mean 'classify'" in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["classify", "--limit", "0"], "--limit: 0 is out of range"),
        (["classify", "--method", "nope"], "unknown method 'nope'"),
        (["classify", "--method", "tome", "--ratio", "1.5"], "ratio=1.5"),
        (["classify", "--option", "ratio=0.5"], "--option ratio=0.5 needs a compressing method"),
        (["classify", "--option", "novalue"], "expected key=value"),
        (["classify", "--data", "/nonexistent/data"], "does not exist"),
        (["classify", "--seed", str(2**70)], "--seed"),
        (["generate", "--num", "0"], "--num: 0 is out of range"),
        (["generate", "--method", "nope"], "unknown method 'nope'"),
        (["generate", "--method", "tome", "--ratio", "1.5"], "ratio=1.5"),
        (["generate", "--labels", "a,b"], "--labels"),
        (["generate", "--seed", str(2**70)], "seed="),
        (["generate", "--model", "/nonexistent/model"], "model='/nonexistent/model'"),
        (["demo", "--images", "0"], "--images: 0 is out of range"),
        (["bench", "--model", "nope"], "--model"),
        (["bench", "--methods", "tome:ratio=1.5", "--flops-only"], "ratio=1.5"),
        (["sweep", "--no-such-flag"], "unrecognized arguments"),
        (["train", "--no-such-flag"], "arguments"),
        (["methods", "--no-such-flag"], "unrecognized arguments"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(capsys, tmp_path, argv, needle):
    out = tmp_path / "run"
    if argv[0] in ("classify", "generate"):
        argv = [*argv, "--out", str(out)]
    code, err = run(capsys, *argv)
    line = one_line(err)
    assert code == 2 and needle in line, line
    assert line.startswith(f"bigain {argv[0]}: error: ")
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("verb", ["classify", "generate", "bench"])
def test_cuda_without_cuda_is_one_line(capsys, tmp_path, verb):
    argv = [verb, "--device", "cuda"] + (["--out", str(tmp_path / "r")] if verb != "bench" else [])
    code, err = run(capsys, *argv)
    assert code == 2 and "CUDA is not available" in one_line(err)


@pytest.mark.parametrize("verb", ["classify", "generate"])
def test_out_that_is_a_file_or_read_only(capsys, tmp_path, verb):
    f = tmp_path / "file"
    f.write_text("keep me")
    code, err = run(capsys, verb, "--out", str(f))
    assert code == 2 and "is an existing file" in one_line(err) and f.read_text() == "keep me"
    if os.access("/proc/self", os.W_OK):
        pytest.skip("no read-only folder to test with")
    code, err = run(capsys, verb, "--out", "/proc/self/bigain-run")
    assert code == 2 and "not writable" in one_line(err)


def test_another_process_holding_the_lock_is_one_line_exit_1(capsys, tmp_path):
    from bigain import runs

    out = tmp_path / "gen"
    argv = ["generate", "--num", "2", "--steps", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    with runs.lock(out / ".lock"):
        code, err = run(capsys, *argv)
    assert code == 1 and f"pid {os.getpid()}" in one_line(err)
    # another run in the same folder names the key that differs and both values
    code, err = run(capsys, *argv[:-2], "--seed", "1", "--out", str(out))
    assert code == 2 and "sampler.seed: folder has 0, this run has 1" in one_line(err)


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    code, err = run(capsys, "generate", "--method", "nope", "--out", str(tmp_path / "r"), "--debug")
    assert code == 2 and "Traceback" in err and "unknown method" in err
    monkeypatch.setenv("BIGAIN_DEBUG", "1")
    code, err = run(capsys, "generate", "--method", "nope", "--out", str(tmp_path / "r"))
    assert code == 2 and "Traceback" in err


def test_hub_id_while_offline_is_one_line_exit_1(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bigain.cli",
            "classify",
            "--model",
            "someone/some-model",
            "--out",
            str(tmp_path / "r"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "hub" in one_line(proc.stderr.strip()) and "network" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_methods_listing_shows_the_paper_placement(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert '"blocks": "paper"' in out and '"blocks": null' not in out


def test_help_texts_are_self_contained(capsys):
    for verb in ("classify", "generate", "demo", "bench", "methods"):
        with pytest.raises(SystemExit):
            from bigain import cli

            cli.VERBS[verb](["--help"])
        text = capsys.readouterr().out
        assert "spec §" not in text and "DESIGN.md" not in text and "shared/" not in text, verb


def test_disk_full_is_one_line_exit_1(capsys, tmp_path, monkeypatch):
    import errno

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, err = run(
        capsys, "generate", "--num", "1", "--steps", "1", "--no-progress", "--out", str(tmp_path / "g")
    )
    assert code == 1 and "No space left on device" in one_line(err)


def test_model_errors_say_what_the_folder_is_and_which_loader_fits(tmp_path):
    from bigain import models

    with pytest.raises(FileNotFoundError, match=r"has no config.json, so it is not a diffusers model folder"):
        models.load(tmp_path)
    if "builtin:fashion-cnn" in models.available():
        with pytest.raises(ValueError, match=r"load_classifier\('builtin:fashion-cnn'\)"):
            models.load("builtin:fashion-cnn")
    (tmp_path / "config.json").write_text('{"_class_name": "Mystery"}')
    with pytest.raises(ValueError, match=r"names the class 'Mystery'; expected a denoiser of class"):
        models.load(tmp_path)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["classify", "--method", "none", "--ratio", "0.5"],
            "--ratio 0.5 needs a compressing method, but --method is none",
        ),
        (
            ["classify", "--method", "tome", "--option", "blocks=99"],
            "option blocks=99 is not a list: expected",
        ),
        (
            ["classify", "--method", "tome", "--option", "sx=abc"],
            "option sx='abc' is not valid: expected an integer >= 1",
        ),
        (["generate", "--guidance", "nan"], "--guidance: 'nan' is not a finite number"),
        (
            ["generate", "--method", "none", "--option", "ratio=0.5"],
            "--option ratio=0.5 needs a compressing method",
        ),
    ],
)
def test_messages_name_the_option_the_value_and_what_is_allowed(capsys, tmp_path, argv, needle):
    out = tmp_path / "run"
    code, err = run(capsys, *argv, "--out", str(out))
    assert code == 2 and needle in one_line(err), err
    assert not out.exists()


def test_blocks_error_and_help_show_the_list_syntax(capsys):
    code, err = run(capsys, "classify", "--method", "tome", "--option", "blocks=99", "--out", "unused")
    assert "--option blocks=0,1,2" in err
    for verb in ("classify", "generate"):
        assert main([verb, "--help"]) == 0
        assert "blocks=0,1,2" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("content", "needle"), [("1 2 x3", "entry 3 ('x3') is not an integer"), ("", "is empty")]
)
def test_a_bad_subset_file_is_named_with_its_bad_entry(capsys, tmp_path, content, needle):
    subset = tmp_path / "subset.txt"
    subset.write_text(content)
    code, err = run(capsys, "classify", "--subset", str(subset), "--out", str(tmp_path / "run"))
    assert code == 2 and f"--subset '{subset}'" in one_line(err) and needle in err, err


def test_usage_errors_come_before_any_heavy_import():
    """The parsers are built and a bad value refused without importing torch or diffusers
    (those take seconds); checked in a fresh interpreter."""
    code = (
        "import sys; from bigain.cli import main\n"
        "for argv in (['sweep', '--images', 'x'], ['classify', '--limit', '0', '--out', 'o'],"
        " ['generate', '--guidance', 'nan', '--out', 'o'], ['demo', '--images', 'x'],"
        " ['bench', '--pixels', 'x'], ['train', '--model', 'fashion-dit', '--out', 'o', '--steps', 'x']):\n"
        "    assert main(argv) == 2, argv\n"
        "heavy = sorted(m for m in ('torch', 'diffusers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]


def test_bench_choices_written_for_fast_parsing_match_the_real_ones():
    from bigain.bench.cli import DTYPE_NAMES, MODEL_NAMES
    from bigain.bench.models import MODELS
    from bigain.precision import DTYPES

    assert tuple(MODELS) == MODEL_NAMES and tuple(DTYPES) == DTYPE_NAMES
