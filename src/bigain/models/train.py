"""Training recipe of the embedded Fashion-MNIST models.

    python -m bigain.models.train --model fashion-dit --out DIR [--steps N --batch-size B
        --device cuda|cpu --max-minutes M --resume]

DDPM (1000 steps, linear betas 1e-4..0.02), epsilon prediction, MSE loss, AdamW with linear warmup
then a constant rate, EMA of the weights, 10% of labels replaced by the null class (index 10) for
classifier-free guidance. ``fashion-cnn`` trains the classifier (cross-entropy, shift/flip
augmentation, cosine schedule). The whole data set lives on the device; batches are drawn from a
seeded permutation per epoch. A checkpoint (``DIR/checkpoint.pt``, written atomically) is saved
every ``--checkpoint-minutes`` and at the end; ``--resume`` continues from it. At the end the EMA
weights are written to DIR in the shipped folder format with ``train_config.json``.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from . import fashion
from .registry import alphas_cumprod_from_config, save_folder

MODELS = ("fashion-dit", "fashion-unet", "fashion-cnn")
DEFAULTS = {
    "fashion-dit": dict(steps=100_000, lr=3e-4, batch_size=256, weight_decay=0.0),
    "fashion-unet": dict(steps=100_000, lr=3e-4, batch_size=256, weight_decay=0.0),
    "fashion-cnn": dict(steps=4000, lr=2e-3, batch_size=256, weight_decay=5e-4),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bigain train", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=MODELS)
    p.add_argument("--out", required=True, help="run folder: checkpoint, final weights, train_config.json")
    p.add_argument("--steps", type=int, default=None, help="total optimizer steps (default per model)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default per model)")
    p.add_argument("--warmup", type=int, default=500, help="linear warmup steps")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument(
        "--label-dropout", type=float, default=0.1, help="fraction of labels set to the null class"
    )
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast dtype")
    p.add_argument(
        "--data", default="builtin:fashion-mnist", help="builtin:fashion-mnist or a folder of IDX files"
    )
    p.add_argument("--split", default="train", choices=("train", "test"))
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--tiny", action="store_true", help="tiny architecture (tests, smoke runs)")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop cleanly after this much training time"
    )
    p.add_argument("--checkpoint-minutes", type=float, default=3.0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt if present")
    p.add_argument(
        "--eval-limit", type=int, default=None, help="fashion-cnn: test images to score at the end (all)"
    )
    p.add_argument(
        "--save-dtype", choices=("fp16", "fp32"), default="fp16", help="dtype of the saved weights"
    )
    args = p.parse_args(argv)
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
    if args.model == "fashion-dit":
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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    ckpt_path = out / "checkpoint.pt"
    if args.resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        for k, m in modules.items():
            m.load_state_dict(ck["model"][k])
        if ema is not None:
            for k, m in ema.items():
                m.load_state_dict(ck["ema"][k])
        opt.load_state_dict(ck["opt"])
        batches.load_state_dict(ck["batches"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        step, losses, elapsed_before = ck["step"], ck["losses"], ck.get("elapsed_s", 0.0)
        print(f"[{args.model}] resumed from {ckpt_path} at step {step}", flush=True)

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / max(1, args.warmup))
        if is_cnn:  # cosine to zero over the run
            return args.lr * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, args.steps))))
        return args.lr * warm

    def checkpoint() -> None:
        _atomic_save(
            {
                "step": step,
                "model": {k: m.state_dict() for k, m in modules.items()},
                "ema": None if ema is None else {k: m.state_dict() for k, m in ema.items()},
                "opt": opt.state_dict(),
                "batches": batches.state_dict(),
                "gen": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "losses": losses,
                "elapsed_s": elapsed_before + (time.monotonic() - t_start),
                "args": vars(args),
            },
            ckpt_path,
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
        if args.model == "fashion-dit":
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
