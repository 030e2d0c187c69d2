"""Flow-matching (rectified-flow) denoisers as bundles: SD3 / SD3.5 and Flux transformers.

These models are trained on the straight path between data and noise, as diffusers'
``FlowMatchEulerDiscreteScheduler`` writes it:

    x_σ = (1 - σ) x0 + σ ε,     target velocity v = ε - x0,

and predict ``v``. The diffusion classifier scores a class by the mean squared error between the
predicted and the target velocity (:mod:`bigain.classify.engine`), on the same timestep grid as
ε-prediction models: timestep ``t`` (0 … T-1 on the 0-1000 scale, T = ``num_train_timesteps``)
means ``σ = shift(t / T)``, where ``shift`` is the scheduler's own timestep shift:

- static (SD3: ``shift = 3.0``): ``σ' = shift σ / (1 + (shift - 1) σ)``, the formula the scheduler
  applies to its training sigmas;
- dynamic (Flux: ``use_dynamic_shifting``): ``σ' = e^μ / (e^μ + (1/σ - 1))`` (``"linear"``
  time-shift type: ``μ / (μ + (1/σ - 1))``), with ``μ`` interpolated from the number of packed image
  tokens between ``base_shift`` at ``base_image_seq_len`` and ``max_shift`` at ``max_image_seq_len``,
  as FluxPipeline computes it for sampling;
- ``shift=1.0`` (or ``shift=False`` in :func:`make_flow_bundle`) keeps ``σ = t / T``.

Schedule extras that only reshape the inference sigmas (``shift_terminal``, Karras, exponential
or beta sigmas) do not apply to a grid of training timesteps and are ignored.

How the denoiser is called (``predict``):

- SD3 (``SD3Transformer2DModel``): ``timestep = 1000 σ`` (the pipeline passes the scheduler's
  ``σ · num_train_timesteps``), ``encoder_hidden_states`` and ``pooled_projections`` per class.
- Flux (``FluxTransformer2DModel``): ``timestep = σ`` (the model multiplies by 1000 itself), the
  latent packed into 2x2 patches (FluxPipeline's packing), ``img_ids`` (row, column of each packed
  token), ``txt_ids`` (zeros), and ``guidance`` when the model was trained with a guidance
  embedding (FLUX.1-dev). The default guidance is 1.0: guidance distillation imitates
  ``uncond + g (cond - uncond)``, so ``g = 1`` asks for the conditional prediction the classifier
  compares; sampling uses ~3.5.

The error is computed on the unpacked latent, so both backbones share the engine's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .bundle import DiffusionBundle

__all__ = [
    "FlowBundle",
    "calculate_shift",
    "flow_sigmas",
    "latent_image_ids",
    "make_flow_bundle",
    "pack_latents",
    "sigmas_from_scheduler_config",
    "unpack_latents",
]


# --------------------------------------------------------------------------------------------
# sigma tables
# --------------------------------------------------------------------------------------------
def calculate_shift(
    image_seq_len: int,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> float:
    """μ of the dynamic (resolution-dependent) shift: linear in the number of image tokens."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return float(image_seq_len * m + base_shift - m * base_seq_len)


def flow_sigmas(
    num_train_timesteps: int = 1000,
    shift: float = 1.0,
    *,
    mu: float | None = None,
    time_shift_type: str = "exponential",
) -> torch.Tensor:
    """σ of each timestep index ``t = 0 … T-1`` (float64, shape (T,)): ``shift(t / T)``.

    ``mu=None``: the static shift ``shift σ / (1 + (shift - 1) σ)``; otherwise the dynamic one with
    that μ (``shift`` is then unused), as the scheduler does with ``use_dynamic_shifting``.
    """
    T = int(num_train_timesteps)
    if T < 2:
        raise ValueError(f"num_train_timesteps={num_train_timesteps} must be >= 2")
    s = torch.arange(T, dtype=torch.float64) / T
    if mu is None:
        shift = float(shift)
        if not shift > 0 or not math.isfinite(shift):
            raise ValueError(f"shift={shift} must be a positive finite number")
        return shift * s / (1.0 + (shift - 1.0) * s)
    odds = torch.where(s > 0, 1.0 / s.clamp(min=1e-300) - 1.0, torch.full_like(s, math.inf))
    if time_shift_type == "exponential":
        out = math.exp(mu) / (math.exp(mu) + odds)
    elif time_shift_type == "linear":
        if not mu > 0:
            raise ValueError(f"mu={mu}: the linear time shift needs mu > 0")
        out = mu / (mu + odds)
    else:
        raise ValueError(f"time_shift_type={time_shift_type!r}: allowed are 'exponential', 'linear'")
    return torch.where(s > 0, out, torch.zeros_like(s))


def sigmas_from_scheduler_config(
    config: Mapping[str, Any] | None, image_seq_len: int | None = None, shift: float | None = None
) -> torch.Tensor:
    """The σ table for a ``FlowMatchEulerDiscreteScheduler`` config.

    ``shift`` overrides the config (1.0 = no shift). With ``use_dynamic_shifting`` (and no
    override) μ comes from ``image_seq_len``, the number of packed image tokens.
    """
    cfg = dict(config or {})
    if cfg.get("invert_sigmas"):
        raise ValueError("invert_sigmas=True schedules (noise at σ = 0) are not supported by the classifier")
    T = int(cfg.get("num_train_timesteps", 1000))
    if shift is not None:
        return flow_sigmas(T, shift)
    if cfg.get("use_dynamic_shifting", False):
        if image_seq_len is None:
            raise ValueError(
                "a dynamically shifted schedule needs the number of image tokens (image_seq_len)"
            )
        mu = calculate_shift(
            int(image_seq_len),
            int(cfg.get("base_image_seq_len", 256) or 256),
            int(cfg.get("max_image_seq_len", 4096) or 4096),
            float(cfg.get("base_shift", 0.5) if cfg.get("base_shift") is not None else 0.5),
            float(cfg.get("max_shift", 1.15) if cfg.get("max_shift") is not None else 1.15),
        )
        return flow_sigmas(T, mu=mu, time_shift_type=str(cfg.get("time_shift_type", "exponential")))
    return flow_sigmas(T, float(cfg.get("shift", 1.0)))


# --------------------------------------------------------------------------------------------
# Flux packing
# --------------------------------------------------------------------------------------------
def pack_latents(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H/2 · W/2, 4C): 2x2 patches as tokens, row-major (FluxPipeline's layout)."""
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"Flux packs 2x2 latent patches: latent size {H}x{W} must be even")
    x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (H // 2) * (W // 2), C * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`pack_latents` for a latent of ``height`` x ``width``."""
    B, N, D = tokens.shape
    x = tokens.reshape(B, height // 2, width // 2, D // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, D // 4, height, width)


def latent_image_ids(
    rows: int, cols: int, device: Any = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(rows · cols, 3) position ids of the packed tokens: (0, row, column)."""
    ids = torch.zeros(rows, cols, 3, dtype=dtype, device=device)
    ids[..., 1] = torch.arange(rows, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(cols, device=device, dtype=dtype)[None, :]
    return ids.reshape(rows * cols, 3)


# --------------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------------
@dataclass
class FlowBundle(DiffusionBundle):
    """A flow-matching denoiser (velocity prediction) with its σ table and call convention.

    ``alphas_cumprod`` is None; ``sigmas[t]`` is the noise level of timestep index ``t``.
    ``predict`` returns the velocity, ``predict_eps`` the ε it implies (``x_t + (1 - σ) v``), so
    code written for ε-prediction (method checks, warm-ups) runs unchanged.
    """

    sigmas: torch.Tensor | None = None  # (T,) float64
    timestep_scale: float = 1000.0  # the denoiser's timestep is σ · timestep_scale
    packed: bool = False  # Flux: 2x2 patches packed into tokens, with img_ids / txt_ids
    guidance: float | None = None  # passed as `guidance` (guidance-embedded Flux) when not None

    def __post_init__(self) -> None:
        if self.sigmas is None:
            raise ValueError("a FlowBundle needs sigmas (the noise level of each timestep index)")
        self.sigmas = torch.as_tensor(self.sigmas).detach().to("cpu", torch.float64)
        if self.sigmas.dim() != 1 or self.sigmas.shape[0] < 2:
            raise ValueError(
                f"sigmas must be a 1-D table of at least 2 entries, got {tuple(self.sigmas.shape)}"
            )
        if not bool(((self.sigmas >= 0) & (self.sigmas <= 1)).all()):
            raise ValueError("sigmas must lie in [0, 1]")
        self.prediction_type = "flow"
        self._ids: dict[tuple, torch.Tensor] = {}
        self._sigmas_on: dict[str, torch.Tensor] = {}

    def image_ids(self, rows: int, cols: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
        """Flux's ``img_ids`` for a rows x cols token grid, made once per (grid, device, dtype).

        Kept alive and made outside inference mode: bigain's Flux adapter caches the grid per ids
        tensor and reads its version counter, which inference tensors do not have.
        """
        key = (rows, cols, str(device), dtype)
        ids = self._ids.get(key)
        if ids is None:
            with torch.inference_mode(False), torch.no_grad():
                ids = latent_image_ids(rows, cols, device, dtype)
            self._ids[key] = ids
        return ids

    @property
    def num_train_timesteps(self) -> int:
        return int(self.sigmas.shape[0])

    def sigma_at(self, t: torch.Tensor) -> torch.Tensor:
        """σ of timestep indices ``t`` (float32, on ``t``'s device; looked up there, no host sync)."""
        t = torch.as_tensor(t)
        table = self._sigmas_on.get(str(t.device))
        if table is None:
            with torch.inference_mode(False), torch.no_grad():
                table = self.sigmas.float().to(t.device)
            self._sigmas_on[str(t.device)] = table
        return table[t.long()]

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The predicted velocity (B, C, H, W) at timestep indices ``t`` for classes ``labels``."""
        sigma = self.sigma_at(t).to(x_t.device)
        kwargs = dict(self.conditioning(labels))
        B, _, H, W = x_t.shape
        hidden = x_t
        if self.packed:
            hidden = pack_latents(x_t)
            kwargs.setdefault("img_ids", self.image_ids(H // 2, W // 2, x_t.device, x_t.dtype))
            text = kwargs.get("encoder_hidden_states")
            if "txt_ids" not in kwargs and text is not None:
                kwargs["txt_ids"] = torch.zeros(text.shape[1], 3, device=x_t.device, dtype=x_t.dtype)
            if self.guidance is not None:
                kwargs.setdefault("guidance", torch.full((B,), float(self.guidance), device=x_t.device))
        out = self.denoiser(
            hidden_states=hidden, timestep=sigma * float(self.timestep_scale), return_dict=False, **kwargs
        )[0]
        if self.packed:
            out = unpack_latents(out, H, W)
        if self.learned_sigma:
            out = out[:, : x_t.shape[1]]
        return out

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ε implied by the predicted velocity: x_t = ε - (1 - σ) v, so ε = x_t + (1 - σ) v."""
        v = self.predict(x_t, t, labels)
        one_minus = (1.0 - self.sigma_at(t)).to(device=v.device).view(-1, *([1] * (v.dim() - 1)))
        return x_t.to(v.dtype) + one_minus.to(v.dtype) * v


def _family(denoiser: torch.nn.Module) -> str:
    names = {c.__name__ for c in type(denoiser).__mro__}
    if "FluxTransformer2DModel" in names:
        return "flux"
    if "SD3Transformer2DModel" in names:
        return "sd3"
    raise TypeError(
        f"{type(denoiser).__name__}: flow-matching classification supports SD3Transformer2DModel and "
        "FluxTransformer2DModel"
    )


def make_flow_bundle(
    denoiser: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    pooled_embeds: torch.Tensor,
    *,
    scheduler_config: Mapping[str, Any] | None = None,
    shift: float | bool | None = None,
    sample_shape: tuple[int, int, int] | None = None,
    guidance: float = 1.0,
    class_names: list[str] | None = None,
    name: str | None = None,
    extras: dict[str, Any] | None = None,
    conditioning: Callable[[torch.Tensor], dict[str, Any]] | None = None,
) -> FlowBundle:
    """A :class:`FlowBundle` for an SD3 or Flux transformer with one conditioning per class.

    Args:
        prompt_embeds: (K, L, D) text tokens of each class (``encoder_hidden_states``).
        pooled_embeds: (K, P) pooled text embedding of each class (``pooled_projections``).
        scheduler_config: the ``FlowMatchEulerDiscreteScheduler`` config (T, shift, dynamic shift).
        shift: None = the config's shift; a number overrides it; False (or 1.0) = no shift.
        sample_shape: (C, H, W) of the latent; default from the model config (SD3: ``in_channels`` x
            ``sample_size``²; Flux: ``in_channels / 4`` x 128², FluxPipeline's 1024 px default).
        guidance: the ``guidance`` value for guidance-embedded Flux models (ignored otherwise).
    """
    family = _family(denoiser)
    cfg = denoiser.config
    if (
        prompt_embeds.dim() != 3
        or pooled_embeds.dim() != 2
        or prompt_embeds.shape[0] != pooled_embeds.shape[0]
    ):
        raise ValueError(
            f"expected prompt_embeds (K, L, D) and pooled_embeds (K, P) for the same K classes, got "
            f"{tuple(prompt_embeds.shape)} and {tuple(pooled_embeds.shape)}"
        )
    num_classes = int(prompt_embeds.shape[0])
    if sample_shape is None:
        if family == "sd3":
            size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
            sample_shape = (int(cfg.in_channels), int(size), int(size))
        else:
            sample_shape = (int(cfg.in_channels) // 4, 128, 128)
    sample_shape = tuple(int(s) for s in sample_shape)
    C, H, W = sample_shape
    if family == "flux":
        if H % 2 or W % 2 or 4 * C != int(cfg.in_channels):
            raise ValueError(
                f"sample_shape={sample_shape}: Flux packs 2x2 patches of an even-sized latent with "
                f"{int(cfg.in_channels) // 4} channels"
            )
        seq_len = (H // 2) * (W // 2)
    else:
        p = int(cfg.patch_size)
        seq_len = (H // p) * (W // p)
    if shift is False:
        shift = 1.0
    sigmas = sigmas_from_scheduler_config(scheduler_config, seq_len, None if shift is None else float(shift))
    emb, pooled = prompt_embeds, pooled_embeds
    if conditioning is None:

        def conditioning(labels: torch.Tensor) -> dict[str, Any]:
            idx = labels.to(emb.device)
            return {"encoder_hidden_states": emb[idx], "pooled_projections": pooled[idx]}

    out_ch = int(getattr(cfg, "out_channels", None) or cfg.in_channels)
    use_guidance = family == "flux" and bool(getattr(cfg, "guidance_embeds", False))
    return FlowBundle(
        name=name or f"{family}-flow",
        denoiser=denoiser,
        kind=family,
        alphas_cumprod=None,
        num_classes=num_classes,
        class_names=list(class_names)
        if class_names is not None
        else [f"class {i}" for i in range(num_classes)],
        sample_shape=sample_shape,  # type: ignore[arg-type]
        conditioning=conditioning,
        learned_sigma=out_ch == 2 * int(cfg.in_channels),
        extras={
            **(extras or {}),
            "prompt_embeddings": emb,
            "pooled_embeddings": pooled,
            # what a run folder should record besides the model name: these change every error
            "schedule": {
                "prediction_type": "flow",
                "shift": None if shift is None else float(shift),
                "scheduler_config": {
                    k: v for k, v in (scheduler_config or {}).items() if not k.startswith("_")
                },
                "image_seq_len": seq_len,
                "guidance": float(guidance) if use_guidance else None,
            },
        },
        sigmas=sigmas,
        timestep_scale=1.0 if family == "flux" else 1000.0,
        packed=family == "flux",
        guidance=float(guidance) if use_guidance else None,
    )
