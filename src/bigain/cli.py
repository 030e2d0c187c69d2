"""The `bigain` command line: one verb per application; thin wrappers over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _demo(argv: Sequence[str]) -> int:
    from .cliutil import positive_int

    p = argparse.ArgumentParser(
        prog="bigain demo",
        description="Classify, generate and time every method on the embedded default model "
        "(about 3 minutes on 2 quiet CPU cores with the defaults).",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (rerun to resume)")
    p.add_argument("--model", default="builtin:fashion-dit")
    p.add_argument(
        "--images",
        type=positive_int,
        default=10,
        help="test images classified per method (balanced over classes)",
    )
    p.add_argument("--gen", type=positive_int, default=10, help="samples generated per method")
    p.add_argument("--gen-steps", type=positive_int, default=20, help="DDIM steps per sample")
    p.add_argument("--batch-size", type=positive_int, default=125, help="denoiser rows per forward")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument(
        "--remeasure-speed",
        action="store_true",
        help="time every setting again instead of reusing speed.json",
    )
    a = p.parse_args(argv)
    from . import runs
    from .demo import run_demo

    runs.check_out_dir(a.out)
    run_demo(
        a.out,
        a.model,
        a.images,
        a.gen,
        a.gen_steps,
        a.batch_size,
        a.dtype,
        remeasure_speed=a.remeasure_speed,
    )
    print(
        f"\nwrote {a.out}/demo.md, demo.json, speed.json, speed_accuracy.png and generate/*/labelled_grid.png"
    )
    return 0


def _generate(argv: Sequence[str]) -> int:
    from .classify.cli import parse_option
    from .cliutil import OPTION_HELP, UsageError, check_device, finite_float, method_and_options, positive_int

    p = argparse.ArgumentParser(
        prog="bigain generate", description="Class-conditional sampling under a bigain method."
    )
    p.add_argument("--model", default="builtin:fashion-dit")
    p.add_argument("--method", default="none", help="none, tome, bigain-tm, todo, bigain-td, sito")
    p.add_argument("--ratio", type=float, default=None, help="merge/prune ratio (sets the method's `ratio`)")
    p.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        type=parse_option,
        metavar="KEY=VALUE",
        help=OPTION_HELP,
    )
    p.add_argument("--num", type=positive_int, default=100, help="images (labels cycle over the classes)")
    p.add_argument("--labels", default=None, help="comma-separated class indices instead of cycling")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpm", "euler", "ddpm"])
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument("--guidance", type=finite_float, default=4.0, help="classifier-free guidance scale (>= 0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run folder (rerunning with the same folder resumes)")
    a = p.parse_args(argv)
    from . import runs
    from .generate import SamplerConfig, balanced_labels, generate_run
    from .models import load

    method, opts = method_and_options(a.method, a.option, a.ratio)
    if a.guidance < 0:
        raise UsageError(f"--guidance {a.guidance}: expected a number >= 0, e.g. --guidance 4.0")
    labels = None
    if a.labels:
        try:
            labels = [int(v) for v in a.labels.split(",") if v.strip()]
        except ValueError:
            raise UsageError(
                f"--labels {a.labels!r}: expected comma-separated class indices, e.g. 0,3,7"
            ) from None
    from .runs.preflight import normalise_options

    normalise_options(method, opts)  # an unknown method or a bad option fails before the model loads
    cfg = SamplerConfig(a.sampler, a.steps, a.guidance, a.seed, a.batch_size, a.dtype)
    device = check_device(a.device)
    runs.check_out_dir(a.out)
    bundle = load(a.model, device=device)
    labels = labels if labels is not None else balanced_labels(bundle.num_classes, a.num)
    generate_run(bundle, a.out, labels, method or "none", opts, cfg, progress=not a.no_progress)
    print(f"wrote {len(labels)} images, manifest.jsonl and grid.png to {a.out}")
    return 0


def _classify(argv: Sequence[str]) -> int:
    from .classify.cli import main_unguarded

    return main_unguarded(list(argv))


def _train(argv: Sequence[str]) -> int:
    from .models.train import main

    return main(list(argv))


def _methods(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(
        prog="bigain methods", description="List the methods and their options."
    ).parse_args(argv)
    import bigain

    listing = getattr(bigain, "list_methods", None) or bigain.methods
    for name in listing():
        cfg = bigain.make_config(name)
        fields = {k: v for k, v in cfg.as_dict().items() if k not in ("method", "generator")}
        if fields.get("blocks") is None:
            fields["blocks"] = "paper"  # None means the paper's placement for the backbone
        print(f"{name}: {(type(cfg).__doc__ or '').strip().splitlines()[0]}")
        print("    " + json.dumps(fields, default=str))
    return 0


def _bench(argv: Sequence[str]) -> int:
    from .bench.cli import main

    return main(list(argv))


def _sweep(argv: Sequence[str]) -> int:
    from .experiments.cli import main

    return main(list(argv))


VERBS = {
    "demo": _demo,
    "classify": _classify,
    "generate": _generate,
    "sweep": _sweep,
    "bench": _bench,
    "train": _train,
    "methods": _methods,
}


def main(argv: Sequence[str] | None = None) -> int:
    """``bigain VERB ...``; returns the exit status (0 ok, 1 runtime failure, 2 usage error)."""
    from .cliutil import guarded, split_debug

    argv = list(sys.argv[1:] if argv is None else argv)
    rest, _ = split_debug(argv)
    if not rest or rest[0] in ("-h", "--help"):
        from . import __version__

        print(f"bigain {__version__}: token compression for diffusion models (generation + classification)\n")
        print(
            "usage: bigain {"
            + ",".join(VERBS)
            + "} [options] [--debug]   (bigain VERB --help for its options)"
        )
        return 0
    verb = rest[0]
    if verb not in VERBS:
        import difflib

        close = difflib.get_close_matches(verb, list(VERBS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"bigain: error: unknown command {verb!r}{hint}; commands: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    argv.remove(verb)
    return guarded(f"bigain {verb}", VERBS[verb], argv)


if __name__ == "__main__":
    sys.exit(main())
