"""``bigain classify``: argument parsing and glue; everything it does is in the Python API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..cliutil import OPTION_HELP, check_device, guarded, method_and_options, positive_int, seed_int
from ..textvalues import parse_option_value

__all__ = ["build_parser", "cli_main", "load_model_for", "main_unguarded", "parse_option"]


def parse_option(text: str) -> tuple[str, Any]:
    """``k=v`` → (k, v) with v read as int, float, bool, None, a comma list, or a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected key=value")
    key, value = text.split("=", 1)
    key = key.strip().replace("-", "_")
    if not key:
        raise argparse.ArgumentTypeError(f"--option {text!r}: empty key")
    return key, parse_option_value(value)


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected 0 <= i < n")
    return i, n


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(
        prog="bigain classify",
        description="Zero-shot diffusion classification: the class whose conditioning denoises the image best wins.",
    )
    p.add_argument(
        "--model",
        default="builtin:fashion-dit",
        help="builtin:fashion-dit, builtin:fashion-unet, a local diffusers folder, or a hub id",
    )
    p.add_argument(
        "--data",
        default="builtin:fashion-mnist",
        help="builtin:fashion-mnist, imagenet:DIR, imagenet100:DIR, pets:DIR, coco:DIR, folder:DIR or DIR",
    )
    p.add_argument("--method", default="none", help="none, tome, bigain-tm, todo, bigain-td, sito")
    p.add_argument("--ratio", type=float, default=None, help="merge/prune ratio (sets the method's `ratio`)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        type=parse_option,
        metavar="KEY=VALUE",
        help=OPTION_HELP,
    )
    p.add_argument("--limit", type=positive_int, default=None, help="classify the first N images only")
    p.add_argument(
        "--subset",
        default=None,
        help="a .npy or text file of data-set indices to classify (e.g. a fixed ImageNet subset)",
    )
    p.add_argument("--out", required=True, help="run folder (rerunning with the same folder resumes)")
    p.add_argument(
        "--shard", type=_shard, default=(0, 1), metavar="I/N", help="score images I, I+N, I+2N, ..."
    )
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--n-samples", type=positive_int, nargs="+", default=[5, 20])
    p.add_argument("--to-keep", type=positive_int, nargs="+", default=[5, 1])
    p.add_argument("--n-trials", type=positive_int, default=1)
    p.add_argument("--loss", default="l2", choices=["l2", "l1", "huber"])
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument(
        "--pattern",
        default="per-sample",
        choices=["per-sample", "per-call"],
        help="random choices of compressed blocks: keyed per (image, t, noise) or new per call",
    )
    p.add_argument(
        "--prompts", default=None, help="prompt CSV (prompt,classname,classidx) for text-conditional models"
    )
    p.add_argument("--template", default=None, help='prompt template, e.g. "a photo of a {}."')
    p.add_argument(
        "--images-per-group", type=positive_int, default=None, help="images whose evaluations share batches"
    )
    p.add_argument(
        "--no-retry-failed",
        action="store_true",
        help="on resume, keep the error records of images that failed instead of trying them again",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _is_text_pipeline(folder: Path) -> bool:
    index = folder / "model_index.json"
    if not index.is_file():
        return False
    try:
        return "text_encoder" in json.loads(index.read_text())
    except ValueError:
        return False


def load_model_for(name: str, dataset: Any, device: str, dtype: str = "fp32") -> Any:
    """A bundle for a model name; text-conditional pipelines get the data set's prompts."""
    import torch

    from .. import models
    from .pipeline import attach_vae, bundle_from_pipeline

    folder = models.resolve(name)
    if _is_text_pipeline(folder):
        from diffusers import DiffusionPipeline

        torch_dtype = torch.float16 if dtype == "fp16" and device != "cpu" else torch.float32
        pipe = DiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch_dtype).to(device)
        return bundle_from_pipeline(pipe, dataset.prompts, class_names=dataset.class_names, name=name)
    bundle = models.load(name, device=device)
    return attach_vae(bundle)


SUBSET_FORMAT = "a .npy array of integers, or a text file of integers separated by spaces, commas or newlines"


def read_subset(path: str) -> list[int]:
    """Data-set indices from a --subset file; a file that is not a list of integers is a one-line
    error naming the file, the first bad entry and the accepted format."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--subset {path!r} does not exist; expected {SUBSET_FORMAT}")
    if p.suffix == ".npy":
        import numpy as np

        try:
            arr = np.load(p, allow_pickle=False).reshape(-1)
        except (ValueError, OSError) as e:
            raise ValueError(
                f"--subset {path!r} is not a readable .npy file ({e}); expected {SUBSET_FORMAT}"
            ) from None
        if arr.dtype.kind not in "iu":
            raise ValueError(f"--subset {path!r} holds {arr.dtype} values; expected {SUBSET_FORMAT}")
        return [int(i) for i in arr]
    try:
        tokens = p.read_text().replace(",", " ").split()
    except UnicodeDecodeError:
        raise ValueError(f"--subset {path!r} is not a text file; expected {SUBSET_FORMAT}") from None
    out = []
    for n, tok in enumerate(tokens, 1):
        try:
            out.append(int(tok))
        except ValueError:
            raise ValueError(
                f"--subset {path!r}: entry {n} ({tok!r}) is not an integer; expected {SUBSET_FORMAT}"
            ) from None
    if not out:
        raise ValueError(f"--subset {path!r} is empty; expected {SUBSET_FORMAT}")
    return out


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``bigain classify ...``; returns the exit status (errors end in one line on stderr)."""
    return guarded("bigain classify", main_unguarded, list(argv) if argv is not None else sys.argv[1:])


def main_unguarded(argv: Sequence[str]) -> int:
    """``bigain classify ...`` letting exceptions through (``bigain``'s entry point formats them)."""
    return run_from_args(build_parser().parse_args(list(argv)))


def run_from_args(args: argparse.Namespace) -> int:
    method, options = method_and_options(args.method, args.option, args.ratio)  # before torch loads
    from .. import runs
    from ..runs.preflight import normalise_options
    from .datasets import load_dataset
    from .runner import run_classification

    device = check_device(args.device)
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ and ":" not in device:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    normalise_options(method, options)  # a bad name or option fails before anything is loaded
    runs.check_out_dir(args.out)
    subset = read_subset(args.subset) if args.subset else None
    dataset = load_dataset(args.data, prompts_csv=args.prompts, template=args.template)
    bundle = load_model_for(args.model, dataset, device, args.dtype)
    summary = run_classification(
        bundle,
        dataset,
        args.out,
        limit=args.limit,
        shard=args.shard,
        method=method,
        method_options=options,
        n_samples=tuple(args.n_samples),
        to_keep=tuple(args.to_keep),
        loss=args.loss,
        n_trials=args.n_trials,
        batch_size=args.batch_size,
        dtype=args.dtype,
        seed=args.seed,
        pattern=args.pattern,
        images_per_group=args.images_per_group,
        progress=not args.no_progress,
        model_name=args.model,
        subset=subset,
        retry_failed=not args.no_retry_failed,
    )
    if summary is not None:
        print(summary_line(summary) + f" -> {Path(args.out) / 'summary.json'}")
    return 0


def summary_line(summary: dict[str, Any]) -> str:
    """One line: accuracy in percent with its 95 % interval and n, failures, throughput."""
    key = "acc1" if summary.get("multi_label") else "top1"
    acc, ci, n = summary.get(key), summary.get("top1_ci95"), summary["num_scored"]
    acc_s = "n/a (no image scored)" if acc is None else f"{acc:.1f} %"
    if ci is not None:
        acc_s += f" (95 % CI {ci[0]:.1f}–{ci[1]:.1f}, n={n})"
    ips = summary["timing"]["images_per_second"]
    failed = summary["num_failed"]
    return (
        f"{key} {acc_s}; {failed} image(s) without a prediction; "
        f"{'n/a' if ips is None else f'{ips:.3f}'} images/s"
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli_main())
