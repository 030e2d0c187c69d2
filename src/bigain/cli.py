"""The `bigain` command line: one verb per application; thin wrappers over the Python API."""

from __future__ import annotations

import argparse
import contextlib
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


def _pipeline_class(name: str) -> str | None:
    """The pipeline class named in a local pipeline folder's model_index.json (None otherwise)."""
    from pathlib import Path

    folder = Path(name)
    index = folder / "model_index.json"
    if not (folder.is_dir() and index.is_file()):
        return None
    try:
        cls = json.loads(index.read_text()).get("_class_name")
    except (ValueError, AttributeError):
        return None
    return cls if isinstance(cls, str) else None


def _makes_video(pipeline_class: str) -> bool:
    import inspect

    import diffusers

    cls = getattr(diffusers, pipeline_class, None)
    try:
        return cls is not None and "num_frames" in inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return False


def _read_prompts(a: argparse.Namespace) -> list[str]:
    from pathlib import Path

    from .cliutil import UsageError

    prompts = list(a.prompt)
    if a.prompts:
        path = Path(a.prompts)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts {a.prompts}: no such file (expected one prompt per line)")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        found = [line for line in lines if line]
        if not found:
            raise UsageError(f"--prompts {a.prompts}: the file holds no prompt (expected one per line)")
        prompts += found
    if not prompts:
        raise UsageError("a video pipeline needs --prompt TEXT (repeatable) or --prompts FILE")
    return prompts


VIDEO_ONLY = ("prompt", "prompts", "negative_prompt", "frames", "height", "width", "fps")
CLASS_ONLY = ("labels", "sampler", "batch_size")


def _generate(argv: Sequence[str]) -> int:
    from .classify.cli import parse_option
    from .cliutil import OPTION_HELP, UsageError, check_device, finite_float, method_and_options, positive_int

    p = argparse.ArgumentParser(
        prog="bigain generate",
        description="Sampling under a bigain method: class-conditional images from the embedded models "
        "and DiT folders, or videos from a diffusers video pipeline folder (e.g. Wan 2.1).",
    )
    p.add_argument(
        "--model",
        default="builtin:fashion-dit",
        help="builtin:fashion-dit, builtin:fashion-unet, a DiT/U-Net folder, or a video pipeline folder",
    )
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
    p.add_argument(
        "--num",
        type=positive_int,
        default=None,
        help="samples (default: 100 images, labels cycling over the classes; one video per prompt)",
    )
    p.add_argument("--steps", type=positive_int, default=50)
    p.add_argument(
        "--guidance",
        type=finite_float,
        default=None,
        help="classifier-free guidance scale, >= 0 (default 4.0; video: the pipeline's)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="sample i uses seed + i (videos) or its own keyed noise"
    )
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, help="run folder (rerunning with the same folder resumes)")
    img = p.add_argument_group("class-conditional models")
    img.add_argument("--labels", default=None, help="comma-separated class indices instead of cycling")
    img.add_argument("--sampler", default=None, choices=["ddim", "dpm", "euler", "ddpm"], help="default ddim")
    img.add_argument("--batch-size", type=positive_int, default=None, help="default 50")
    vid = p.add_argument_group("video pipelines (samples/<id>.mp4 and contact_sheet.png)")
    vid.add_argument("--prompt", action="append", default=[], help="text prompt (repeatable; prompts cycle)")
    vid.add_argument("--prompts", default=None, help="text file with one prompt per line")
    vid.add_argument("--negative-prompt", default=None)
    vid.add_argument(
        "--frames", type=positive_int, default=None, help="frames per video (default: the pipeline's)"
    )
    vid.add_argument("--height", type=positive_int, default=None, help="pixels (default: the pipeline's)")
    vid.add_argument("--width", type=positive_int, default=None, help="pixels (default: the pipeline's)")
    vid.add_argument(
        "--fps", type=positive_int, default=None, help="frame rate of the MP4 files (default 16)"
    )
    a = p.parse_args(argv)
    from . import runs

    method, opts = method_and_options(a.method, a.option, a.ratio)
    if a.guidance is not None and a.guidance < 0:
        raise UsageError(f"--guidance {a.guidance}: expected a number >= 0, e.g. --guidance 4.0")
    from .runs.preflight import normalise_options

    normalise_options(method, opts)  # an unknown method or a bad option fails before the model loads
    pipeline_class = _pipeline_class(a.model)
    video = pipeline_class is not None and _makes_video(pipeline_class)

    def flags(names: tuple[str, ...]) -> list[str]:
        return ["--" + n.replace("_", "-") for n in names if getattr(a, n) not in (None, [])]

    if video:
        wrong = flags(CLASS_ONLY)
        if wrong:
            raise UsageError(
                f"{', '.join(wrong)}: options of class-conditional models, not of {pipeline_class}"
            )
        return _generate_video(a, opts, pipeline_class)
    wrong = flags(VIDEO_ONLY)
    if wrong:
        what = f"a {pipeline_class}" if pipeline_class else f"model {a.model}"
        raise UsageError(f"{', '.join(wrong)}: options of video pipelines, and {what} is not one")
    from .generate import SamplerConfig, balanced_labels, generate_run
    from .models import load

    labels = None
    if a.labels:
        try:
            labels = [int(v) for v in a.labels.split(",") if v.strip()]
        except ValueError:
            raise UsageError(
                f"--labels {a.labels!r}: expected comma-separated class indices, e.g. 0,3,7"
            ) from None
    guidance = 4.0 if a.guidance is None else a.guidance
    cfg = SamplerConfig(a.sampler or "ddim", a.steps, guidance, a.seed, a.batch_size or 50, a.dtype)
    device = check_device(a.device)
    runs.check_out_dir(a.out)
    bundle = load(a.model, device=device)
    labels = labels if labels is not None else balanced_labels(bundle.num_classes, a.num or 100)
    generate_run(bundle, a.out, labels, method or "none", opts, cfg, progress=not a.no_progress)
    print(f"wrote {len(labels)} images, manifest.jsonl and grid.png to {a.out}")
    return 0


@contextlib.contextmanager
def _loading_bars(show: bool):
    """diffusers' and transformers' loading bars, off for the block unless `show`."""
    from diffusers.utils import logging as dlog

    try:
        from transformers.utils import logging as tlog
    except ImportError:
        tlog = None
    libs = [lib for lib in (dlog, tlog) if lib is not None]
    was = [lib.is_progress_bar_enabled() for lib in libs]
    if not show:
        for lib in libs:
            lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in zip(libs, was):
            (lib.enable_progress_bar if on else lib.disable_progress_bar)()


def _generate_video(a: argparse.Namespace, opts: dict, pipeline_class: str) -> int:
    import warnings

    from . import runs
    from .cliutil import check_device

    prompts = _read_prompts(a)
    device = check_device(a.device)
    runs.check_out_dir(a.out)
    import torch
    from diffusers import DiffusionPipeline

    from .generate import run_pipeline

    call = {"num_inference_steps": a.steps}
    for key, value in (
        ("guidance_scale", a.guidance),
        ("num_frames", a.frames),
        ("height", a.height),
        ("width", a.width),
        ("negative_prompt", a.negative_prompt),
    ):
        if value is not None:
            call[key] = value
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[a.dtype]

    def one_line_warning(message, category, filename, lineno, file=None, line=None):
        print(f"bigain generate: warning: {' '.join(str(message).split())}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = one_line_warning
        with _loading_bars(not a.no_progress):
            kwargs = {} if dtype == torch.float32 else {"torch_dtype": dtype}  # fp32 is the default
            pipe = DiffusionPipeline.from_pretrained(a.model, **kwargs).to(device)
        summary = run_pipeline(
            pipe,
            prompts,
            a.method,
            opts,
            seed=a.seed,
            out_dir=a.out,
            num=a.num,
            fps=a.fps or 16,
            model=a.model,
            progress=not a.no_progress,
            **call,
        )
    print(
        f"wrote {summary['finished']} video{'s' if summary['finished'] != 1 else ''} "
        f"({summary['format']}; {summary['resumed']} resumed), "
        f"manifest.jsonl and contact_sheet.png to {a.out}"
    )
    return 0


def _classify(argv: Sequence[str]) -> int:
    from .classify.cli import main_unguarded

    return main_unguarded(list(argv))


def _train(argv: Sequence[str]) -> int:
    from .models.train_args import build_parser

    build_parser().parse_args(list(argv))  # usage errors before torch loads
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
    from .bench.cli import main  # parses before it imports torch

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
