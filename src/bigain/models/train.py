"""Training recipe of the embedded Fashion-MNIST models.

    python -m bigain.models.train --model fashion-dit --out DIR [--steps N --batch-size B
        --device cuda|cpu --max-minutes M --resume --init-from FOLDER]

DDPM (1000 steps, linear betas 1e-4..0.02), epsilon prediction, MSE loss, AdamW with linear warmup
then a constant rate, EMA of the weights, 10% of labels replaced by the null class (index 10) for
classifier-free guidance. ``fashion-cnn`` trains the classifier (cross-entropy, shift/flip
augmentation, cosine schedule). The whole data set lives on the device; batches are drawn from a
seeded permutation per epoch. At the end the EMA weights are written to DIR in the shipped folder
format with ``train_config.json``.

Training runs in chunks: ``--max-minutes`` stops cleanly, a checkpoint is written every
``--checkpoint-minutes`` and at the end, and ``--resume`` continues from the newest one, exactly
(weights, EMA, optimizer moments, data order and every random state), so chunks of any length add
up to the uninterrupted run. Checkpoints are folders ``DIR/checkpoints/step-NNNNNNNNN/`` holding
``tensors.safetensors`` and ``state.json``: loading one never unpickles anything, so a checkpoint
from elsewhere cannot run code. ``--init-from`` starts from a finished folder instead (one brought
back from another machine, where a full checkpoint is too large to move): the weights and the step
count continue, the optimizer moments restart and the EMA restarts from the saved (EMA) weights.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import pickle
import platform
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import fashion
from .registry import alphas_cumprod_from_config, save_folder
from .train_args import DEFAULTS, MODELS, build_parser  # noqa: F401 (re-exported)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for k, v in DEFAULTS[args.model].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def _load_data(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    from ..data import load as load_data

    ds = load_data(args.data, split=args.split, limit=args.limit)
    x, y = ds.tensors()
    return x.to(device), y.to(device)


class _Batches:
    """Seeded epoch permutations over N items; state is (epoch, position) plus the generator."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        self.n, self.bs, self.device = n, min(batch_size, n), device
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen).to(device)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.bs]
        self.pos += self.bs
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"].to(self.device), s["pos"]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 px (background fill) and horizontal flips, per image."""
    b, _, h, w = x.shape
    xp = F.pad(x, (2, 2, 2, 2), value=-1.0)
    oy = torch.randint(0, 5, (b,), generator=gen, device=gen.device)
    ox = torch.randint(0, 5, (b,), generator=gen, device=gen.device)
    iy = torch.arange(h, device=x.device)[None] + oy[:, None]
    ix = torch.arange(w, device=x.device)[None] + ox[:, None]
    out = xp[torch.arange(b, device=x.device)[:, None, None], 0, iy[:, :, None], ix[:, None, :]][:, None]
    flip = (torch.rand(b, generator=gen, device=gen.device) < 0.5)[:, None, None, None]
    return torch.where(flip, out.flip(-1), out)


def _params(modules: dict[str, torch.nn.Module]) -> list[torch.nn.Parameter]:
    return [p for m in modules.values() for p in m.parameters()]


def _diffusion_loss(args, modules, x0, y, ab, gen) -> torch.Tensor:
    b = x0.shape[0]
    dev = x0.device
    t = torch.randint(0, ab.shape[0], (b,), generator=gen, device=dev)
    noise = torch.randn(x0.shape, generator=gen, device=dev)
    a = ab[t].view(b, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    den = modules["denoiser"]
    if args.model in fashion.DIT_MODELS:
        # diffusers' DiT drops labels to the null class itself in train mode (class_dropout_prob=0.1)
        pred = den(x_t, timestep=t, class_labels=y, return_dict=False)[0]
    else:
        drop = torch.rand(b, generator=gen, device=dev) < args.label_dropout
        y = torch.where(drop, torch.full_like(y, fashion.NULL_CLASS), y)
        pred = den(x_t, timestep=t, encoder_hidden_states=modules["class_embedding"](y), return_dict=False)[0]
    return F.mse_loss(pred.float(), noise)


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> float:
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
    model.train(was)
    return correct / max(1, len(y))


CHECKPOINTS_DIR = "checkpoints"
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
_STEP_DIR = re.compile(r"step-(\d{9})")


def _split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of `obj` whose tensors are moved into `tensors` (keyed by their path)."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):  # keys kept with their type (optimizer states are keyed by int)
        return {"__dict__": [[k, _split_tensors(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint value of type {type(obj).__name__} at {path!r} cannot be stored")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def save_checkpoint(out: str | os.PathLike, state: dict[str, Any], keep: int = 2) -> Path:
    """Write `state` (nested dicts/lists of tensors and plain values, with an int ``step``) as
    ``out/checkpoints/step-N/``: built under a temporary name, then renamed, so a crash never
    leaves a half-written checkpoint under a real name. Only the `keep` newest are kept."""
    from safetensors.torch import save_file

    root = Path(out) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{int(state['step']):09d}"
    tmp = root / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    meta = _split_tensors(state, "", tensors)
    save_file(tensors, str(tmp / TENSORS_FILE))
    (tmp / STATE_FILE).write_text(json.dumps(meta))
    if final.exists():  # the same step saved again (a chunk that made no progress)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in _checkpoint_dirs(out)[: -max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _checkpoint_dirs(out: str | os.PathLike) -> list[Path]:
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        d
        for d in root.iterdir()
        if _STEP_DIR.fullmatch(d.name) and (d / TENSORS_FILE).is_file() and (d / STATE_FILE).is_file()
    ]
    return sorted(found, key=lambda d: d.name)


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder of a run folder, or None."""
    dirs = _checkpoint_dirs(out)
    return dirs[-1] if dirs else None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint folder written by `save_checkpoint` (tensors on the CPU).

    A legacy ``checkpoint.pt`` file is read with ``torch.load(weights_only=True)``, which refuses
    any pickle that would construct objects other than tensors and plain containers."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{path}: refusing to load this checkpoint: it holds Python objects other than tensors and "
                f"plain values, and unpickling it could run code ({str(e).splitlines()[0]})"
            ) from None
    meta = json.loads((path / STATE_FILE).read_text())
    return _join_tensors(meta, load_file(str(path / TENSORS_FILE)))


def _init_from(folder: str | os.PathLike, modules: dict[str, torch.nn.Module]) -> dict[str, Any]:
    """Load a finished model folder's weights into `modules`; returns its train_config.json."""
    from safetensors.torch import load_file

    from .registry import CLASS_EMBEDDINGS_FILE, CLASSIFIER_FILE, TRAIN_CONFIG_FILE

    folder = Path(folder)
    for key, m in modules.items():
        if key == "denoiser":
            state = type(m).from_pretrained(folder, torch_dtype=torch.float32).state_dict()
        elif key == "class_embedding":
            state = load_file(str(folder / CLASS_EMBEDDINGS_FILE))
        else:
            state = load_file(str(folder / CLASSIFIER_FILE))
        m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    cfg = folder / TRAIN_CONFIG_FILE
    return json.loads(cfg.read_text()) if cfg.is_file() else {}


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) one training; returns a summary (also written to train_config.json)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modules = fashion.build(args.model, tiny=args.tiny)
    for m in modules.values():
        m.to(device).train()
    is_cnn = args.model == "fashion-cnn"
    ema = None if is_cnn else {k: copy.deepcopy(m).eval().requires_grad_(False) for k, m in modules.items()}
    params = _params(modules)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    x, y = _load_data(args, device)
    batches = _Batches(len(y), args.batch_size, args.seed, device)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)  # noise, timesteps, dropout, augmentation
    ab = alphas_cumprod_from_config(None).float().to(device)
    step, losses, elapsed_before = 0, [], 0.0
    latest = latest_checkpoint(out) if args.resume else None
    if latest is None and args.resume and (out / "checkpoint.pt").is_file():
        latest = out / "checkpoint.pt"  # the older single-file format (read without unpickling objects)
    if latest is not None:
        ck = load_checkpoint(latest)
        for k, m in modules.items():
            m.load_state_dict(ck["model"][k])
        if ema is not None:
            for k, m in ema.items():
                m.load_state_dict(ck["ema"][k])
        opt.load_state_dict(ck["opt"])
        batches.load_state_dict(ck["batches"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        if device.type == "cuda" and ck.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ck["cuda_rng"], device)
        step, losses, elapsed_before = ck["step"], ck["losses"], ck.get("elapsed_s", 0.0)
        print(f"[{args.model}] resumed from {latest} at step {step}", flush=True)
    elif args.init_from:
        prev = _init_from(args.init_from, modules)
        if ema is not None:
            for k, m in ema.items():
                m.load_state_dict(modules[k].state_dict())
        step = int(prev.get("steps_done", 0))
        losses = [list(p) for p in prev.get("loss_curve", [])]
        elapsed_before = float(prev.get("train_seconds", 0.0))
        # a fresh data order and noise stream for the continuation (not a replay of the first batches)
        batches = _Batches(len(y), args.batch_size, args.seed + step, device)
        gen = torch.Generator(device=device).manual_seed(args.seed + 1 + step)
        print(
            f"[{args.model}] initialised from {args.init_from} at step {step} (optimizer restarted)",
            flush=True,
        )
    if args.compile:  # per transformer block where there are blocks: identical blocks share one compilation
        for m in modules.values():
            blocks = getattr(m, "transformer_blocks", None)
            for part in blocks if isinstance(blocks, torch.nn.ModuleList) else [m]:
                part.compile()

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / max(1, args.warmup))
        if is_cnn:  # cosine to zero over the run
            return args.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps))))
        return args.lr * warm

    def checkpoint() -> None:
        save_checkpoint(
            out,
            {
                "step": step,
                "model": {k: m.state_dict() for k, m in modules.items()},
                "ema": None if ema is None else {k: m.state_dict() for k, m in ema.items()},
                "opt": opt.state_dict(),
                "batches": batches.state_dict(),
                "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "losses": losses,
                "elapsed_s": elapsed_before + (time.monotonic() - t_start),
                "args": vars(args),
            },
            keep=args.keep_checkpoints,
        )

    from tqdm.auto import tqdm

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    t_start = last_ckpt = time.monotonic()
    stopped = "steps"
    loss_sum, loss_n = torch.zeros((), device=device), 0
    bar = tqdm(total=args.steps, initial=step, desc=args.model, mininterval=5, file=sys.stderr)
    while step < args.steps:
        if args.max_minutes is not None and time.monotonic() - t_start > args.max_minutes * 60:
            stopped = "max_minutes"
            break
        idx = batches.next()
        xb, yb = x[idx], y[idx]
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with autocast:
            if is_cnn:
                loss = F.cross_entropy(
                    modules["classifier"](_augment(xb, gen)).float(), yb, label_smoothing=0.1
                )
            else:
                loss = _diffusion_loss(args, modules, xb, yb, ab, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
        opt.step()
        if ema is not None:
            decay = min(args.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for k, m in modules.items():
                    ep = [p for p in ema[k].parameters()]
                    torch._foreach_lerp_(ep, [p.detach() for p in m.parameters()], 1 - decay)
        step += 1
        loss_sum += loss.detach()
        loss_n += 1
        bar.update(1)
        if step % args.log_every == 0 or step == args.steps:
            avg = float(loss_sum) / loss_n  # one host sync per log interval
            losses.append([step, avg])
            loss_sum.zero_()
            loss_n = 0
            bar.set_postfix(loss=f"{avg:.4f}")
            print(
                f"[{args.model}] step {step} loss {avg:.4f} lr {lr_at(step):.2e} "
                f"{time.monotonic() - t_start:.0f}s",
                flush=True,
            )
        if time.monotonic() - last_ckpt > args.checkpoint_minutes * 60:
            checkpoint()
            last_ckpt = time.monotonic()
    bar.close()
    checkpoint()
    train_s = elapsed_before + (time.monotonic() - t_start)

    final_modules = modules if ema is None else ema
    for m in final_modules.values():
        m.eval()
    recent = [v for _, v in losses[-max(1, 1000 // args.log_every) :]]
    summary: dict[str, Any] = {
        "model": args.model,
        "args": vars(args),
        "architecture": {
            k: (dict(m.config) if hasattr(m, "config") and not callable(m.config) else m.config())
            for k, m in final_modules.items()
        },
        "parameters": {k: sum(p.numel() for p in m.parameters()) for k, m in final_modules.items()},
        "steps_done": step,
        "stopped_by": stopped,
        "train_seconds": round(train_s, 1),
        "final_loss": sum(recent) / max(1, len(recent)),
        "loss_curve": losses,
        "loss_window": "mean training loss over the last ~1000 steps (log intervals)",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "class_names": None,
        "schedule": dict(fashion.SCHEDULER_CONFIG),
    }
    from ..data import CLASS_NAMES

    summary["class_names"] = CLASS_NAMES
    if is_cnn:
        from ..data import load as load_data

        test = load_data("builtin:fashion-mnist", split="test", limit=args.eval_limit)
        xt, yt = test.tensors()
        summary["test_accuracy"] = evaluate_classifier(modules["classifier"], xt.to(device), yt.to(device))
        print(f"[{args.model}] test accuracy {summary['test_accuracy']:.4f}", flush=True)
    else:
        summary["ema_decay"] = args.ema_decay
        if args.model in fashion.DIT_MODELS:
            summary["label_dropout"] = "0.1, by diffusers' LabelEmbedding (class_dropout_prob) in train mode"
        else:
            summary["label_dropout"] = args.label_dropout
    try:
        import diffusers

        summary["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    dtype = torch.float16 if args.save_dtype == "fp16" else torch.float32
    save_folder(out, final_modules, summary, dtype=dtype)
    print(
        f"[{args.model}] done: {step} steps, {train_s:.0f}s, final loss {summary['final_loss']:.4f} -> {out}",
        flush=True,
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
