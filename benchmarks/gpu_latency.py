"""GPU latency of every method on full-size denoisers (random weights), read against what is possible.

Per case (model, image size, batch), in one process and one run: none; tomesd r0.5/r0.7 on the
U-Nets (at the placement bigain uses by default); tome and bigain-tm r0.5/r0.7; todo and bigain-td
factor 2; sito r0.5; all at each backbone's default placement. Beside them, what is possible at that
placement (`bigain.bench.bounds`): the "ceiling" (the compressed attentions return zeros) and the
"ideal" at r0.5/r0.7 (they run on (1 - r)·N tokens behind a free merge: a slice, and a repeat back
to N). Broader settings (merge_mlp=True; blocks="all") and the default settings with bigain's GPU
fast paths off ("ref-ops": the PyTorch reference operators) run in the same rounds and are reported
separately. Settings are visited in interleaved rounds (rotated and reversed order); each visit
patches the model, runs untimed warm-up forwards, then times forwards with CUDA events. Reported:
median with p10/p90 of the forwards, and the speedup as the median (p10/p90) of the per-round
ratios time(none) / time(setting). Raw per-round times go to the JSON.

Video cases (Wan 2.1-1.3B at 480p / 81 frames, whole model; Wan 2.1-14B at 720p / 81 frames as a
stack of 4 of its 40 blocks at full width, every setting on every block) run none and the bounds;
the methods join by themselves once bigain supports the model, and read "not supported yet" until then.

Parts (each sized for one GPU run of <= 7 minutes with model builds; resumable per case):

    python benchmarks/gpu_latency.py --part eager [--cases sd2-512-b2 ...]   # the matrix
    python benchmarks/gpu_latency.py --part compiled    # torch.compile(fullgraph) subset, compiled none as base
    python benchmarks/gpu_latency.py --part classify    # diffusion-classifier images/s, SD2 U-Net 512 px
    python benchmarks/gpu_latency.py --report           # benchmarks/results/gpu-latency.md with the targets
    python benchmarks/gpu_latency.py --smoke            # tiny models on the CPU, every part, to a temp folder

Results are kept per case in benchmarks/results/gpu-latency.json (written atomically after each
case); a rerun skips the cases already finished (--redo runs them again). A part stops starting new
cases once --budget-s seconds have passed, so a later run finishes the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import logging
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bigain.bench import build_model, call_model, example_inputs, machine_info, patched  # noqa: E402
from bigain.bench.models import model_spec, video_inputs  # noqa: E402
from bigain.bench.results import read_json, write_atomic, write_json  # noqa: E402
from bigain.bench.timing import interleave, spread, time_events  # noqa: E402
from bigain.patching import inspect_model  # noqa: E402
from bigain.precision import DTYPES  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu-latency"
PARTS = ("sync", "eager", "compiled", "classify")


@dataclass(frozen=True)
class Case:
    id: str
    model: str
    pixels: int
    batch: int
    dtype: str = "fp16"
    video: tuple[int, int, int] | None = None  # (frames, height, width) of a video transformer's input
    layers: int | None = None  # a stack of the model's first N blocks at full width
    blocks: str | None = None  # placement of every setting ("all"); None: each backbone's default


# Video: the whole Wan 2.1-1.3B at 480p; Wan 2.1-14B at 720p as a stack of 4 of its 40 blocks (with its
# embeddings and output layer), every block compressed: the whole model takes ~10 s a forward on an
# H200, too long for one case's rounds in a device session. Methods run through bigain's Wan adapter.
VIDEO_SMOKE = (9, 64, 96)  # --smoke: tiny Wan at 9 frames of 64 x 96 px (3 x 4 x 6 tokens)


CASES = (
    Case("sd2-512-b2", "sd2", 512, 2),
    Case("sd2-1024-b2", "sd2", 1024, 2),
    Case("sd2-1024-b8", "sd2", 1024, 8),
    Case("sd2-2048-b1", "sd2", 2048, 1),
    Case("sdxl-1024-b2", "sdxl", 1024, 2),
    Case("sdxl-1024-b8", "sdxl", 1024, 8),
    Case("pixart-1024-b2", "pixart-alpha", 1024, 2),
    Case("pixart-1024-b8", "pixart-alpha", 1024, 8),
    Case("dit-256-b8", "dit-xl2", 256, 8),
    Case("dit-256-b64", "dit-xl2", 256, 64),
    Case("dit-512-b16", "dit-xl2", 512, 16),
    Case("sd3-1024-b2", "sd3-medium", 1024, 2),
    Case("flux-1024-b1", "flux-dev", 1024, 1, "bf16"),
    Case("wan1.3b-480p-b1", "wan2.1-1.3b", 480, 1, "bf16", video=(81, 480, 832)),
    Case(
        "wan14b-720p-4blocks-b1", "wan2.1-14b", 720, 1, "bf16", video=(81, 720, 1280), layers=4, blocks="all"
    ),
)
CASE_BY_ID = {c.id: c for c in CASES}


@dataclass(frozen=True)
class Setting:
    key: str
    method: str | None  # None: the uncompressed baseline
    options: dict[str, Any] = field(default_factory=dict)
    group: str = "main"  # "main" | "bound" | "broader" | "reference"
    fast: str | None = None  # bigain.ops.fast mode for this setting ("off": the PyTorch reference ops)


def supported(model: torch.nn.Module) -> bool:
    """Whether bigain's methods run on the model (an adapter exists): `inspect_model` raises
    TypeError otherwise. The bounds run either way (on video transformers, through their layout)."""
    try:
        inspect_model(model)
    except TypeError:
        return False
    return True


def settings_for(
    model: torch.nn.Module, broader: bool = True, reference: bool = False, blocks: str | None = None
) -> list[Setting]:
    """The settings of one eager case. tomesd runs on U-Nets only, at the level bigain places at
    by default (SDXL: 2), so both compress the same blocks. `reference` adds the default settings
    with the GPU fast paths off (the PyTorch reference ops), to read what the kernels buy.
    `blocks="all"` places every setting on every block (and drops the broader "all" settings).
    On a model bigain does not support yet the methods stay listed; running them records "not
    supported yet", so they switch on by themselves when its adapter lands."""
    info = inspect_model(model) if supported(model) else None
    where: dict[str, Any] = {"blocks": blocks} if blocks else {}
    out = [Setting("none", None)]
    if info is not None and info.kind == "unet" and not blocks:
        for r in (0.5, 0.7):
            out.append(Setting(f"tomesd r{r}", "tomesd", {"ratio": r, "max_downsample": info.default_level}))
    for m in ("tome", "bigain-tm"):
        for r in (0.5, 0.7):
            out.append(Setting(f"{m} r{r}", m, {"ratio": r, **where}))
    out += [
        Setting("todo f2", "todo", {"downsample_factor": 2, **where}),
        Setting("bigain-td f2", "bigain-td", {"downsample_factor": 2, **where}),
        Setting("sito r0.5", "sito", {"ratio": 0.5, **where}),
        Setting("ceiling", "ceiling", {**where}, "bound"),
        Setting("ideal r0.5", "ideal", {"ratio": 0.5, **where}, "bound"),
        Setting("ideal r0.7", "ideal", {"ratio": 0.7, **where}, "bound"),
    ]
    if broader and blocks != "all":
        out += [
            Setting("tome r0.5 +mlp", "tome", {"ratio": 0.5, "merge_mlp": True}, "broader"),
            Setting("bigain-tm r0.5 +mlp", "bigain-tm", {"ratio": 0.5, "merge_mlp": True}, "broader"),
            Setting("tome r0.5 all", "tome", {"ratio": 0.5, "blocks": "all"}, "broader"),
            Setting("bigain-tm r0.5 all", "bigain-tm", {"ratio": 0.5, "blocks": "all"}, "broader"),
            Setting("todo f2 all", "todo", {"downsample_factor": 2, "blocks": "all"}, "broader"),
            Setting("bigain-td f2 all", "bigain-td", {"downsample_factor": 2, "blocks": "all"}, "broader"),
            Setting("ceiling all", "ceiling", {"blocks": "all"}, "broader"),
            Setting("ideal r0.5 all", "ideal", {"ratio": 0.5, "blocks": "all"}, "broader"),
        ]
    if reference:
        for key, m, opts in (
            ("tome r0.5", "tome", {"ratio": 0.5}),
            ("bigain-tm r0.5", "bigain-tm", {"ratio": 0.5}),
            ("bigain-td f2", "bigain-td", {"downsample_factor": 2}),
            ("sito r0.5", "sito", {"ratio": 0.5}),
        ):
            out.append(Setting(f"{key} ref-ops", m, opts, "reference", fast="off"))
    return out


@contextlib.contextmanager
def setting_context(model: torch.nn.Module, st: Setting) -> Iterator[Any]:
    """The setting's patch, under its fast-path mode if it names one."""
    from bigain.ops import fast

    mode = fast.using(st.fast) if st.fast else contextlib.nullcontext()
    with mode, patched(model, st.method, **st.options) as report:
        yield report


# The compiled subset: (case, torch.compile mode, settings). Every bigain method compiles fullgraph
# on DiT-XL/2; the batch-2 U-Net/PixArt cases also run under CUDA graphs ("reduce-overhead").
COMPILED_KEYS = ("none", "tome r0.5", "bigain-tm r0.5", "todo f2", "bigain-td f2", "sito r0.5", "ideal r0.5")
COMPILED = (
    ("dit-256-b64", None, COMPILED_KEYS),
    (
        "sd2-512-b2",
        "reduce-overhead",
        ("none", "tome r0.5", "bigain-tm r0.5", "todo f2", "bigain-td f2", "ideal r0.5"),
    ),
    ("sd2-1024-b8", None, ("none", "tome r0.5", "todo f2", "ideal r0.5")),
    ("pixart-1024-b2", "reduce-overhead", ("none", "tome r0.5", "todo f2", "ideal r0.5")),
    ("sd2-1024-b2", "reduce-overhead", ("none", "tome r0.5", "todo f2", "ideal r0.5")),
)
CLASSIFY_METHODS = (
    ("none", None, {}),
    ("tome r0.5", "tome", {"ratio": 0.5}),
    ("bigain-tm r0.5", "bigain-tm", {"ratio": 0.5}),
    ("todo f2", "todo", {"downsample_factor": 2}),
    ("bigain-td f2", "bigain-td", {"downsample_factor": 2}),
    ("sito r0.5", "sito", {"ratio": 0.5}),
)


# ---------------------------------------------------------------------------------------------
# helpers


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def error_text(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def versions() -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    for pkg in ("diffusers", "tomesd", "triton", "transformers"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    from bigain.ops import fast

    out["bigain_fast"] = {"mode": fast.mode(), "triton": fast.available()}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return out


def rounds_for(seconds_per_round: float, args: argparse.Namespace) -> int:
    """Rounds that fit the case budget, clamped to [--min-rounds, --rounds]."""
    if seconds_per_round <= 0:
        return args.rounds
    fit = int(args.case_budget_s / seconds_per_round)
    return max(args.min_rounds, min(args.rounds, fit))


def summarize_times(rounds: list[list[float]], base: list[list[float]] | None) -> dict[str, Any]:
    """Median/p10/p90 of all timed forwards (ms) and of the per-round speedups over `base`."""
    flat = [t for r in rounds for t in r]
    if not flat:
        return {"forwards": 0}
    out: dict[str, Any] = {"ms": {k: 1000 * v for k, v in spread(flat).items()}, "forwards": len(flat)}
    if base is not None:
        ratios = [statistics.median(b) / statistics.median(r) for b, r in zip(base, rounds) if b and r]
        if ratios:
            out["speedup"] = spread(ratios)
            out["speedup_of_medians"] = statistics.median(t for r in base for t in r) / statistics.median(
                flat
            )
    return out


def selected(settings: list[Setting], args: argparse.Namespace) -> list[Setting]:
    """The settings named by --settings (none always kept)."""
    if not args.settings:
        return settings
    return [st for st in settings if st.key == "none" or st.key in args.settings]


def case_inputs(case: Case, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    pixels, batch = effective_size(case, args)
    dtype = DTYPES[case_dtype(case, args)]
    if case.video:
        return video_inputs(
            case.model, *video_size(case, args), batch, dtype=dtype, device=device, tiny=args.smoke
        )
    return example_inputs(case.model, pixels, batch, dtype=dtype, device=device, tiny=args.smoke)


def video_size(case: Case, args: argparse.Namespace) -> tuple[int, int, int]:
    """(frames, height, width) of a video case, or in --smoke a tiny video for the tiny model."""
    assert case.video is not None
    return VIDEO_SMOKE if args.smoke else case.video


def effective_size(case: Case, args: argparse.Namespace) -> tuple[int, int]:
    """(pixels, batch): the case's, or in --smoke 64 px (an 8x8 latent) and batch <= 2."""
    if args.smoke:
        return 64, min(case.batch, 2)
    return case.pixels, case.batch


def case_dtype(case: Case, args: argparse.Namespace) -> str:
    return "fp32" if args.smoke else case.dtype


def build(case: Case, args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, float]:
    t0 = time.perf_counter()
    pixels, _ = effective_size(case, args)
    model = build_model(
        case.model,
        device=device,
        dtype=DTYPES[case_dtype(case, args)],
        pixels=pixels,
        tiny=args.smoke,
        layers=case.layers,
    )
    sync(device)
    return model, time.perf_counter() - t0


def case_header(case: Case, args: argparse.Namespace, device: torch.device, part: str) -> dict[str, Any]:
    pixels, batch = effective_size(case, args)
    spec = model_spec(case.model, args.smoke)
    return dict(
        id=case.id,
        part=part,
        model=case.model,
        family=spec.family,
        tiny=args.smoke,
        pixels=pixels,
        **({"video": list(video_size(case, args))} if case.video else {}),
        **({"layers": case.layers} if case.layers else {}),
        placement=case.blocks or "default",
        batch=batch,
        dtype=case_dtype(case, args),
        device=str(device),
        gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        started=now(),
        complete=False,
    )


# ---------------------------------------------------------------------------------------------
# eager


def run_eager_case(case: Case, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    rec = case_header(case, args, device, "eager")
    model, rec["build_s"] = build(case, args, device)
    inputs = case_inputs(case, args, device)
    settings = selected(
        settings_for(model, not args.no_broader, not args.no_reference_ops, case.blocks), args
    )
    adapter = supported(model)
    if adapter:
        info = inspect_model(model)
        rec["backbone"] = info.kind
        rec["default_level"] = info.default_level
    else:
        rec["backbone"] = None  # no adapter yet: only none and the bounds run
    rec["settings"] = {}

    def forward() -> None:
        with torch.inference_mode():
            call_model(model, inputs)

    # First round, untimed: every setting once (validates it, compiles nothing, warms the allocator).
    usable: list[Setting] = []
    est = 0.0
    for st in settings:
        entry: dict[str, Any] = {"method": st.method or "none", "options": st.options, "group": st.group}
        rec["settings"][st.key] = entry
        try:
            with setting_context(model, st) as report:
                if report is not None:
                    entry["blocks"] = [b.index for b in report.blocks]
                t = time_events(forward, device, 1 + args.warmup)
                if st.method is None:  # random weights in fp16 can overflow; the time is still the time
                    with torch.inference_mode():
                        y = first_tensor(call_model(model, inputs))
                    rec["none_output_finite"] = bool(torch.isfinite(y).all())
            est += min(t) * (args.warmup + args.forwards)
            usable.append(st)
        except Exception as exc:  # a setting that cannot run is reported, not fatal
            if isinstance(exc, TypeError) and not adapter and st.group != "bound":
                # bigain does not support the model yet: recorded, and run once it does
                entry["not_supported"] = f"not supported yet ({str(exc).splitlines()[0][:120]})"
                print(f"  {st.key}: not supported yet", flush=True)
                continue
            entry["error"] = error_text(exc)
            print(f"  {st.key}: {entry['error']}", flush=True)
            free_memory(device)
    rounds = rounds_for(est, args)
    rec["rounds"] = rounds
    by_key = {st.key: st for st in usable}

    def visit(key: str, rnd: int) -> list[float]:
        st = by_key[key]
        if "error" in rec["settings"][key]:
            return []
        try:
            with setting_context(model, st):
                for _ in range(args.warmup):
                    forward()
                return time_events(forward, device, args.forwards)
        except Exception as exc:  # e.g. out of memory in a later round: drop the setting, keep the case
            rec["settings"][key]["error"] = f"round {rnd}: {error_text(exc)}"
            free_memory(device)
            return []

    t0 = time.perf_counter()
    times = interleave(list(by_key), rounds, visit)
    rec["timing_s"] = time.perf_counter() - t0
    base = times.get("none")
    for key, rr in times.items():
        rec["settings"][key]["rounds_s"] = rr
        rec["settings"][key].update(summarize_times(rr, None if key == "none" else base))
    rec["finished"] = now()
    rec["complete"] = True
    return rec


# ---------------------------------------------------------------------------------------------
# compiled


def configure_dynamo(limit: int) -> None:
    """Room for one compiled graph per setting, and guards on module hooks: by default Dynamo skips
    them, so a copy patched with plain torch hooks (the bounds) could silently reuse the graph of
    an unpatched copy of the same class."""
    import torch._dynamo

    cfg = torch._dynamo.config
    for name in (
        "cache_size_limit",
        "recompile_limit",
        "accumulated_cache_size_limit",
        "accumulated_recompile_limit",
    ):
        if hasattr(cfg, name):
            setattr(cfg, name, max(limit, getattr(cfg, name)))
    if hasattr(cfg, "skip_nnmodule_hook_guards"):
        cfg.skip_nnmodule_hook_guards = False


def first_tensor(out: Any) -> torch.Tensor:
    """The denoiser's prediction from a tuple or an output dataclass."""
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.sample if hasattr(out, "sample") else out


def run_compiled_case(
    case: Case, mode: str | None, keys: tuple[str, ...], args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """One compiled copy of the model per setting (patched, then torch.compile(fullgraph=True)),
    timed in interleaved rounds like the eager matrix; speedups against compiled none."""
    rec = case_header(case, args, device, "compiled")
    rec["mode"] = mode or "default"
    rec["backend"] = args.compile_backend
    base_model, rec["build_s"] = build(case, args, device)
    inputs = case_inputs(case, args, device)
    wanted = {st.key: st for st in settings_for(base_model, broader=False)}
    rec["settings"] = {}
    configure_dynamo(64)
    compiled: dict[str, Callable[[], Any]] = {}
    stacks: list[contextlib.ExitStack] = []
    cudagraphs = mode is not None and "overhead" in mode or mode == "max-autotune"
    for key in keys:
        st = wanted.get(key)
        if args.settings and key not in args.settings and key != "none":
            continue
        if st is None:
            continue
        entry: dict[str, Any] = {"method": st.method or "none", "options": st.options}
        rec["settings"][key] = entry
        stack = contextlib.ExitStack()
        try:
            model = copy.deepcopy(base_model)
            stack.enter_context(patched(model, st.method, **st.options))
            with torch.inference_mode():  # eager once (adapters learn grids outside the graph)
                eager_out = first_tensor(call_model(model, inputs)).float().clone()
            kw: dict[str, Any] = {"fullgraph": True, "backend": args.compile_backend}
            if args.compile_backend == "inductor" and mode:
                kw["mode"] = mode
            cmodel = torch.compile(model, **kw)

            def fn(cmodel: Any = cmodel) -> Any:
                if cudagraphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with torch.inference_mode():
                    return call_model(cmodel, inputs)

            t0 = time.perf_counter()
            compiled_out = first_tensor(fn()).float().clone()
            sync(device)
            entry["compile_s"] = time.perf_counter() - t0
            # Same model, same patch: equal up to kernel rounding, except where the method draws a
            # new random pattern per call (tome, bigain-tm, sito with use_rand).
            entry["max_abs_vs_eager"] = float((compiled_out - eager_out).abs().max())
            for _ in range(2):  # CUDA graphs record on a later call
                fn()
            sync(device)
            compiled[key] = fn
            stacks.append(stack)
            print(f"  compiled {key} in {entry['compile_s']:.1f}s", flush=True)
        except Exception as exc:
            entry["error"] = error_text(exc)
            print(f"  {key}: {entry['error']}", flush=True)
            stack.close()
    if "none" in compiled:
        est = sum(min(time_events(fn, device, 1)) for fn in compiled.values()) * (args.warmup + args.forwards)
        rounds = rounds_for(est, args)
        rec["rounds"] = rounds

        def visit(key: str, rnd: int) -> list[float]:
            if "error" in rec["settings"][key]:
                return []
            try:
                for _ in range(args.warmup):
                    compiled[key]()
                return time_events(compiled[key], device, args.forwards)
            except Exception as exc:
                rec["settings"][key]["error"] = f"round {rnd}: {error_text(exc)}"
                return []

        times = interleave(list(compiled), rounds, visit)
        for key, rr in times.items():
            rec["settings"][key]["rounds_s"] = rr
            rec["settings"][key].update(summarize_times(rr, None if key == "none" else times["none"]))
    else:
        rec["error"] = "compiled none failed: no baseline"
    for stack in stacks:
        stack.close()
    compiled.clear()
    del base_model
    torch._dynamo.reset()
    free_memory(device)
    rec["finished"] = now()
    rec["complete"] = True
    return rec


# ---------------------------------------------------------------------------------------------
# classify


def sd_alphas() -> torch.Tensor:
    """Stable Diffusion's training schedule (scaled-linear betas 0.00085 to 0.012, 1000 steps)."""
    from bigain.models.registry import alphas_cumprod_from_config

    return alphas_cumprod_from_config(
        {
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "num_train_timesteps": 1000,
        }
    )


def run_classify_case(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Images/s of the diffusion classifier (adaptive protocol: 5 timesteps for every class, then
    20 for the 5 best) on the SD2 U-Net at 512 px with 37 random CLIP-shaped class embeddings
    (as for Oxford-IIIT Pets; --classify-classes changes the number)."""
    from bigain.classify import DiffusionClassifier
    from bigain.models.bundle import DiffusionBundle

    case = Case("classify-sd2-512", "sd2", 512, 1)
    rec = case_header(case, args, device, "classify")
    model, rec["build_s"] = build(case, args, device)
    spec = model_spec("sd2", args.smoke)
    pixels, _ = effective_size(case, args)
    dtype = DTYPES[case_dtype(case, args)]
    n_classes = args.classify_classes
    gen = torch.Generator().manual_seed(0)
    emb = torch.randn(n_classes, spec.text_tokens, spec.text_dim, generator=gen).to(
        device=device, dtype=dtype
    )
    side = pixels // 8
    bundle = DiffusionBundle(
        name="sd2-random",
        denoiser=model,
        kind="unet",
        alphas_cumprod=sd_alphas(),
        num_classes=n_classes,
        class_names=[f"class {i}" for i in range(n_classes)],
        sample_shape=(4, side, side),
        conditioning=lambda labels: {"encoder_hidden_states": emb[labels.to(emb.device)]},
    )
    images = args.classify_images
    x0 = torch.randn(images, 4, side, side, generator=gen)
    keys = list(range(images))
    protocol = dict(n_samples=(5, 20), to_keep=(5, 1), loss="l2")
    rec.update(
        classes=n_classes,
        images_per_visit=images,
        batch_size=args.classify_batch,
        protocol="n_samples 5 20, to_keep 5 1, l2, per-sample noise",
        settings={},
    )
    dt = case_dtype(case, args)
    usable = []
    for key, method, opts in CLASSIFY_METHODS:
        if args.settings and key not in args.settings and key != "none":
            continue
        entry: dict[str, Any] = {"method": method or "none", "options": opts}
        rec["settings"][key] = entry
        try:
            with _compressed(bundle, method, opts):
                clf = DiffusionClassifier(bundle, batch_size=args.classify_batch, dtype=dt, **protocol)
                res = clf.classify_batch(x0[:1], keys[:1])  # warm-up, untimed
            entry["rows_per_image"] = res[0].calls
            usable.append(key)
        except Exception as exc:
            entry["error"] = error_text(exc)
            print(f"  classify {key}: {entry['error']}", flush=True)
    by_key = {k: (m, o) for k, m, o in CLASSIFY_METHODS}
    preds: dict[str, list[int]] = {}

    def visit(key: str, rnd: int) -> list[float]:
        method, opts = by_key[key]
        if "error" in rec["settings"][key]:
            return []
        try:
            with _compressed(bundle, method, opts):
                clf = DiffusionClassifier(bundle, batch_size=args.classify_batch, dtype=dt, **protocol)
                out: list[Any] = []
                t = time_events(lambda: out.extend(clf.classify_batch(x0, keys)), device, 1)
        except Exception as exc:
            rec["settings"][key]["error"] = f"round {rnd}: {error_text(exc)}"
            free_memory(device)
            return []
        preds[key] = [r.prediction for r in out]
        return t

    rounds = max(1, args.classify_rounds)
    rec["rounds"] = rounds
    times = interleave(usable, rounds, visit)
    for key, rr in times.items():
        e = rec["settings"][key]
        e["rounds_s"] = rr
        e.update(summarize_times(rr, None if key == "none" else times.get("none")))
        if e.get("forwards"):
            e["images_per_s"] = images / e["ms"]["median"] * 1000
        e["predictions"] = preds.get(key)
    rec["finished"] = now()
    rec["complete"] = True
    return rec


@contextlib.contextmanager
def _compressed(bundle: Any, method: str | None, opts: dict[str, Any]) -> Iterator[None]:
    if method is None:
        yield
        return
    import bigain

    with bigain.compressed(bundle, method, **opts):
        yield


# ---------------------------------------------------------------------------------------------
# the results file and the driver


def load(out: Path) -> dict[str, Any]:
    data = read_json(out.with_suffix(".json"))
    if not isinstance(data, dict):
        data = {}
    data.setdefault("cases", {})
    data.setdefault("runs", [])
    return data


def save(out: Path, data: dict[str, Any]) -> None:
    data["updated"] = now()
    write_json(out.with_suffix(".json"), data)


SYNC_MODELS = ("sd2", "sdxl", "dit-xl2", "pixart-alpha", "sd3-medium", "flux-dev")
SYNC_METHODS = ("tome", "bigain-tm", "todo", "bigain-td", "sito")


def _to(v: Any, device: torch.device) -> Any:
    if isinstance(v, torch.Tensor):
        return v.to(device)
    if isinstance(v, dict):
        return {k: _to(x, device) for k, x in v.items()}
    return v


def _steady_forward(model: torch.nn.Module, inputs: dict[str, Any], device: torch.device) -> Any:
    latent = next(iter(inputs))
    kwargs = {k: v for k, v in inputs.items() if k != latent}
    with torch.no_grad():
        return model(inputs[latent], **kwargs)


def run_sync_case(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Every method on every family (tiny configs: a sync is a sync at any size) with the timesteps on
    the device, as pipelines pass them: on CUDA a steady-state forward under
    `torch.cuda.set_sync_debug_mode("error")` (a host<->device sync raises); elsewhere (--smoke) the
    meta-device transfer counter of `bigain.bench.dispatch`. Also: capture in CUDA graphs
    (`torch.compile(mode="reduce-overhead")`) of a patched DiT, replayed over two timesteps."""
    import bigain
    from bigain.bench.dispatch import count_traffic

    cuda = device.type == "cuda"
    run_device = device if cuda else torch.device("meta")
    results: dict[str, Any] = {}
    for name in SYNC_MODELS:
        spec = model_spec(name, tiny=True)
        for method in SYNC_METHODS:
            key = f"{name} {method}"
            try:
                model = build_model(name, run_device, tiny=True)
                inputs = _to(example_inputs(name, 64, 2, device="cpu", tiny=True), run_device)
                opts = {"blocks": "all"} if spec.family in ("sd3", "flux") else {}
                bigain.apply(model, method, **opts)
                if spec.family == "flux":
                    n = inputs["img_ids"].shape[0]
                    side = int(round(n**0.5))
                    bigain.set_grid(model, (side, n // side))
                _steady_forward(model, inputs, run_device)  # warm-up: per-device caches, Flux grid
                if cuda:
                    torch.cuda.synchronize(device)
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        _steady_forward(model, inputs, run_device)
                    finally:
                        torch.cuda.set_sync_debug_mode("default")
                    results[key] = {"ok": True}
                else:
                    tr = count_traffic(lambda m=model, i=inputs: _steady_forward(m, i, run_device))
                    results[key] = {"ok": tr.transfers == 0, "h2d": tr.h2d, "d2h": tr.d2h}
            except Exception as exc:  # a sync raises here on CUDA: record which method and model
                results[key] = {"ok": False, "error": error_text(exc)}
            print(f"    {key:28s} {'ok' if results[key]['ok'] else 'SYNC: ' + str(results[key])}", flush=True)
    graphs: dict[str, Any] = {}
    if cuda:
        for method in SYNC_METHODS:
            try:
                model = build_model("dit-xl2", device, tiny=True)
                inputs = example_inputs("dit-xl2", 64, 2, device=device, tiny=True)
                bigain.apply(model, method)
                eager = [first_tensor(_steady_forward(model, dict(inputs, timestep=t), device)).clone()
                         for t in (torch.full((2,), 700, device=device), torch.full((2,), 300, device=device))]
                torch._dynamo.reset()
                compiled = torch.compile(model, mode="reduce-overhead", fullgraph=True)
                outs = []
                for _ in range(3):  # warm-up, record, replay
                    outs = [first_tensor(_steady_forward(compiled, dict(inputs, timestep=t), device)).clone()
                            for t in (torch.full((2,), 700, device=device), torch.full((2,), 300, device=device))]
                err = max(float((a - b).abs().max()) for a, b in zip(outs, eager))
                graphs[method] = {"ok": err < 5e-2, "max_abs_diff": err}
            except Exception as exc:
                graphs[method] = {"ok": False, "error": error_text(exc)}
            print(f"    cudagraphs {method:12s} {graphs[method]}", flush=True)
    return {
        "id": "sync",
        "part": "sync",
        "complete": True,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "check": "cuda sync debug mode" if cuda else "meta-device transfer counter",
        "results": results,
        "cuda_graphs": graphs,
        "all_ok": all(r["ok"] for r in results.values()) and all(g["ok"] for g in graphs.values()),
    }


def run_part(
    part: str, args: argparse.Namespace, data: dict[str, Any], out: Path, device: torch.device
) -> None:
    t_start = time.perf_counter()
    if part == "eager":
        jobs = [(f"eager:{c.id}", c, None, ()) for c in CASES if not args.cases or c.id in args.cases]
    elif part == "compiled":
        jobs = [
            (f"compiled:{cid}:{mode or 'default'}", CASE_BY_ID[cid], mode, keys)
            for cid, mode, keys in COMPILED
            if not args.cases or cid in args.cases
        ]
    elif part == "sync":
        jobs = [("sync:all", None, None, ())]
    else:
        jobs = [("classify:sd2-512", None, None, ())]
    for key, case, mode, keys in jobs:
        done = data["cases"].get(key, {})
        if done.get("complete") and not args.redo:
            print(f"= {key}: finished earlier, skipped", flush=True)
            continue
        elapsed = time.perf_counter() - t_start
        if elapsed > args.budget_s:
            print(
                f"= {key}: not started, the part's budget ({args.budget_s:.0f}s) is spent; rerun to go on",
                flush=True,
            )
            continue
        print(f"= {key} (part time so far {elapsed:.0f}s)", flush=True)
        t0 = time.perf_counter()
        try:
            if part == "eager":
                rec = run_eager_case(case, args, device)
            elif part == "compiled":
                rec = run_compiled_case(case, mode, keys, args, device)
            elif part == "sync":
                rec = run_sync_case(args, device)
            else:
                rec = run_classify_case(args, device)
        except Exception as exc:  # one case failing must not lose the others of an unattended run
            rec = {"id": key, "part": part, "complete": False, "error": error_text(exc)}
            rec["traceback"] = traceback.format_exc()[-3000:]
            print(f"  {key} failed: {rec['error']}", flush=True)
        free_memory(device)  # the case's model went out of scope with its function
        rec["wall_s"] = time.perf_counter() - t0
        data["cases"][key] = rec
        save(out, data)
        print(f"  {key}: {rec['wall_s']:.0f}s", flush=True)
        for k, s in rec.get("settings", {}).items():
            if "ms" in s:
                sp = s.get("speedup", {}).get("median")
                print(f"    {k:22s} {s['ms']['median']:9.2f} ms" + (f"  {sp:.3f}x" if sp else ""), flush=True)


# ---------------------------------------------------------------------------------------------
# report


def _sp(s: dict[str, Any] | None) -> float | None:
    return None if not s or "speedup" not in s else s["speedup"]["median"]


def _cell(s: dict[str, Any] | None, base: bool = False) -> str:
    if s is None:
        return "–"
    if "not_supported" in s:
        return "not supported yet"
    if "error" in s and "ms" not in s:
        return "error"
    if base:
        m = s["ms"]
        return f"{m['median']:.1f} ({m['p10']:.1f}–{m['p90']:.1f})"
    sp = s.get("speedup")
    return "–" if sp is None else f"{sp['median']:.2f} ({sp['p10']:.2f}–{sp['p90']:.2f})"


def check_targets(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each met or not, with the numbers it was judged on."""
    out: list[dict[str, Any]] = []

    def add(target: str, case: str, value: float, limit: float, detail: str) -> None:
        out.append(
            dict(target=target, case=case, value=value, limit=limit, met=value >= limit, detail=detail)
        )

    eager = {
        k.split(":", 1)[1]: v
        for k, v in data["cases"].items()
        if k.startswith("eager:") and v.get("complete")
    }
    for cid, rec in eager.items():
        st = rec.get("settings", {})
        for r in ("0.5", "0.7"):
            ideal = _sp(st.get(f"ideal r{r}"))
            for m in ("tome", "bigain-tm"):
                sp = _sp(st.get(f"{m} r{r}"))
                if ideal is None or sp is None:
                    continue
                if ideal >= 1.10 or rec.get("family") in ("sd3", "flux"):
                    need = 1 + 0.8 * (ideal - 1)
                    add(
                        "merging >= 80% of the ideal gain",
                        cid,
                        sp,
                        need,
                        f"{m} r{r} {sp:.3f}, ideal {ideal:.3f}",
                    )
                if rec.get("family") in ("sd3", "flux") and sp is not None:
                    add("SD3/Flux merging never slower than none", cid, sp, 1.0, f"{m} r{r} {sp:.3f}")
            tomesd, tome = _sp(st.get(f"tomesd r{r}")), _sp(st.get(f"tome r{r}"))
            if tomesd is not None and tome is not None:
                add(
                    "tome >= same-run tomesd", cid, tome, tomesd, f"tome r{r} {tome:.3f}, tomesd {tomesd:.3f}"
                )
        for key in ("tome r0.5", "bigain-tm r0.5", "todo f2", "bigain-td f2", "sito r0.5"):
            sp = _sp(st.get(key))
            if sp is not None:
                add("every method at its defaults >= 0.98x none", cid, sp, 0.98, f"{key} {sp:.3f}")
        sp = _sp(st.get("sito r0.5"))
        if sp is not None:
            add("SiTo >= 0.95x", cid, sp, 0.95, f"sito r0.5 {sp:.3f}")
        todo = _sp(st.get("todo f2"))
        if todo is not None and cid in ("sd2-1024-b8", "sd2-2048-b1"):
            lim = 1.30 if cid == "sd2-1024-b8" else 1.70
            add(f"todo >= {lim:.2f}x", cid, todo, lim, f"todo f2 {todo:.3f}")
    for key, rec in data["cases"].items():
        if not key.startswith("compiled:") or not rec.get("complete"):
            continue
        cid = rec["id"]
        st = rec.get("settings", {})
        ok = [k for k, s in st.items() if "error" not in s]
        bad = [k for k, s in st.items() if "error" in s]
        out.append(
            dict(
                target="every method compiles fullgraph",
                case=f"{cid} {rec.get('mode')}",
                value=len(ok),
                limit=len(st),
                met=not bad,
                detail="all compiled"
                if not bad
                else "failed: " + "; ".join(f"{k}: {st[k]['error']}" for k in bad),
            )
        )
        e = eager.get(cid, {}).get("settings", {})
        for k, s in st.items():
            sp, esp = _sp(s), _sp(e.get(k))
            if k != "none" and sp is not None and esp is not None and not k.startswith("ideal"):
                add(
                    "compiled speedup >= eager speedup - 0.02",
                    f"{cid} {rec.get('mode')}",
                    sp,
                    esp - 0.02,
                    f"{k}: compiled {sp:.3f}, eager {esp:.3f}",
                )
    return out


def render(data: dict[str, Any]) -> str:
    v = data.get("versions", {})
    lines = [
        "# GPU latency of the compression methods",
        "",
        "Generated by `benchmarks/gpu_latency.py --report` from `gpu-latency.json`. Full-size denoisers built",
        "from their published configs with random weights (weights do not change the cost of a forward).",
        "Per case all settings ran in one process, in interleaved rounds; times are CUDA-event times of one",
        "denoiser forward. `none`: median ms (p10–p90 over all timed forwards). Other cells: speedup =",
        "median (p10–p90) over rounds of time(none) / time(setting) in the same round. ceiling: the",
        "compressed attentions return zeros; ideal r: they run on (1 − r)·N tokens behind a free merge (a",
        "slice and a repeat back to N). Both at the placement the methods use by default.",
        "",
    ]
    if data.get("smoke"):
        lines += ["**Smoke run: tiny models on the CPU. These numbers say nothing about speed.**", ""]
    gpus = sorted({str(r.get("gpu") or r.get("device")) for r in data["cases"].values() if r.get("complete")})
    if len(gpus) > 1:
        lines += [
            f"**Cases were measured on different devices ({', '.join(gpus)}): compare within a case only.**",
            "",
        ]
    lines += [
        f"GPU: {v.get('gpu', 'none (CPU)')}; torch {v.get('torch')} (CUDA {v.get('cuda')}), "
        f"diffusers {v.get('diffusers')}, tomesd {v.get('tomesd')}, triton {v.get('triton')}; "
        f"bigain fast paths: {v.get('bigain_fast')}.",
        "",
    ]
    eager = [(k, r) for k, r in data["cases"].items() if k.startswith("eager:")]
    main_cols = [
        "tomesd r0.5", "tome r0.5", "bigain-tm r0.5", "tomesd r0.7", "tome r0.7", "bigain-tm r0.7",
        "todo f2", "bigain-td f2", "sito r0.5",
    ]  # fmt: skip
    if eager:
        lines += ["## Eager, at each backbone's default placement", ""]
        for _, r in eager:
            if r.get("video"):
                f, h, w = r["video"]
                stack = (
                    f"a stack of its first {r['layers']} blocks at full width"
                    if r.get("layers")
                    else "the whole model"
                )
                where = "every block" if r.get("placement") == "all" else "the default placement"
                lines.append(
                    f"- {r['id']}: {r['model']} on {f} frames of {h} × {w} px, {stack}; all settings at {where}"
                    + (
                        ""
                        if r.get("backbone")
                        else "; bigain's methods do not support it yet (only none and the bounds run)"
                    )
                    + "."
                )
        if any(r.get("video") for _, r in eager):
            lines.append("")
        lines += ["| case | none ms | " + " | ".join(main_cols) + " |", "|---|---|" + "---|" * len(main_cols)]
        for _, r in eager:
            st = r.get("settings", {})
            lines.append(
                f"| {r['id']} ({r.get('dtype')}) | {_cell(st.get('none'), True)} | "
                + " | ".join(_cell(st.get(c)) for c in main_cols)
                + " |"
            )
        lines += ["", "### What is possible (same runs)", ""]
        lines += [
            "| case | ceiling | ideal r0.5 | ideal r0.7 | tome r0.5 of ideal gain | tome r0.7 of ideal gain |"
        ]
        lines += ["|---|---|---|---|---|---|"]
        for _, r in eager:
            st = r.get("settings", {})
            fr = []
            for q in ("0.5", "0.7"):
                i, t = _sp(st.get(f"ideal r{q}")), _sp(st.get(f"tome r{q}"))
                fr.append("–" if i is None or t is None or abs(i - 1) < 1e-9 else f"{(t - 1) / (i - 1):.0%}")
            lines.append(
                f"| {r['id']} | {_cell(st.get('ceiling'))} | {_cell(st.get('ideal r0.5'))} | "
                f"{_cell(st.get('ideal r0.7'))} | {fr[0]} | {fr[1]} |"
            )
        small = []
        for _, r in eager:
            st = r.get("settings", {})
            c, i = _sp(st.get("ceiling")), _sp(st.get("ideal r0.5"))
            if c is not None and c < 1.10:
                i_txt = "" if i is None else f", the ideal at r0.5 {i:.2f}"
                small.append(f"- {r['id']}: ceiling {c:.2f}{i_txt}")
        if small:
            lines += [
                "",
                "Where compression cannot pay at the default placement (ceiling below 1.10: the compressed",
                "attentions take less than a tenth of the forward's time, so no method acting on them alone can",
                "make it more than 1.10x faster; at small batches the time can also be the GPU waiting on launches):",
                "",
                *small,
            ]
        broader = sorted(
            {k for _, r in eager for k, s in r.get("settings", {}).items() if s.get("group") == "broader"}
        )
        if broader:
            lines += ["", "### Broader settings (beyond the default placement; same runs)", ""]
            lines += ["| case | " + " | ".join(broader) + " |", "|---|" + "---|" * len(broader)]
            for _, r in eager:
                st = r.get("settings", {})
                lines.append(f"| {r['id']} | " + " | ".join(_cell(st.get(c)) for c in broader) + " |")
        ref = sorted({k for _, r in eager for k in r.get("settings", {}) if k.endswith(" ref-ops")})
        if ref:
            lines += [
                "",
                "### Fast paths: the same settings with the PyTorch reference ops (fast / reference)",
                "",
            ]
            lines += [
                "| case | " + " | ".join(k[: -len(" ref-ops")] for k in ref) + " |",
                "|---|" + "---|" * len(ref),
            ]
            for _, r in eager:
                st = r.get("settings", {})
                cells = [f"{_cell(st.get(k[: -len(' ref-ops')]))} / {_cell(st.get(k))}" for k in ref]
                lines.append(f"| {r['id']} | " + " | ".join(cells) + " |")
        errs = [
            (r["id"], k, s["error"])
            for _, r in eager
            for k, s in r.get("settings", {}).items()
            if "error" in s
        ]
        if errs:
            lines += ["", "Settings that could not run:", ""]
            lines += [f"- {cid} {k}: {e}" for cid, k, e in errs]
        lines.append("")
    comp = [(k, r) for k, r in data["cases"].items() if k.startswith("compiled:")]
    if comp:
        lines += ["## torch.compile (fullgraph), speedups against compiled none", ""]
        lines += [
            "| case | mode | setting | compile s | ms | speedup (compiled) | speedup (eager, same case) |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for _, r in comp:
            e = data["cases"].get(f"eager:{r['id']}", {}).get("settings", {})
            for k, s in r.get("settings", {}).items():
                cs = s.get("compile_s")
                ms = "error: " + s["error"] if "error" in s else _cell(s, True)
                lines.append(
                    f"| {r['id']} | {r.get('mode')} | {k} | {'' if cs is None else f'{cs:.0f}'} | {ms} | "
                    f"{_cell(s) if k != 'none' else '1'} | {_cell(e.get(k)) if k != 'none' else '1'} |"
                )
        lines.append("")
    cl = data["cases"].get("classify:sd2-512")
    if cl:
        lines += [
            f"## Diffusion classifier (SD2 U-Net, {cl.get('pixels')} px, {cl.get('classes')} classes, random "
            "CLIP-shaped class embeddings)",
            "",
            f"Protocol: {cl.get('protocol')}; {cl.get('images_per_visit')} images per timed call, batch size "
            f"{cl.get('batch_size')}, {cl.get('rounds')} round(s).",
            "",
            "| setting | rows/image | s per call (p10–p90) | images/s | speedup |",
            "|---|---|---|---|---|",
        ]
        for k, s in cl.get("settings", {}).items():
            if "error" in s:
                lines.append(f"| {k} | | error: {s['error']} | | |")
                continue
            if "ms" not in s:
                continue
            m = s["ms"]
            lines.append(
                f"| {k} | {s.get('rows_per_image')} | {m['median'] / 1000:.2f} ({m['p10'] / 1000:.2f}–{m['p90'] / 1000:.2f}) | "
                f"{s['images_per_s']:.2f} | {_cell(s) if k != 'none' else '1'} |"
            )
        lines.append("")
    targets = check_targets(data)
    if targets:
        met = sum(t["met"] for t in targets)
        lines += [f"## Targets ({met} of {len(targets)} met)", ""]
        for t in targets:
            lines.append(f"- {'met' if t['met'] else 'NOT MET'}: {t['target']} — {t['case']}: {t['detail']}")
        lines.append("")
    lines += ["Runs: " + "; ".join(f"{r['started']} {r['command']}" for r in data.get("runs", [])), ""]
    sync = data["cases"].get("sync:all")
    if sync and sync.get("complete"):
        bad = [k for k, r in sync["results"].items() if not r["ok"]]
        lines += [
            "",
            "## Host syncs in a patched forward",
            "",
            f"Check: {sync['check']} on {sync.get('gpu') or sync['device']}; every method on every family "
            "(tiny configs), timesteps on the device as pipelines pass them: "
            + ("no sync in any." if not bad else "syncs in: " + ", ".join(bad) + "."),
        ]
        if sync.get("cuda_graphs"):
            cg = sync["cuda_graphs"]
            lines.append(
                "CUDA graphs (`torch.compile(mode=\"reduce-overhead\")`, patched tiny DiT, two timesteps "
                "replayed): " + ", ".join(f"{m} {'ok' if r['ok'] else 'FAILED'}" for m, r in cg.items()) + "."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=PARTS, action="append", help="part(s) to run (repeatable)")
    p.add_argument("--cases", nargs="+", default=None, help=f"case ids; default all: {' '.join(CASE_BY_ID)}")
    p.add_argument("--report", action="store_true", help="write the markdown report from the JSON")
    p.add_argument(
        "--smoke", action="store_true", help="tiny models on the CPU, every part, to a temp folder"
    )
    p.add_argument(
        "--out", default=None, help="results path without suffix (default benchmarks/results/gpu-latency)"
    )
    p.add_argument("--device", default=None, help="default: cuda if available (cpu under --smoke)")
    p.add_argument("--rounds", type=int, default=12, help="most interleaved rounds per case")
    p.add_argument("--min-rounds", type=int, default=4, help="fewest rounds, whatever the case budget")
    p.add_argument("--case-budget-s", type=float, default=20.0, help="timed rounds of one case aim at this")
    p.add_argument("--budget-s", type=float, default=330.0, help="start no new case after this many seconds")
    p.add_argument("--warmup", type=int, default=1, help="untimed forwards per visit")
    p.add_argument("--forwards", type=int, default=2, help="timed forwards per visit")
    p.add_argument(
        "--no-broader", action="store_true", help="skip the broader settings (merge_mlp, all blocks)"
    )
    p.add_argument(
        "--no-reference-ops", action="store_true", help="skip the settings with the fast paths off"
    )
    p.add_argument("--compile-backend", default="inductor")
    p.add_argument("--classify-images", type=int, default=2, help="images per timed classifier call")
    p.add_argument("--classify-batch", type=int, default=64, help="denoiser rows per classifier forward")
    p.add_argument("--classify-rounds", type=int, default=3)
    p.add_argument("--classify-classes", type=int, default=37, help="class prompts (37: Oxford-IIIT Pets)")
    p.add_argument(
        "--settings", nargs="+", default=None, help="only these setting keys (e.g. 'tome r0.5'); none is kept"
    )
    p.add_argument("--redo", action="store_true", help="run finished cases again")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (--smoke: 1)")
    args = p.parse_args(argv)
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    if args.smoke:
        args.device = args.device or "cpu"
        args.out = args.out or str(Path(tempfile.mkdtemp(prefix="gpu-latency-smoke-")) / "gpu-latency")
        args.rounds, args.min_rounds, args.warmup, args.forwards = min(args.rounds, 2), 1, 1, 1
        args.case_budget_s, args.classify_images, args.classify_batch, args.classify_rounds = 0.5, 1, 64, 1
        args.classify_classes = min(args.classify_classes, 6)
        if args.compile_backend == "inductor":
            args.compile_backend = "eager"  # Dynamo's fullgraph capture without code generation: seconds
        args.part = args.part or list(PARTS)
        args.threads = args.threads or 1  # tiny models: more threads only contend
        args.report = True
    args.cases = None if args.cases is None else [c for item in args.cases for c in item.split(",") if c]
    for c in args.cases or []:
        if c not in CASE_BY_ID:
            p.error(f"unknown case {c!r}; cases: {' '.join(CASE_BY_ID)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out) if args.out else DEFAULT_OUT
    data = load(out)
    if args.smoke:
        data["smoke"] = True
    if args.part:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        data["versions"] = versions()
        data["machine"] = machine_info()
        data["runs"].append(
            {"started": now(), "command": " ".join(["gpu_latency.py", *(argv or sys.argv[1:])])}
        )
        for part in args.part:
            run_part(part, args, data, out, device)
        save(out, data)
    if args.report:
        write_atomic(out.with_suffix(".md"), render(data))
        print(f"wrote {out.with_suffix('.md')}")
    if not args.part and not args.report:
        p.error("nothing to do: give --part, --report or --smoke")
    print(f"results: {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
