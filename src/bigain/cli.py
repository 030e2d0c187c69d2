"""The `bigain` command line: one verb per application; thin wrappers over the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _demo(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bigain demo",
        description="Classify and generate with every method on the embedded default model.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (rerun to resume)")
    p.add_argument("--model", default="builtin:fashion-dit")
    p.add_argument(
        "--images", type=int, default=10, help="test images to classify per method (balanced over classes)"
    )
    p.add_argument("--gen", type=int, default=10, help="samples to generate per method")
    p.add_argument("--gen-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=125)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args(argv)
    from .demo import run_demo

    run_demo(a.out, a.model, a.images, a.gen, a.gen_steps, a.batch_size, a.dtype)
    print(f"\nwrote {a.out}/demo.md, demo.json, speed_accuracy.png and generate/*/grid.png")
    return 0


def _parse_opts(items: Sequence[str]) -> dict:
    from .classify.cli import parse_option

    return dict(parse_option(s) for s in items)


def _generate(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="bigain generate", description="Class-conditional sampling under a bigain method."
    )
    p.add_argument("--model", default="builtin:fashion-dit")
    p.add_argument("--method", default="none")
    p.add_argument("--ratio", type=float, default=None)
    p.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE", help="method option (repeatable)"
    )
    p.add_argument("--num", type=int, default=100, help="images (labels cycle over the classes)")
    p.add_argument("--labels", default=None, help="comma-separated class indices instead of cycling")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpm", "euler", "ddpm"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    from .generate import SamplerConfig, balanced_labels, generate_run
    from .models import load

    bundle = load(a.model)
    opts = _parse_opts(a.option)
    if a.ratio is not None:
        opts["ratio"] = a.ratio
    labels = [int(v) for v in a.labels.split(",")] if a.labels else balanced_labels(bundle.num_classes, a.num)
    cfg = SamplerConfig(a.sampler, a.steps, a.guidance, a.seed, a.batch_size, a.dtype)
    generate_run(bundle, a.out, labels, a.method, opts, cfg)
    print(f"wrote {len(labels)} images, manifest.jsonl and grid.png to {a.out}")
    return 0


def _classify(argv: Sequence[str]) -> int:
    from .classify import cli_main

    return cli_main(list(argv))


def _train(argv: Sequence[str]) -> int:
    from .models.train import main

    return main(list(argv))


def _methods(argv: Sequence[str]) -> int:
    import dataclasses

    from .methods import METHODS

    for name, cls in METHODS.items():
        fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name != "generator"}
        print(f"{name}: {(cls.__doc__ or '').strip().splitlines()[0]}")
        print("    " + json.dumps(fields, default=str))
    return 0


def _bench(argv: Sequence[str]) -> int:
    from .bench.cli import main

    return main(list(argv))


def _sweep(argv: Sequence[str]) -> int:
    from .sweep import main

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
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in VERBS:
        from . import __version__

        print(f"bigain {__version__}: token compression for diffusion models (generation + classification)\n")
        print("usage: bigain {" + ",".join(VERBS) + "} [options]   (bigain VERB --help for its options)")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return int(VERBS[argv[0]](argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
