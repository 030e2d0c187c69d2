"""The run-folder store (bigain.runs): lock, atomic config, strict append-only records, validated reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bigain import runs

ROOT = Path(__file__).resolve().parent.parent


def _strict(line: str):
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_lock_refuses_a_second_holder_naming_it(tmp_path):
    path = tmp_path / ".lock"
    with runs.lock(path):
        with pytest.raises(runs.RunLockedError, match=rf"pid {os.getpid()} on \S+"):
            with runs.lock(path):
                pass
    with runs.lock(path):  # released at the end of the block
        pass


def test_lock_is_held_across_processes_and_released_when_the_holder_dies(tmp_path):
    path = tmp_path / ".lock"
    src, lock_path = str(ROOT / "src"), str(path)
    code = (
        f"import sys, time; sys.path.insert(0, {src!r}); from bigain.runs.store import lock\n"
        f"with lock({lock_path!r}):\n    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(runs.RunLockedError, match=f"pid {proc.pid}"):
            with runs.lock(path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with runs.lock(path):
        pass


def test_write_config_is_atomic_and_names_each_difference(tmp_path, monkeypatch):
    cfg = {"model": "m", "seed": 0, "options": {"ratio": 0.5, "sx": 2}, "batch": 8}
    runs.write_config(tmp_path, cfg, identity=("model", "seed", "options"))
    assert json.loads((tmp_path / "config.json").read_text()) == cfg
    # same identity, other non-identity values: accepted, stored config returned
    assert runs.write_config(tmp_path, {**cfg, "batch": 4}, identity=("model", "seed", "options")) == cfg
    with pytest.raises(runs.ConfigMismatchError) as e:
        runs.write_config(
            tmp_path,
            {**cfg, "seed": 1, "options": {"ratio": 0.7, "sx": 2}},
            identity=("model", "seed", "options"),
        )
    msg = str(e.value)
    assert "seed: folder has 0, this run has 1" in msg
    assert "options.ratio: folder has 0.5, this run has 0.7" in msg and "options.sx" not in msg

    # a crash during the write leaves the old file whole (and no temporary file behind)
    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        runs.write_json(tmp_path / "config.json", {"model": "other"})
    assert json.loads((tmp_path / "config.json").read_text()) == cfg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_normalised_identity_treats_explicit_defaults_as_the_same_run(tmp_path):
    def norm(key, value, config):
        return {"seed": 0, **(value or {})} if key == "options" else value

    runs.write_config(tmp_path, {"options": {"ratio": 0.5}}, normalise=norm)
    runs.write_config(tmp_path, {"options": {"ratio": 0.5, "seed": 0}}, normalise=norm)
    with pytest.raises(runs.ConfigMismatchError, match="options.seed: folder has 0, this run has 3"):
        runs.write_config(tmp_path, {"options": {"ratio": 0.5, "seed": 3}}, normalise=norm)


def test_unreadable_config_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text('{"model": "m", "se')
    with pytest.raises(runs.ConfigMismatchError, match="not valid JSON"):
        runs.write_config(tmp_path, {"model": "m"})


def test_records_are_strict_json_and_torn_tails_are_cut(tmp_path):
    path = tmp_path / "records.jsonl"
    with runs.RecordWriter(path) as w:
        w.append({"index": 0, "value": 1.5})
        with pytest.raises(ValueError):
            w.append({"index": 1, "value": float("nan")})
    with open(path, "ab") as f:
        f.write(b'{"index": 1, "val')  # a write cut by a kill
    recs, valid, size = runs.read_records(path)
    assert [r["index"] for r in recs] == [0] and valid < size
    with runs.RecordWriter(path) as w:  # reopening cuts the torn tail before appending
        w.append({"index": 1, "value": 2.0})
    lines = path.read_text().splitlines()
    assert [_strict(x)["index"] for x in lines] == [0, 1]


def test_invalid_lines_are_skipped_with_a_warning(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"index": 0}\n7\n{"no_index": 1}\n{"index": NaN}\n[1, 2]\n{"index": 1}\n')
    with pytest.warns(UserWarning, match="skipped 4 line"):
        recs, valid, size = runs.read_records(path)
    assert [r["index"] for r in recs] == [0, 1] and valid == size
    with pytest.warns(UserWarning, match="skipped 5 line"):
        recs, _, _ = runs.read_records(path, validate=lambda r: r["index"] > 0)
    assert [r["index"] for r in recs] == [1]
    assert runs.read_records(tmp_path / "missing.jsonl") == ([], 0, 0)


def test_done_ids_leave_failed_items_for_a_retry():
    recs = [{"id": "a", "error": None}, {"id": "b", "error": "OSError: unreadable"}, {"id": "c"}]
    assert runs.done_ids(recs, "id") == {"a", "c"}
    recs.append({"id": "b", "error": None})  # retried and scored
    assert runs.done_ids(recs, "id") == {"a", "b", "c"}


def test_check_out_dir_refuses_files_and_read_only_places(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="existing file"):
        runs.check_out_dir(f)
    with pytest.raises(NotADirectoryError, match="which is a file"):
        runs.check_out_dir(f / "sub")
    ro = Path("/proc/self")
    if os.access(ro, os.W_OK):
        pytest.skip("no read-only folder to test with")
    with pytest.raises(PermissionError, match="not writable"):
        runs.check_out_dir(ro / "run")
    out = runs.check_out_dir(tmp_path / "new" / "run")
    assert not out.exists()  # checking creates nothing


def test_summaries_write_nonfinite_as_null(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs.write_json(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")]}, nonfinite="null")
    assert _strict((tmp_path / "s.json").read_text()) == {"a": None, "b": [1.0, None]}
    with pytest.raises(ValueError, match="non-finite"):
        runs.write_json(tmp_path / "t.json", {"a": float("nan")})
    assert not (tmp_path / "t.json").exists()
