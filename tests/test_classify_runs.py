"""Classification runs: records, resume after SIGKILL, config checks, shards, multi-process, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bigain.classify import merge_results, read_records, run_classification
from bigain.classify.datasets import ImageFolderDataset, TensorDataset, load_dataset
from bigain.classify.runner import ConfigMismatchError
from bigain.classify.testing import tiny_dit_bundle, toy_bundle

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RUN = {"n_samples": (2, 4), "to_keep": (2, 1), "batch_size": 8, "progress": False}


# tiny forwards are dominated by thread synchronisation on a busy machine: one thread
pytestmark = pytest.mark.usefixtures("one_thread")


def make_data(n: int = 10) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    images = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
    return TensorDataset(images, [i % 6 for i in range(n)], [f"c{k}" for k in range(6)], name="toy")


def make_bundle():
    # a pure-torch model: subprocesses start fast (no diffusers import); DiT runs are tested below
    return toy_bundle(num_classes=6, size=16, seed=0)


def result_set(out: Path) -> set:
    """(id, prediction, errors) of every record; errors rounded to 6 significant digits so that
    last-bit differences of batched kernels between batch compositions do not matter."""
    recs, _, _ = read_records(out / "results.jsonl")
    out_set = set()
    for r in recs:
        errs = tuple(
            (tuple(st["classes"]), tuple(f"{e:.6g}" for row in st["errors"] for e in row))
            for st in r["stages"]
        )
        out_set.add((r["id"], r["prediction"], errs))
    assert len(out_set) == len(recs)
    return out_set


def ids_of(out: Path) -> list[str]:
    recs, _, _ = read_records(out / "results.jsonl")
    return [r["id"] for r in recs]


def strip_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("timing", "images_per_s")}


def _child_main(out: str, n: str) -> None:
    """Entry point of the subprocess that gets killed (see test_resume_after_sigkill)."""
    torch.set_num_threads(1)
    bundle = make_bundle()
    forward = bundle.denoiser.forward

    def slow_forward(*args, **kwargs):  # leave time to kill the process mid-run
        time.sleep(0.01)
        return forward(*args, **kwargs)

    bundle.denoiser.forward = slow_forward
    run_classification(bundle, make_data(int(n)), out, images_per_group=1, **RUN)


# --------------------------------------------------------------------------------------------
def test_run_writes_records_summary_and_resumes(tmp_path):
    bundle, data = make_bundle(), make_data(6)
    out = tmp_path / "run"
    s1 = run_classification(bundle, data, out, limit=4, **RUN)
    assert s1["num_images"] == 4 and s1["complete"] and s1["expected"] == 4
    assert (out / "config.json").is_file() and (out / "summary.md").is_file()
    assert json.loads((out / "summary.json").read_text())["num_images"] == 4
    recs, _, _ = read_records(out / "results.jsonl")
    r = recs[0]
    assert set(r) >= {"id", "label", "prediction", "stages", "seconds", "ranking"}
    assert [len(st["classes"]) for st in r["stages"]] == [6, 2]
    assert len(s1["confusion_matrix"]) == 6 and sum(map(sum, s1["confusion_matrix"])) == 4
    # resume with a larger limit: only the new images are scored
    s2 = run_classification(bundle, data, out, limit=6, **RUN)
    assert s2["num_images"] == 6 and ids_of(out) == [f"{i:06d}" for i in range(6)]
    before = result_set(out)
    run_classification(bundle, data, out, limit=6, **RUN)  # nothing left to do
    assert result_set(out) == before and len(ids_of(out)) == 6


def test_config_mismatch_is_an_error(tmp_path):
    bundle, data = make_bundle(), make_data(2)
    run_classification(bundle, data, tmp_path, **RUN)
    with pytest.raises(ConfigMismatchError, match="seed"):
        run_classification(bundle, data, tmp_path, **{**RUN, "seed": 1})
    with pytest.raises(ConfigMismatchError, match="method"):
        run_classification(bundle, data, tmp_path, method="tome", method_options={"ratio": 0.5}, **RUN)
    # batch size and limit are not part of the run's identity
    run_classification(bundle, data, tmp_path, limit=1, **{**RUN, "batch_size": 3})


def test_truncated_last_line_is_dropped(tmp_path):
    bundle, data = make_bundle(), make_data(4)
    ref = tmp_path / "ref"
    run_classification(bundle, data, ref, **RUN)
    out = tmp_path / "cut"
    run_classification(bundle, data, out, limit=2, **RUN)
    with open(out / "results.jsonl", "ab") as f:  # a write cut by SIGKILL
        f.write(b'{"index": 2, "id": "000002", "label": 2, "predic')
    recs, valid, size = read_records(out / "results.jsonl")
    assert len(recs) == 2 and valid < size
    run_classification(bundle, data, out, **RUN)
    assert result_set(out) == result_set(ref) and len(ids_of(out)) == 4


def test_resume_after_sigkill(tmp_path):
    n = 40
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{ROOT / 'src'}", "OMP_NUM_THREADS": "1"}
    code = f"from test_classify_runs import _child_main; _child_main({str(out)!r}, '{n}')"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    path = out / "results.jsonl"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"child exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_before = len(read_records(path)[0])
    assert 3 <= done_before < n, "the child was not killed mid-run"
    with open(path, "ab") as f:  # and make sure a cut line is there too
        f.write(b'{"index": 39, "id": "0000')
    bundle, data = make_bundle(), make_data(n)
    run_classification(bundle, data, out, images_per_group=3, **RUN)
    full = tmp_path / "full"
    run_classification(bundle, data, full, **RUN)
    assert result_set(out) == result_set(full)
    assert sorted(ids_of(out)) == sorted(set(ids_of(out))) and len(ids_of(out)) == n


def test_shards_merge_to_the_single_run(tmp_path):
    bundle, data = make_bundle(), make_data(7)
    single = run_classification(bundle, data, tmp_path / "single", **RUN)
    out = tmp_path / "sharded"
    run_classification(bundle, data, out, shard=(0, 3), **RUN)
    s = run_classification(bundle, data, out, shard=(2, 3), **RUN)
    assert not s["complete"] and s["num_images"] == 5
    s = run_classification(bundle, data, out, shard=(1, 3), **RUN)
    assert s["complete"]
    assert strip_timing(s) == strip_timing(single)
    assert result_set(out) == result_set(tmp_path / "single")
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]
    again = merge_results(out)
    assert strip_timing(again) == strip_timing(single)


def _dist_worker(rank: int, world: int, port: int, out: str, result: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        summary = run_classification(make_bundle(), make_data(7), out, **RUN)
        if rank == 0:
            Path(result).write_text(json.dumps(summary))
        else:
            assert summary is None
    finally:
        dist.destroy_process_group()


def test_two_processes_gloo_match_single_process(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out, result = tmp_path / "multi", tmp_path / "summary.json"
    mp.spawn(_dist_worker, args=(2, port, str(out), str(result)), nprocs=2, join=True)
    single = run_classification(make_bundle(), make_data(7), tmp_path / "single", **RUN)
    multi = json.loads(result.read_text())
    assert strip_timing(multi) == strip_timing(single)
    assert result_set(out) == result_set(tmp_path / "single")
    assert sorted(p.name for p in out.glob("results*.jsonl")) == ["results.jsonl"]


def test_unreadable_image_is_recorded_and_missing_path_fails(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for k, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox"]):
        (root / name).mkdir(parents=True)
        Image.new("L", (20, 18), color=40 * k).save(root / name / "a.png")
    (root / "bee" / "b.png").write_bytes(b"not a png")
    data = load_dataset(f"folder:{root}")
    assert isinstance(data, ImageFolderDataset) and data.class_names[0] == "ant" and len(data) == 7
    s = run_classification(make_bundle(), data, tmp_path / "run", **RUN)
    assert s["num_failed"] == 1 and s["num_scored"] == 6
    assert s["failed"][0]["path"].endswith("b.png") and "Error" in s["failed"][0]["error"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(f"pets:{tmp_path / 'nope'}")


def test_cli_on_a_saved_model_and_builtin_fashion(tmp_path, capsys):
    from bigain.classify import cli_main
    from bigain.models.fashion import SCHEDULER_CONFIG

    bundle = tiny_dit_bundle(num_classes=10, size=32, seed=0)
    folder = tmp_path / "model"
    bundle.denoiser.save_pretrained(folder)
    (folder / "scheduler_config.json").write_text(json.dumps(SCHEDULER_CONFIG))
    out = tmp_path / "run"
    argv = [
        "--model",
        str(folder),
        "--data",
        "builtin:fashion-mnist",
        "--limit",
        "3",
        "--out",
        str(out),
        "--n-samples",
        "1",
        "2",
        "--to-keep",
        "2",
        "1",
        "--batch-size",
        "16",
        "--no-progress",
        "--method",
        "tome",
        "--ratio",
        "0.5",
        "--option",
        "sx=2",
    ]
    assert cli_main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_scored"] == 3 and summary["method"] == "tome"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method_options"] == {"ratio": 0.5, "sx": 2} and cfg["calls_per_image"] == 10 * 1 + 2 * 1
    assert "top1" in capsys.readouterr().out
    # a different ratio in the same folder is refused with a clear message
    assert cli_main([*argv[:-4], "--ratio", "0.3"]) == 2
    assert "different classification run" in capsys.readouterr().err
    assert cli_main([*argv[:2], "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_subset_of_the_data(tmp_path):
    bundle, data = make_bundle(), make_data(7)
    s = run_classification(bundle, data, tmp_path, subset=[5, 1, 3], **RUN)
    assert s["complete"] and s["num_images"] == 3
    recs, _, _ = read_records(tmp_path / "results.jsonl")
    assert [(r["index"], r["id"], r["label"]) for r in recs] == [
        (0, "000005", 5),
        (1, "000001", 1),
        (2, "000003", 3),
    ]
    with pytest.raises(ConfigMismatchError, match="subset"):
        run_classification(bundle, data, tmp_path, subset=[5, 1], **RUN)
    with pytest.raises(ValueError, match="out of range"):
        run_classification(bundle, data, tmp_path / "bad", subset=[9], **RUN)


def test_summary_covers_the_current_limit(tmp_path):
    bundle, data = make_bundle(), make_data(5)
    run_classification(bundle, data, tmp_path, **RUN)
    s = run_classification(bundle, data, tmp_path, limit=2, **RUN)
    assert s["num_images"] == 2 and s["complete"] and len(ids_of(tmp_path)) == 5


# --------------------------------------------------------------------------------------------
# failures never poison a run
# --------------------------------------------------------------------------------------------
def _strict_lines(path: Path) -> list[dict]:
    """Every line of a results file parsed as strict JSON (a bare NaN/Infinity fails the test)."""

    def reject(constant: str):
        raise AssertionError(f"{path} holds the non-JSON constant {constant}")

    return [json.loads(x, parse_constant=reject) for x in path.read_text().splitlines()]


def test_nonfinite_denoiser_error_is_an_error_record_not_a_prediction(tmp_path):
    data = make_data(6)
    data.images[2, 0, 3, 3] = float("nan")  # the denoiser's error on this image is NaN
    s = run_classification(make_bundle(), data, tmp_path, images_per_group=3, **RUN)
    recs = {r["id"]: r for r in _strict_lines(tmp_path / "results.jsonl")}
    bad = recs["000002"]
    assert bad["prediction"] is None and "NonFiniteError" in bad["error"] and "non-finite" in bad["error"]
    assert all(r["error"] is None and r["prediction"] is not None for k, r in recs.items() if k != "000002")
    assert s["num_scored"] == 5 and s["num_failed"] == 1
    json.loads((tmp_path / "summary.json").read_text(), parse_constant=pytest.fail)  # strict JSON too


def test_a_batch_where_every_image_is_nonfinite_stops_the_run(tmp_path):
    from bigain.classify.runner import NonFiniteError

    data = make_data(4)
    data.images[:2] = float("nan")
    with pytest.raises(NonFiniteError, match="all 2 images of a batch"):
        run_classification(make_bundle(), data, tmp_path, images_per_group=2, **RUN)
    assert not _strict_lines(tmp_path / "results.jsonl")  # nothing recorded for the failed batch


def test_failed_images_are_retried_on_resume(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for k, name in enumerate(["ant", "bee", "cat", "dog", "eel", "fox"]):
        (root / name).mkdir(parents=True)
        Image.new("L", (20, 18), color=40 * k).save(root / name / "a.png")
    (root / "bee" / "b.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    s = run_classification(make_bundle(), load_dataset(f"folder:{root}"), out, **RUN)
    assert s["num_failed"] == 1
    Image.new("L", (20, 18), color=7).save(root / "bee" / "b.png")  # the file is fixed
    s = run_classification(make_bundle(), load_dataset(f"folder:{root}"), out, **RUN)
    assert s["num_failed"] == 0 and s["num_scored"] == 7
    assert len(ids_of(out)) == 7  # the failed record was replaced, not duplicated
    (root / "bee" / "b.png").write_bytes(b"broken again")  # retry_failed=False keeps what is recorded
    kept = run_classification(make_bundle(), load_dataset(f"folder:{root}"), out, retry_failed=False, **RUN)
    assert kept["num_failed"] == 0 and kept["num_scored"] == 7


def test_settings_that_do_not_fit_the_model_leave_no_folder(tmp_path):
    bundle = tiny_dit_bundle(num_classes=6, size=16, seed=0)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="sx=100"):
        run_classification(bundle, make_data(2), out, method="tome", method_options={"sx": 100}, **RUN)
    assert not out.exists()
    run_classification(bundle, make_data(2), out, method="tome", method_options={"sx": 2}, **RUN)
    assert (out / "summary.json").is_file()


def test_an_explicit_default_is_the_same_run(tmp_path):
    bundle, data = tiny_dit_bundle(num_classes=6, size=16, seed=0), make_data(2)
    run_classification(bundle, data, tmp_path, method="tome", method_options={"ratio": 0.5}, **RUN)
    run_classification(bundle, data, tmp_path, method="tome", method_options={"ratio": 0.5, "seed": 0}, **RUN)
    with pytest.raises(ConfigMismatchError, match="method_options.seed: folder has 0, this run has 1"):
        run_classification(
            bundle, data, tmp_path, method="tome", method_options={"ratio": 0.5, "seed": 1}, **RUN
        )


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    from bigain import runs

    bundle, data = make_bundle(), make_data(2)
    run_classification(bundle, data, tmp_path, limit=1, **RUN)
    with runs.lock(tmp_path / ".lock.results.jsonl"):
        with pytest.raises(runs.RunLockedError, match=f"another process \\(pid {os.getpid()} on"):
            run_classification(bundle, data, tmp_path, **RUN)
    s = run_classification(bundle, data, tmp_path, **RUN)
    assert s["complete"] and len(ids_of(tmp_path)) == 2


def test_a_line_that_is_not_a_record_does_not_stop_a_resume(tmp_path):
    bundle, data = make_bundle(), make_data(3)
    run_classification(bundle, data, tmp_path, limit=2, **RUN)
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('7\n{"index": 5}\n')
    with pytest.warns(UserWarning, match="not valid records"):
        s = run_classification(bundle, data, tmp_path, **RUN)
    assert s["complete"] and ids_of(tmp_path) == ["000000", "000001", "000002"]


def test_a_folder_without_a_finished_item_takes_corrected_settings(tmp_path):
    """A run that failed before its first result (NaN pixels) leaves config.json; a corrected rerun
    with other settings replaces it (with a warning) instead of being refused as another run."""
    from bigain.classify.engine import NonFiniteError

    bundle, good = make_bundle(), make_data(4)
    bad = TensorDataset(torch.full((4, 1, 16, 16), float("nan")), [0, 1, 2, 3], good.class_names, name="toy")
    with pytest.raises(NonFiniteError):
        run_classification(bundle, bad, tmp_path, loss="huber", **RUN)
    assert (tmp_path / "config.json").is_file()
    with pytest.warns(UserWarning, match="finished no item; its settings are replaced"):
        summary = run_classification(bundle, good, tmp_path, loss="l2", **RUN)
    assert summary["num_scored"] == 4 and json.loads((tmp_path / "config.json").read_text())["loss"] == "l2"
    with pytest.raises(ConfigMismatchError, match="loss"):  # a folder with results is still protected
        run_classification(bundle, good, tmp_path, loss="l1", **RUN)


def test_progress_moves_with_every_forward_so_the_first_eta_is_honest(tmp_path, monkeypatch):
    """Images of a group finish together; the bar advances by each forward's share of an image, so
    its first rate is the true one (not one image per group time) and it ends exactly at the total."""
    import tqdm.auto

    seen: list[float] = []

    class Recording(tqdm.auto.tqdm):
        def update(self, n=1):
            out = super().update(n)
            seen.append(float(self.n))
            return out

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    run_classification(make_bundle(), make_data(4), tmp_path, **{**RUN, "progress": True})
    positive = [v for v in seen if v > 0]
    assert 0 < positive[0] < 1, seen  # a fraction of an image after the first forward
    assert seen == sorted(seen) and seen[-1] == 4
