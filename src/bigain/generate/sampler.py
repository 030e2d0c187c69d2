"""Class-conditional sampling on a `DiffusionBundle` with classifier-free guidance.

Each image's starting noise comes from its own generator (seed + image index), so with the
deterministic samplers (DDIM, DPM-Solver) and no random compression an image does not depend on
the batch size or on which other images share its batch (ToMe's random destinations are shared
across a batch, and DDPM/Euler draw their step noise per batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

import bigain

from ..models.bundle import DiffusionBundle
from ..ops.keyed import mix_keys, row_keys
from ..precision import autocast, resolve_dtype

SAMPLERS = ("ddim", "dpm", "euler", "ddpm")
SEED_LIMIT = 2**44


@dataclass
class SamplerConfig:
    """Defaults follow the paper's DiT protocol: DDIM, 50 steps, CFG 4.0."""

    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 4.0
    seed: int = 0
    batch_size: int = 32
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    # random compression choices (ToMe destinations, SiTo noise) keyed by (image index, step): an image
    # is then the same whatever its batch, and a resumed run reproduces an uninterrupted one. False:
    # one draw per call shared by the batch, from the patch's own generator (tomesd's behaviour).
    keyed: bool = True

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"option sampler={self.sampler!r} is not one of {SAMPLERS}")
        if not (1 <= int(self.steps) <= 1000):
            raise ValueError(f"option steps={self.steps!r} is out of range: expected 1..1000")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise ValueError(
                f"option guidance={self.guidance!r} is out of range: expected a finite number >= 0, e.g. 4.0"
            )
        resolve_dtype(self.dtype)  # raises ValueError for an unknown precision name
        # initial_noise seeds each image with seed * 1_000_003 + index, which must fit in 64 bits
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"option seed={self.seed!r} is out of range: expected an integer in [0, 2**44)")
        if self.batch_size < 1:
            raise ValueError(f"option batch_size={self.batch_size!r} is out of range: expected >= 1")


def make_scheduler(bundle: DiffusionBundle, sampler: str):
    """A diffusers scheduler on the bundle's own training noise schedule."""
    if getattr(bundle, "prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"bigain generate samples epsilon-prediction models; this model predicts {bundle.prediction_type!r} "
            "(flow-matching sampling is not implemented: use the diffusers pipeline with bigain.apply)"
        )
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler

    ac = bundle.alphas_cumprod.double().cpu()
    prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
    betas = (1 - ac / prev).clamp(0, 0.999).float().numpy()
    common = {"num_train_timesteps": len(betas), "trained_betas": betas, "prediction_type": "epsilon"}
    if sampler == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    if sampler == "dpm":
        return DPMSolverMultistepScheduler(**common)
    if sampler == "euler":
        return EulerDiscreteScheduler(**common, timestep_spacing="linspace")
    return DDPMScheduler(**common, clip_sample=False)


def initial_noise(shape: tuple[int, ...], seed: int, indices: list[int]) -> torch.Tensor:
    return torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(seed * 1_000_003 + i)) for i in indices]
    )


@torch.no_grad()
def sample(
    bundle: DiffusionBundle,
    labels: torch.Tensor | list[int],
    config: SamplerConfig | None = None,
    progress: bool = True,
    first_index: int = 0,
) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] for the given class labels.

    `first_index` offsets the per-image seeds, so a run split into chunks (for resuming)
    gives the same images as one call.
    """
    cfg = config or SamplerConfig()
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= bundle.num_classes):
        raise ValueError(f"labels must be in [0, {bundle.num_classes}), got {labels.tolist()[:8]}...")
    use_cfg = cfg.guidance != 1.0 and bundle.null_class is not None
    device = next(bundle.denoiser.parameters()).device
    outs = []
    n = len(labels)
    n_batches = -(-n // cfg.batch_size)
    bar = tqdm(  # one tick per denoising step of a batch, so a long batch never looks stuck
        total=n_batches * cfg.steps,
        desc=f"sampling {n} images ({cfg.sampler}, {cfg.steps} steps)",
        disable=not progress,
        unit="step",
    )
    for start in range(0, n, cfg.batch_size):
        y = labels[start : start + cfg.batch_size].to(device)
        idx = list(range(first_index + start, first_index + start + len(y)))
        sched = make_scheduler(bundle, cfg.sampler)
        sched.set_timesteps(cfg.steps)
        x = initial_noise(bundle.sample_shape, cfg.seed, idx).to(device) * sched.init_noise_sigma
        step_gen = torch.Generator().manual_seed(cfg.seed + start)
        for j, t in enumerate(sched.timesteps):
            xin = sched.scale_model_input(x, t)
            tt = torch.full((len(y),), int(t), device=device, dtype=torch.long)
            keys = row_keys([mix_keys(cfg.seed, i) for i in idx], [j] * len(idx)) if cfg.keyed else None
            if keys is not None and use_cfg:
                keys = torch.cat([keys, keys])  # an image's conditional and null rows share their draw
            with (
                autocast(device, cfg.dtype),
                bigain.sample_keys(bundle.denoiser, keys),
                bigain.host_timesteps(bundle.denoiser, [float(t)]),  # t is the scheduler's host value
            ):
                if use_cfg:
                    null = torch.full_like(y, bundle.null_class)
                    eps = bundle.predict_eps(
                        torch.cat([xin, xin]), torch.cat([tt, tt]), torch.cat([y, null])
                    ).float()
                    cond, uncond = eps.chunk(2)
                    eps = uncond + cfg.guidance * (cond - uncond)
                else:
                    eps = bundle.predict_eps(xin, tt, y).float()
            kwargs = {"generator": step_gen} if cfg.sampler in ("ddpm", "euler") else {}
            x = sched.step(eps, t, x, **kwargs).prev_sample
            bar.update(1)
        outs.append(x.clamp(-1, 1).float().cpu())
    bar.close()
    return torch.cat(outs) if outs else torch.empty(0, *bundle.sample_shape)
