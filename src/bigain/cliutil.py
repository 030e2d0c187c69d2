"""Command-line plumbing shared by every ``bigain`` verb: one-line errors and their exit codes.

A user error ends in one line on stderr and exit status 2 (a bad option, a missing file, a run
folder of another run); a runtime failure in one line and status 1 (another process holds the
run's lock, a hub model while offline, a full disk, a non-finite result). ``--debug`` anywhere on
the command line, or ``BIGAIN_DEBUG=1``, prints the traceback as well.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

__all__ = [
    "UsageError",
    "OPTION_HELP",
    "check_device",
    "exit_code",
    "finite_float",
    "guarded",
    "method_and_options",
    "nonnegative_int",
    "one_line",
    "positive_int",
    "seed_int",
    "split_debug",
]


class UsageError(ValueError):
    """A mistake on the command line (exit status 2)."""


# errors that come from what the user asked for, not from the machine
_USAGE = (ValueError, TypeError, LookupError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def exit_code(exc: BaseException) -> int:
    """2 for user errors (bad values, missing inputs, unusable --out), 1 for runtime failures."""
    from .runs import RunLockedError

    if isinstance(exc, RunLockedError):
        return 1
    if isinstance(exc, PermissionError) and "--out" in str(exc):
        return 2
    if isinstance(exc, _USAGE):
        return 2
    return 1


# errors whose message says it all; any other type is named in front of its message
_PLAIN = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, RuntimeError)


def one_line(exc: BaseException) -> str:
    """The error as one line (whitespace and newlines collapsed)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if isinstance(exc, _PLAIN) else f"{type(exc).__name__}: {msg}"


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """(argv without ``--debug``, whether a traceback was asked for by flag or BIGAIN_DEBUG)."""
    argv = list(argv)
    debug = os.environ.get("BIGAIN_DEBUG", "").strip().lower() not in ("", "0", "false", "no")
    if "--debug" in argv:
        argv = [a for a in argv if a != "--debug"]
        debug = True
    return argv, debug


def _argparse_error(self: argparse.ArgumentParser, message: str) -> None:
    raise UsageError(f"{message} (see {self.prog} --help)")


@contextlib.contextmanager
def _one_line_argparse() -> Iterator[None]:
    """Make every argparse parser raise UsageError instead of printing its usage block and exiting."""
    old = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _argparse_error  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = old  # type: ignore[method-assign]


def guarded(prog: str, fn: Callable[[list[str]], int | None], argv: Sequence[str]) -> int:
    """Run ``fn(argv)`` and turn any exception into one line on stderr and an exit status."""
    argv, debug = split_debug(argv)
    try:
        with _one_line_argparse():
            return int(fn(argv) or 0)
    except SystemExit as e:  # --help, or a verb that exits by itself
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place where errors become exit statuses
        if debug:
            traceback.print_exc()
        code = exit_code(e)
        hint = "" if debug or code == 2 else " (--debug shows the traceback)"
        print(f"{prog}: error: {one_line(e)}{hint}", file=sys.stderr)
        return code


def check_device(device: str | None) -> str:
    """The device to use (``None``: cuda if available, else cpu); a device this machine lacks is a
    UsageError instead of an assertion deep inside torch."""
    import torch

    if device in (None, ""):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"--device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
            raise UsageError(
                f"--device {device}: CUDA is not available here (torch {torch.__version__}, {build})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {device}: MPS is not available here")
    return str(dev)


def _int_at_least(text: str, low: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < low:
        raise argparse.ArgumentTypeError(f"{v} is out of range: expected an integer >= {low}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in [0, 2**63) (larger values would alias smaller ones)."""
    v = nonnegative_int(text)
    if v >= 2**63:
        raise argparse.ArgumentTypeError(f"{v} is out of range: expected an integer in [0, 2**63)")
    return v


def finite_float(text: str) -> float:
    """argparse type: a finite real number (``nan`` and ``inf`` parse as floats but mean nothing here)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number: expected e.g. 4.0")
    return v


OPTION_HELP = (
    "a method option KEY=VALUE (repeatable), e.g. --option sx=2 --option max_downsample=2; "
    "lists are comma-separated: --option blocks=0,1,2 (one block: blocks=3,); `bigain methods` lists the options"
)

COMPRESSING = "tome, bigain-tm, todo, bigain-td or sito"


def method_and_options(
    method: str | None, options: Sequence[tuple[str, object]], ratio: float | None
) -> tuple[str | None, dict[str, object]]:
    """(method or None for no compression, its options) from --method, --option and --ratio.

    Options with ``--method none`` are a contradiction: refused naming what was given and the fix."""
    opts = dict(options)
    if ratio is not None:
        opts["ratio"] = ratio
    name = None if method in (None, "", "none") else method
    if name is None and opts:
        given = " ".join(
            [f"--ratio {ratio}"] * (ratio is not None) + [f"--option {k}={v}" for k, v in options]
        )
        raise UsageError(
            f"{given} needs a compressing method, but --method is {method or 'none'} (no compression); "
            f"add --method {COMPRESSING}, or drop the option"
        )
    return name, opts
