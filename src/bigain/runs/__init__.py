"""The one run-folder store used by ``classify``, ``generate`` and the sweep.

A run folder holds what a long job has finished so that a rerun resumes instead of starting over.
Every writer goes through these few functions, so every run folder gets the same care:

``check_out_dir(folder)``
    Refuses, before anything is loaded, an ``--out`` that is an existing file or cannot be written.
``lock(path)`` / ``RunLockedError``
    A single-writer lock (``flock``). A second process is refused at once with one line naming the
    process (pid and host) that holds it. The lock goes away with its process, even after ``kill -9``.
``check_config(folder, config, identity)`` / ``write_config(...)`` / ``ConfigMismatchError``
    The first run writes ``config.json`` atomically (temporary file, fsync, rename); a later run
    must agree on every identity key, or it is refused with each differing key and both values.
    ``check_config`` does the comparison only (nothing written), for checks before a run starts.
``RecordWriter(path)`` / ``append``
    Append-only JSON lines, one record per item, flushed and fsynced one at a time. Opening an
    existing file first cuts a torn last line (a write killed half-way). Records are strict JSON
    (a NaN or infinity is an error, never written).
``read_records(path, required=...)``
    The valid records of a JSON-lines file: a torn last line is dropped, and a line that is not a
    record (``7``, a fragment, a dict without the required keys) is skipped with a warning.
``done_ids(records, key)``
    The items a resume can skip: those with a record whose ``error`` is empty. Items whose record
    holds an error (an unreadable file, a non-finite result) are tried again on resume.
``atomic_write(path, text)`` / ``write_json(path, obj)``
    Whole-file writes that a crash cannot tear (summaries, reports, caches).

Typical use::

    from bigain import runs

    runs.check_out_dir(out)                      # before loading anything
    ... validate the settings against the loaded model ...
    with runs.lock(out / ".lock"):              # raises RunLockedError if another process runs here
        runs.write_config(out, config, identity=("model", "method", "seed"))
        done = runs.done_ids(runs.read_records(out / "records.jsonl")[0], "index")
        with runs.RecordWriter(out / "records.jsonl") as w:
            for item in todo:
                if item not in done:
                    w.append({"index": item, ..., "error": None})
"""

from .store import (
    ConfigMismatchError,
    RecordWriter,
    RunLockedError,
    atomic_write,
    check_config,
    check_out_dir,
    config_diff,
    done_ids,
    lock,
    read_config,
    read_records,
    strict_json,
    write_config,
    write_json,
)

__all__ = [
    "ConfigMismatchError",
    "RecordWriter",
    "RunLockedError",
    "atomic_write",
    "check_config",
    "check_out_dir",
    "config_diff",
    "done_ids",
    "lock",
    "read_config",
    "read_records",
    "strict_json",
    "write_config",
    "write_json",
]
