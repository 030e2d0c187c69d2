"""The `bigain train` command line, apart from the training code so that parsing needs no torch."""

from __future__ import annotations

import argparse

DESCRIPTION = "Training recipe of the embedded Fashion-MNIST models."

MODELS = ("fashion-dit", "fashion-dit28", "fashion-unet", "fashion-cnn")
DEFAULTS = {
    "fashion-dit": dict(steps=100_000, lr=3e-4, batch_size=256, weight_decay=0.0),
    "fashion-dit28": dict(steps=100_000, lr=3e-4, batch_size=256, weight_decay=0.0),
    "fashion-unet": dict(steps=100_000, lr=3e-4, batch_size=256, weight_decay=0.0),
    "fashion-cnn": dict(steps=4000, lr=2e-3, batch_size=256, weight_decay=5e-4),
}



def build_parser() -> argparse.ArgumentParser:
    """The command line of `bigain train` (no torch import: usage errors come at once)."""
    p = argparse.ArgumentParser(prog="bigain train", description=DESCRIPTION)
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
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in DIR, if any")
    p.add_argument(
        "--init-from",
        default=None,
        help="without a checkpoint to resume: start from this finished model folder (weights and step count)",
    )
    p.add_argument(
        "--keep-checkpoints", type=int, default=2, help="how many of the newest checkpoints to keep"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the modules (faster on a GPU)")
    p.add_argument(
        "--eval-limit", type=int, default=None, help="fashion-cnn: test images to score at the end (all)"
    )
    p.add_argument(
        "--save-dtype", choices=("fp16", "fp32"), default="fp16", help="dtype of the saved weights"
    )
    return p
