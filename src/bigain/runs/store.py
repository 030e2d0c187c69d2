"""Run-folder primitives: out-folder checks, single-writer lock, atomic config, append-only JSON lines."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

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

CONFIG_FILE = "config.json"


class ConfigMismatchError(ValueError):
    """The run folder holds a run with different settings (a usage error: pick another folder)."""


class RunLockedError(RuntimeError):
    """Another process is writing this run folder."""


# --------------------------------------------------------------------------------------------
# JSON that every reader accepts
# --------------------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (not JSON)")


def strict_json(obj: Any, *, nonfinite: str = "error") -> Any:
    """``obj`` as plain JSON data (tuples become lists, unknown objects their ``str``).

    NaN and infinities are not JSON: ``nonfinite="error"`` raises ``ValueError``, ``"null"``
    writes them as ``None`` (for summaries, where "no value" is the honest reading).
    """
    if nonfinite not in ("error", "null"):
        raise ValueError(f"nonfinite={nonfinite!r}: expected 'error' or 'null'")

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            if nonfinite == "null":
                return None
            raise ValueError(f"non-finite number {x} cannot be written as JSON")
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.loads(json.dumps(clean(obj), default=str, allow_nan=False))


def _dumps_line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"


# --------------------------------------------------------------------------------------------
# whole-file writes
# --------------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_json(path: str | os.PathLike, obj: Any, *, nonfinite: str = "error") -> None:
    """``atomic_write`` of ``obj`` as indented strict JSON (see :func:`strict_json`)."""
    atomic_write(path, json.dumps(strict_json(obj, nonfinite=nonfinite), indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# the out folder
# --------------------------------------------------------------------------------------------
def check_out_dir(folder: str | os.PathLike) -> Path:
    """Refuse an out folder that cannot be a run folder, without creating anything.

    Raises ``NotADirectoryError`` if it (or a parent) is an existing file and ``PermissionError``
    if the nearest existing folder cannot be written. Returns the path.
    """
    out = Path(folder)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is an existing file" if probe == out else f"is inside {probe}, which is a file"
        raise NotADirectoryError(f"--out {out} {where}, not a run folder; choose a folder")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        what = "is" if probe == out else f"would be created in {probe}, which is"
        raise PermissionError(f"--out {out} {what} not writable; choose a writable folder")
    return out


# --------------------------------------------------------------------------------------------
# the single-writer lock
# --------------------------------------------------------------------------------------------
def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        raw = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        info = json.loads(raw) if raw else {}
        if isinstance(info, dict) and "pid" in info:
            return f"pid {info['pid']} on {info.get('host', '?')}"
    return "a process that did not record its pid"


@contextlib.contextmanager
def lock(path: str | os.PathLike, *, blocking: bool = False, what: str | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` block.

    Non-blocking by default: if another process holds it, raise :class:`RunLockedError` naming
    its pid and host (recorded in the lock file by the holder). ``blocking=True`` waits instead.
    The lock is released when the block ends or the process dies.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            target = what or str(path.parent)
            raise RunLockedError(
                f"{target} is being written by another process ({_holder(fd)}); "
                "wait for it to finish or choose another --out folder"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------------------------
# config.json
# --------------------------------------------------------------------------------------------
def read_config(folder: str | os.PathLike, name: str = CONFIG_FILE) -> dict[str, Any] | None:
    """The folder's config (None if there is none); an unreadable one is a ConfigMismatchError."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigMismatchError(f"{path} is not valid JSON ({e}); choose another --out folder") from None
    if not isinstance(cfg, dict):
        raise ConfigMismatchError(f"{path} does not hold a run configuration; choose another --out folder")
    return cfg


def config_diff(
    old: dict[str, Any],
    new: dict[str, Any],
    keys: Iterable[str] | None = None,
    normalise: Callable[[str, Any, dict[str, Any]], Any] | None = None,
) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for each identity key on which two configs differ.

    ``normalise(key, value, config)`` maps both sides to a canonical form first (e.g. method
    options with their defaults filled in, so that an explicit default is the same run).
    """
    new = strict_json(new)
    keys = list(keys) if keys is not None else sorted(set(old) | set(new))
    diffs = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if normalise is not None:
            a, b = normalise(k, a, old), normalise(k, b, new)
        if a != b:
            diffs.append((k, a, b))
    return diffs


def _describe(key: str, a: Any, b: Any) -> str:
    """``key: folder has A, this run has B``; for two dicts, only the entries that differ."""
    if isinstance(a, dict) and isinstance(b, dict) and a and b:
        subs = [k for k in sorted(set(a) | set(b), key=str) if a.get(k, _MISSING) != b.get(k, _MISSING)]
        return "; ".join(
            f"{key}.{k}: folder has {_short(a.get(k, _MISSING))}, this run has {_short(b.get(k, _MISSING))}"
            for k in subs
        )
    return f"{key}: folder has {_short(a)}, this run has {_short(b)}"


class _Missing:
    def __repr__(self) -> str:
        return "(not set)"


_MISSING = _Missing()


def _short(v: Any, n: int = 80) -> str:
    if v is _MISSING:
        return "(not set)"
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 3] + "..."


def check_config(
    folder: str | os.PathLike,
    config: dict[str, Any],
    identity: Sequence[str] | None = None,
    *,
    normalise: Callable[[str, Any, dict[str, Any]], Any] | None = None,
    what: str = "run",
    name: str = CONFIG_FILE,
    replaceable: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """The folder's config if it agrees with ``config`` on every ``identity`` key, None if the
    folder has none yet; otherwise :class:`ConfigMismatchError` naming each differing key with the
    folder's and this run's value. Writes nothing.

    ``replaceable()`` True means the folder holds no finished item (a run that failed before
    finishing anything): its settings may then be replaced, with a warning, and None is returned,
    so a corrected rerun is not refused as "a different run" over nothing worth keeping."""
    old = read_config(folder, name)
    if old is None:
        return None
    diffs = config_diff(old, config, identity, normalise)
    if diffs:
        detail = "; ".join(_describe(k, a, b) for k, a, b in diffs)
        if replaceable is not None and replaceable():
            warnings.warn(
                f"{folder} held a {what} that finished no item; its settings are replaced ({detail})",
                stacklevel=2,
            )
            return None
        raise ConfigMismatchError(
            f"{folder} holds a different {what} ({detail}). "
            "Resume with the same settings, or choose another --out folder."
        )
    return old


def write_config(
    folder: str | os.PathLike,
    config: dict[str, Any],
    identity: Sequence[str] | None = None,
    *,
    normalise: Callable[[str, Any, dict[str, Any]], Any] | None = None,
    what: str = "run",
    name: str = CONFIG_FILE,
    replaceable: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Write ``config.json`` atomically, or check it against the one already there
    (:func:`check_config`, ``replaceable`` included). Returns the config now in the folder (the
    stored one on a resume)."""
    config = strict_json(config)
    old = check_config(
        folder, config, identity, normalise=normalise, what=what, name=name, replaceable=replaceable
    )
    if old is None:
        write_json(Path(folder) / name, config)
        return config
    return old


# --------------------------------------------------------------------------------------------
# append-only records
# --------------------------------------------------------------------------------------------
def read_records(
    path: str | os.PathLike,
    required: Sequence[str] = ("index",),
    validate: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[dict[str, Any]], int, int]:
    """(records, bytes up to the end of the last valid record, file size) of a JSON-lines file.

    A last line without its newline is a write cut short and is dropped silently; any other line
    that is not a JSON object with the ``required`` keys (and passing ``validate``) is skipped with
    a warning, so one bad line never stops a resume. NaN/infinity are not accepted. A missing file
    is an empty run.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    records: list[dict[str, Any]] = []
    pos = valid = bad = 0
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        if nl < 0:
            break  # torn last line
        line, pos = raw[pos:nl], nl + 1
        if not line.strip():
            if bad == 0:
                valid = pos
            continue
        try:
            rec = json.loads(line, parse_constant=_reject_constant)
            ok = (
                isinstance(rec, dict)
                and all(k in rec for k in required)
                and (validate is None or validate(rec))
            )
        except (ValueError, UnicodeDecodeError, TypeError, KeyError):
            ok = False
        if not ok:
            bad += 1
            continue
        records.append(rec)
        valid = pos
    if bad:
        warnings.warn(f"{path}: skipped {bad} line(s) that are not valid records", stacklevel=2)
    return records, valid, len(raw)


def done_ids(records: Iterable[dict[str, Any]], key: str = "id") -> set[Any]:
    """Keys of the items a resume can skip: those with at least one record without an ``error``."""
    return {r[key] for r in records if not r.get("error")}


class RecordWriter:
    """Appends records to one JSON-lines file, one fsynced line at a time.

    Opening an existing file first removes a torn tail (bytes after the last valid record), so a
    new record never joins a half-written one. Use under :func:`lock` (one writer per file).
    """

    def __init__(self, path: str | os.PathLike, required: Sequence[str] = ("index",)) -> None:
        self.path = Path(path)
        if self.path.exists():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # reported by the reader that decides what to redo
                _, valid, size = read_records(self.path, required)
            if valid < size:
                with open(self.path, "r+b") as f:
                    f.truncate(valid)
                    os.fsync(f.fileno())
        self._f = open(self.path, "ab")  # noqa: SIM115 - closed by close()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record (strict JSON: a NaN raises ValueError before anything is written)."""
        line = _dumps_line(record)
        self._f.write(line)
        self._f.flush()
        os.fsync(self._f.fileno())

    write = append

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
