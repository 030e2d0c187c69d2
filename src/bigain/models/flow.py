"""Flow-matching (rectified-flow) denoisers as bundles: SD3 / SD3.5, Flux, Chroma, Qwen-Image,
AuraFlow, CogView4, SANA, Flux 2, Z-Image, Lumina2, HiDream-I1, Qwen-Image 2.1, Bria,
LongCat-Image and Ovis-Image transformers.

These models are trained on the straight path between data and noise, as diffusers'
``FlowMatchEulerDiscreteScheduler`` writes it:

    x_σ = (1 - σ) x0 + σ ε,     target velocity v = ε - x0,

and predict ``v``. The diffusion classifier scores a class by the mean squared error between the
predicted and the target velocity (:mod:`bigain.classify.engine`), on the same timestep grid as
ε-prediction models: timestep ``t`` (0 … T-1 on the 0-1000 scale, T = ``num_train_timesteps``)
means ``σ = shift(t / T)``, where ``shift`` is the scheduler's own timestep shift:

- static (SD3, AuraFlow, Lumina2, Bria: ``shift``; SANA's ``DPMSolverMultistepScheduler`` and
  HiDream-I1's ``UniPCMultistepScheduler``: ``flow_shift`` with ``use_flow_sigmas``):
  ``σ' = shift σ / (1 + (shift - 1) σ)``, the formula the scheduler applies to its training sigmas;
- dynamic (Flux, Chroma, Qwen-Image, CogView4: ``use_dynamic_shifting``):
  ``σ' = e^μ / (e^μ + (1/σ - 1))`` (``"linear"`` time-shift type, CogView4's:
  ``μ / (μ + (1/σ - 1))``), with ``μ`` from the number of image tokens as the family's pipeline
  computes it for sampling: linear between ``base_shift`` at ``base_image_seq_len`` and
  ``max_shift`` at ``max_image_seq_len`` (FluxPipeline's rule, copied by Chroma and Qwen-Image), or
  CogView4's ``sqrt(n / base_image_seq_len) · max_shift + base_shift``, or Flux 2's empirical
  ``compute_empirical_mu`` at its default 50 steps (:func:`flux2_shift`). The count is the image
  tokens, except where the pipeline counts otherwise (:attr:`FlowCall.mu_tokens`: Lumina2's reads
  ``latents.shape[1]``, the channel count, HiDream's the transformer's ``max_seq``); Z-Image,
  Qwen-Image 2.1, LongCat-Image and Ovis-Image use Flux's rule;
- ``shift=1.0`` (or ``shift=False`` in :func:`make_flow_bundle`) keeps ``σ = t / T``.

Schedule extras that only reshape the inference sigmas (``shift_terminal``, Karras, exponential
or beta sigmas) do not apply to a grid of training timesteps and are ignored.

How the denoiser is called (``predict``) is a table, :data:`FLOW_CALLS`, one :class:`FlowCall` per
transformer family, read from what each diffusers pipeline passes when it samples:

==========  ========  ==================  ==============================================================
family      latent    timestep            extra arguments
==========  ========  ==================  ==============================================================
sd3         (C,H,W)   1000 σ              ``pooled_projections``
flux        packed    σ                   ``pooled_projections``, ``img_ids``, ``txt_ids``, ``guidance``
chroma      packed    σ                   ``img_ids``, ``txt_ids``, ``attention_mask`` over [text; image]
qwenimage   packed    σ                   ``img_shapes``, ``encoder_hidden_states_mask``, ``guidance``
auraflow    (C,H,W)   σ                   none (the pipeline zeroes padded text in the embeddings)
cogview4    (C,H,W)   1000 t / T          ``original_size`` = ``target_size`` (pixels), ``crop_coords`` 0
sana        (C,H,W)   1000 σ · config     ``encoder_attention_mask``
flux2       tokens    σ                   batched 4-axis ``img_ids`` / ``txt_ids``, ``guidance``
zimage      frames    1 - σ; output -v    ``cap_feats``: a list of each class's valid tokens
lumina2     (C,H,W)   1 - σ; output -v    ``encoder_attention_mask`` (always passed)
hidream     (C,H,W)   1000 σ; output -v   ``encoder_hidden_states_t5``, ``..._llama3`` (layers, B, L, D),
                                          ``pooled_embeds``
qwenimage21 tokens    σ                   ``img_shapes``, ``img_mask``, ``encoder_hidden_states_mask``
bria        packed    1000 σ              ``img_ids``, ``txt_ids`` (zeros)
longcat     packed    σ                   ``txt_ids`` (0, i, i), ``img_ids`` (1, L + row, L + column)
ovis        packed    σ                   ``txt_ids`` (0, i, i), ``img_ids`` (0, row, column)
==========  ========  ==================  ==============================================================

"packed" is FluxPipeline's packing of 2x2 latent patches into tokens (Qwen-Image's, Bria's,
LongCat-Image's and Ovis-Image's pipelines pack the same way). "tokens": each latent cell is a
token, row-major (Flux 2, whose latent is the VAE's 2x2 patches as channels after its batch norm,
see ``bigain.classify.pipeline``; Qwen-Image 2.1, unpatched). "frames": Z-Image takes a list of
one-frame (C, 1, H, W) latents and returns one. Z-Image and Lumina2 count time the other way
(their pipelines pass ``1 - t / 1000``: 0 is noise) and, like HiDream's, negate the model's output
before the scheduler step, so the bundle negates it too. Keywords that differ from the canonical
``hidden_states`` / ``timestep`` / ``encoder_hidden_states`` / ``pooled_projections`` are renamed
per row (:attr:`FlowCall.names`). CogView4's pipeline passes the *unshifted* timestep (the scheduler shifts only its
sigmas when it is given timesteps), so its timestep is ``t`` while the noise level is the shifted
``σ``. SANA multiplies by ``config.timestep_scale`` (1.0 on SANA 1.x). ``guidance`` goes to models
trained with a guidance embedding (FLUX.1-dev; Qwen-Image's ``guidance_embeds``). The default is
1.0: guidance distillation imitates ``uncond + g (cond - uncond)``, so ``g = 1`` asks for the
conditional prediction the classifier compares; sampling uses ~3.5. Text masks are per class
(``text_mask`` of :func:`make_flow_bundle`); Chroma's is extended with ones over the image tokens,
as ChromaPipeline's ``_prepare_attention_mask`` does.

The error is computed on the unpacked latent, so every family shares the engine's code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .bundle import DiffusionBundle

__all__ = [
    "FLOW_CALLS",
    "FlowBundle",
    "FlowCall",
    "calculate_shift",
    "cogview4_shift",
    "flow_call",
    "flow_sigmas",
    "flux2_shift",
    "latent_image_ids",
    "make_flow_bundle",
    "pack_latents",
    "position_ids",
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


def cogview4_shift(
    image_seq_len: int, base_seq_len: int = 256, base_shift: float = 0.25, max_shift: float = 0.75
) -> float:
    """μ of CogView4Pipeline's dynamic shift: ``sqrt(n / base_seq_len) · max_shift + base_shift``."""
    return float((image_seq_len / base_seq_len) ** 0.5 * max_shift + base_shift)


def flux2_shift(image_seq_len: int, num_steps: int = 50) -> float:
    """μ of Flux2Pipeline's dynamic shift (its ``compute_empirical_mu``): fitted lines in the token
    count at 10 and 200 steps, interpolated at ``num_steps`` (the pipeline's default 50; the
    classifier scores single training timesteps, so the default sampling length stands in), or
    the 200-step line alone above 4300 tokens. The scheduler's ``base_shift`` / ``max_shift`` are
    not read."""
    n = float(image_seq_len)
    a1, b1 = 8.73809524e-05, 1.89833333
    a2, b2 = 0.00016927, 0.45666666
    if n > 4300:
        return float(a2 * n + b2)
    m200, m10 = a2 * n + b2, a1 * n + b1
    slope = (m200 - m10) / 190.0
    return float(slope * num_steps + m200 - 200.0 * slope)


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
    config: Mapping[str, Any] | None,
    image_seq_len: int | None = None,
    shift: float | None = None,
    mu_rule: str = "flux",
) -> torch.Tensor:
    """The σ table for a ``FlowMatchEulerDiscreteScheduler`` config (or a ``DPMSolverMultistepScheduler``
    one with ``use_flow_sigmas``, SANA's: static ``flow_shift``).

    ``shift`` overrides the config (1.0 = no shift). With ``use_dynamic_shifting`` (and no
    override) μ comes from ``image_seq_len``, the number of image tokens, by ``mu_rule``: ``"flux"``
    (:func:`calculate_shift`), ``"cogview4"`` (:func:`cogview4_shift`) or ``"flux2"``
    (:func:`flux2_shift`).
    """
    cfg = dict(config or {})
    if cfg.get("invert_sigmas"):
        raise ValueError("invert_sigmas=True schedules (noise at σ = 0) are not supported by the classifier")
    prediction = cfg.get("prediction_type")
    if prediction is not None and prediction != "flow_prediction":
        raise ValueError(
            f"prediction_type={prediction!r}: a flow-matching bundle needs a flow schedule (flow_prediction)"
        )
    T = int(cfg.get("num_train_timesteps", 1000))
    if shift is not None:
        return flow_sigmas(T, shift)
    if cfg.get("use_dynamic_shifting", False):
        if image_seq_len is None:
            raise ValueError(
                "a dynamically shifted schedule needs the number of image tokens (image_seq_len)"
            )

        def get(key: str, default: float) -> float:
            return float(default if cfg.get(key) is None else cfg[key])

        if mu_rule == "flux":
            mu = calculate_shift(
                int(image_seq_len),
                int(get("base_image_seq_len", 256)),
                int(get("max_image_seq_len", 4096)),
                get("base_shift", 0.5),
                get("max_shift", 1.15),
            )
        elif mu_rule == "cogview4":
            mu = cogview4_shift(
                int(image_seq_len),
                int(get("base_image_seq_len", 256)),
                get("base_shift", 0.25),
                get("max_shift", 0.75),
            )
        elif mu_rule == "flux2":
            mu = flux2_shift(int(image_seq_len))
        else:
            raise ValueError(f"mu_rule={mu_rule!r}: allowed are 'flux', 'cogview4', 'flux2'")
        return flow_sigmas(T, mu=mu, time_shift_type=str(cfg.get("time_shift_type", "exponential")))
    if cfg.get("use_flow_sigmas"):
        return flow_sigmas(T, float(cfg.get("flow_shift") or 1.0))
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


def position_ids(
    rule: str, rows: int, cols: int, text_len: int, device: Any = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image ids, text ids) of a rows x cols token grid after ``text_len`` text tokens, by the
    pipeline's rule (:attr:`FlowCall.ids`)."""
    L = int(text_len)
    i = torch.arange(L, device=device)
    if rule == "flux2":  # Flux2Pipeline: int64 (t, h, w, l) rows, batched
        img = torch.zeros(rows * cols, 4, dtype=torch.long, device=device)
        img[:, 1:3] = latent_image_ids(rows, cols, device, torch.long)[:, 1:]
        txt = torch.zeros(L, 4, dtype=torch.long, device=device)
        txt[:, 3] = i
        return img[None], txt[None]
    img = latent_image_ids(rows, cols, device, dtype)
    txt = torch.zeros(L, 3, device=device, dtype=dtype)
    if rule in ("ovis", "longcat"):
        txt[:, 1] = txt[:, 2] = i.to(dtype)
    if rule == "longcat":  # the image after the (always padded to full length) text, modality 1
        img[:, 0] = 1
        img[:, 1:] += L
    elif rule not in ("flux", "ovis"):
        raise ValueError(f"ids={rule!r}: allowed are 'flux', 'ovis', 'longcat', 'flux2'")
    return img, txt


# --------------------------------------------------------------------------------------------
# how each family is called
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowCall:
    """How a flow-matching transformer family is called, as its diffusers pipeline calls it.

    The values of one row of the table in this module's docstring; ``predict`` reads them.
    """

    kind: str
    classes: tuple[str, ...]  # diffusers transformer class names (matched along the MRO)
    # how the (B, C, H, W) latent goes in: "image" as it is, "packed" (FluxPipeline's 2x2 packing
    # into (B, H/2 · W/2, 4C) tokens), "tokens" (each cell a token, row-major: (B, H · W, C)),
    # "frames" (a list of B one-frame (C, 1, H, W) latents: Z-Image)
    latent: str = "image"
    timestep_scale: float = 1000.0  # timestep = σ · scale
    config_timestep_scale: bool = False  # also times ``config.timestep_scale`` (SANA)
    unshifted_timestep: bool = False  # timestep = (t / T) · scale, not σ · scale (CogView4)
    reversed_timestep: bool = False  # timestep = (1 - σ) · scale: 0 is noise (Z-Image, Lumina2)
    negated: bool = False  # the model gives -v: the pipeline negates it (Z-Image, Lumina2, HiDream)
    pooled: bool = False  # ``pooled_projections`` per class (SD3, Flux, HiDream)
    # ``img_ids`` / ``txt_ids``: "flux" (image (0, row, column), text zeros: Flux, Chroma, Bria),
    # "ovis" (text (0, i, i)), "longcat" (text (0, i, i), image (1, L + row, L + column) after the
    # L text tokens), "flux2" (batched 4-axis ids: image (0, row, column, 0), text (0, 0, 0, i))
    ids: str | None = None
    img_shapes: bool = False  # ``img_shapes=[[(1, rows, cols)]] * B`` (Qwen-Image, Qwen-Image 2.1)
    img_mask: bool = False  # ``img_mask``: False on the text, True on one slot per 4 image tokens
    size_conditions: bool = False  # ``original_size`` / ``target_size`` in pixels, ``crop_coords`` 0
    mask: str | None = None  # the keyword the per-class text mask goes to
    mask_joint: bool = False  # the mask covers [text; image]: ones appended for the image (Chroma)
    text_list: bool = False  # the text as a list of each class's valid tokens (Z-Image's cap_feats)
    stacked: str | None = None  # a per-class stack (N, K, L, D), class on dim 1 (HiDream's Llama layers)
    guidance: bool = False  # ``guidance`` when ``config.guidance_embeds`` is set
    mu_rule: str = "flux"  # dynamic shift μ from the token count: "flux", "cogview4" or "flux2"
    # what the pipeline counts as the image sequence length for μ: "tokens", "channels" (Lumina2's
    # pipeline reads ``latents.shape[1]`` of a (B, C, H, W) latent) or "max_seq" (HiDream's
    # ``transformer.max_seq``, fixed by ``max_resolution``)
    mu_tokens: str = "tokens"
    # the denoiser's own keyword for each canonical one (hidden_states, timestep,
    # encoder_hidden_states, pooled_projections), where it differs
    names: tuple[tuple[str, str], ...] = ()

    @property
    def packed(self) -> bool:
        return self.latent == "packed"


FLOW_CALLS: dict[str, FlowCall] = {
    c.kind: c
    for c in (
        FlowCall("sd3", ("SD3Transformer2DModel",), pooled=True),
        FlowCall(
            "flux",
            ("FluxTransformer2DModel",),
            latent="packed",
            timestep_scale=1.0,
            pooled=True,
            ids="flux",
            guidance=True,
        ),
        FlowCall(
            "chroma",
            ("ChromaTransformer2DModel",),
            latent="packed",
            timestep_scale=1.0,
            ids="flux",
            mask="attention_mask",
            mask_joint=True,
        ),
        FlowCall(
            "qwenimage",
            ("QwenImageTransformer2DModel",),
            latent="packed",
            timestep_scale=1.0,
            img_shapes=True,
            mask="encoder_hidden_states_mask",
            guidance=True,
        ),
        FlowCall("auraflow", ("AuraFlowTransformer2DModel",), timestep_scale=1.0),
        FlowCall(
            "cogview4",
            ("CogView4Transformer2DModel",),
            unshifted_timestep=True,
            size_conditions=True,
            mask="attention_mask",
            mu_rule="cogview4",
        ),
        FlowCall(
            "sana", ("SanaTransformer2DModel",), config_timestep_scale=True, mask="encoder_attention_mask"
        ),
        FlowCall(
            "flux2",
            ("Flux2Transformer2DModel",),
            latent="tokens",
            timestep_scale=1.0,
            ids="flux2",
            guidance=True,
            mu_rule="flux2",
        ),
        FlowCall(
            "zimage",
            ("ZImageTransformer2DModel",),
            latent="frames",
            timestep_scale=1.0,
            reversed_timestep=True,
            negated=True,
            text_list=True,
            names=(("hidden_states", "x"), ("timestep", "t"), ("encoder_hidden_states", "cap_feats")),
        ),
        FlowCall(
            "lumina2",
            ("Lumina2Transformer2DModel",),
            timestep_scale=1.0,
            reversed_timestep=True,
            negated=True,
            mask="encoder_attention_mask",
            mu_tokens="channels",
        ),
        FlowCall(
            "hidream",
            ("HiDreamImageTransformer2DModel",),
            negated=True,
            pooled=True,
            stacked="encoder_hidden_states_llama3",
            mu_tokens="max_seq",
            names=(
                ("timestep", "timesteps"),
                ("encoder_hidden_states", "encoder_hidden_states_t5"),
                ("pooled_projections", "pooled_embeds"),
            ),
        ),
        FlowCall(
            "qwenimage21",
            ("QwenImage21Transformer2DModel",),
            latent="tokens",
            timestep_scale=1.0,
            img_shapes=True,
            img_mask=True,
            mask="encoder_hidden_states_mask",
        ),
        FlowCall("bria", ("BriaTransformer2DModel",), latent="packed", ids="flux"),
        FlowCall(
            "longcat", ("LongCatImageTransformer2DModel",), latent="packed", timestep_scale=1.0, ids="longcat"
        ),
        FlowCall("ovis", ("OvisImageTransformer2DModel",), latent="packed", timestep_scale=1.0, ids="ovis"),
    )
}


def flow_call(denoiser: torch.nn.Module) -> FlowCall | None:
    """The :class:`FlowCall` of a transformer (by class name along its MRO), or None."""
    names = {c.__name__ for c in type(denoiser).__mro__}
    return next((c for c in FLOW_CALLS.values() if names.intersection(c.classes)), None)


# --------------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------------
@dataclass
class FlowBundle(DiffusionBundle):
    """A flow-matching denoiser (velocity prediction) with its σ table and call convention.

    ``alphas_cumprod`` is None; ``sigmas[t]`` is the noise level of timestep index ``t``.
    ``predict`` returns the velocity, ``predict_eps`` the ε it implies (``x_t + (1 - σ) v``), so
    code written for ε-prediction (method checks, warm-ups) runs unchanged. ``call`` is the family's
    :class:`FlowCall`; without one the bundle is called like Flux when ``packed`` (``img_ids`` /
    ``txt_ids``), else like SD3 (conditioning only).
    """

    sigmas: torch.Tensor | None = None  # (T,) float64
    timestep_scale: float = 1000.0  # the denoiser's timestep is σ · timestep_scale
    packed: bool = False  # 2x2 patches packed into tokens
    guidance: float | None = None  # passed as `guidance` (guidance-embedded models) when not None
    call: FlowCall | None = None  # the family's extra arguments
    pixel_scale: int = 8  # pixels per latent cell (CogView4's size conditions)

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
        if self.call is None:
            self.call = FLOW_CALLS["flux"] if self.packed else FLOW_CALLS["sd3"]
        self.prediction_type = "flow"
        self._ids: dict[tuple, torch.Tensor] = {}
        self._sigmas_on: dict[str, torch.Tensor] = {}

    def _made_once(self, key: tuple, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """A small tensor made once per key and kept (outside inference mode: bigain's adapters
        cache per tensor and read version counters, which inference tensors do not have)."""
        out = self._ids.get(key)
        if out is None:
            with torch.inference_mode(False), torch.no_grad():
                out = make()
            self._ids[key] = out
        return out

    def image_ids(self, rows: int, cols: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
        """Flux's ``img_ids`` for a rows x cols token grid, made once per (grid, device, dtype)."""
        return self._made_once(
            ("ids", rows, cols, str(device), dtype), lambda: latent_image_ids(rows, cols, device, dtype)
        )

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

    def forward_kwargs(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
        """Every argument of the denoiser call for ``x_t`` (B, C, H, W), as the family's pipeline
        passes them (see :data:`FLOW_CALLS`)."""
        call = self.call
        device, dtype = x_t.device, x_t.dtype
        B, _, H, W = x_t.shape
        kwargs = dict(self.conditioning(labels))
        if call.unshifted_timestep:
            level = torch.as_tensor(t).to(device).float() / float(self.num_train_timesteps)
        else:
            level = self.sigma_at(t).to(device)
        if call.reversed_timestep:
            level = 1.0 - level
        kwargs["timestep"] = level * float(self.timestep_scale)
        if call.latent == "packed":
            kwargs["hidden_states"] = pack_latents(x_t)
        elif call.latent == "tokens":
            kwargs["hidden_states"] = x_t.flatten(2).transpose(1, 2)
        elif call.latent == "frames":
            kwargs["hidden_states"] = list(x_t.unsqueeze(2).unbind(0))
        else:
            kwargs["hidden_states"] = x_t
        rows, cols = (H // 2, W // 2) if self.packed else (H, W)
        text = kwargs.get("encoder_hidden_states")
        if call.ids and text is not None:
            L = text.shape[1]
            img, txt = self._made_once(
                ("ids", call.ids, rows, cols, L, str(device), dtype),
                lambda: position_ids(call.ids, rows, cols, L, device, dtype),
            )
            if img.dim() == 3:  # batched ids (Flux 2)
                img, txt = img.expand(B, -1, -1), txt.expand(B, -1, -1)
            kwargs.setdefault("img_ids", img)
            kwargs.setdefault("txt_ids", txt)
        if call.img_shapes:
            kwargs.setdefault("img_shapes", [[(1, rows, cols)]] * B)
        if call.img_mask and text is not None:
            L, n_slots = text.shape[1], (rows * cols) // 4
            slots = self._made_once(
                ("img_mask", L, n_slots, str(device)),
                lambda: torch.cat(
                    [
                        torch.zeros(1, L, dtype=torch.bool, device=device),
                        torch.ones(1, n_slots, dtype=torch.bool, device=device),
                    ],
                    dim=1,
                ),
            )
            kwargs.setdefault("img_mask", slots.expand(B, -1))
        if call.size_conditions:
            size = self._made_once(
                ("size", H, W, str(device), dtype),
                lambda: torch.tensor(
                    [[H * self.pixel_scale, W * self.pixel_scale]], dtype=dtype, device=device
                ),
            )
            kwargs.setdefault("original_size", size.expand(B, 2))
            kwargs.setdefault("target_size", size.expand(B, 2))
            kwargs.setdefault("crop_coords", torch.zeros_like(size).expand(B, 2))
        mask = kwargs.get(call.mask) if call.mask else None
        if mask is not None and call.mask_joint and text is not None and mask.shape[1] == text.shape[1]:
            n_image = rows * cols  # ChromaPipeline._prepare_attention_mask: the image tokens are kept
            kwargs[call.mask] = torch.cat(
                [mask, torch.ones(B, n_image, device=mask.device, dtype=torch.bool)], dim=1
            )
        if self.guidance is not None:
            kwargs.setdefault("guidance", torch.full((B,), float(self.guidance), device=device))
        for canonical, own in call.names:
            if canonical in kwargs:
                kwargs[own] = kwargs.pop(canonical)
        return kwargs

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The predicted velocity (B, C, H, W) at timestep indices ``t`` for classes ``labels``."""
        B, C, H, W = x_t.shape
        out = self.denoiser(return_dict=False, **self.forward_kwargs(x_t, t, labels))[0]
        latent = self.call.latent
        if latent == "packed":
            out = unpack_latents(out, H, W)
        elif latent == "tokens":
            out = out[:, -H * W :].transpose(1, 2).reshape(B, -1, H, W)
        elif latent == "frames":
            out = torch.stack(list(out))[:, :, 0]
        if self.learned_sigma:
            out = out[:, : x_t.shape[1]]
        return -out if self.call.negated else out

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ε implied by the predicted velocity: x_t = ε - (1 - σ) v, so ε = x_t + (1 - σ) v."""
        v = self.predict(x_t, t, labels)
        one_minus = (1.0 - self.sigma_at(t)).to(device=v.device).view(-1, *([1] * (v.dim() - 1)))
        return x_t.to(v.dtype) + one_minus.to(v.dtype) * v


def _family(denoiser: torch.nn.Module) -> FlowCall:
    call = flow_call(denoiser)
    if call is None:
        supported = ", ".join(c for f in FLOW_CALLS.values() for c in f.classes)
        raise TypeError(f"{type(denoiser).__name__}: flow-matching classification supports {supported}")
    return call


def make_flow_bundle(
    denoiser: torch.nn.Module,
    prompt_embeds: torch.Tensor,
    pooled_embeds: torch.Tensor | None = None,
    *,
    text_mask: torch.Tensor | None = None,
    stacked_embeds: torch.Tensor | None = None,
    scheduler_config: Mapping[str, Any] | None = None,
    shift: float | bool | None = None,
    sample_shape: tuple[int, int, int] | None = None,
    guidance: float = 1.0,
    pixel_scale: int = 8,
    class_names: list[str] | None = None,
    name: str | None = None,
    extras: dict[str, Any] | None = None,
    conditioning: Callable[[torch.Tensor], dict[str, Any]] | None = None,
) -> FlowBundle:
    """A :class:`FlowBundle` for a flow-matching transformer (:data:`FLOW_CALLS`) with one
    conditioning per class.

    Args:
        prompt_embeds: (K, L, D) text tokens of each class (``encoder_hidden_states``).
        pooled_embeds: (K, P) pooled text embedding of each class (``pooled_projections``); SD3 and
            Flux need it, the other families take none.
        text_mask: (K, L) mask of the valid text tokens (1 = kept), passed under the family's mask
            keyword (Chroma, Qwen-Image, CogView4, SANA, Lumina2, Qwen-Image 2.1); None = no mask.
            Z-Image takes no mask: its classes' text goes in as a list of their valid tokens, which
            this mask selects (right-padded rows).
        stacked_embeds: (N, K, L', D') per-class stack with the class on dim 1 (HiDream's Llama
            layers, ``encoder_hidden_states_llama3``); only for families with ``stacked``.
        scheduler_config: the scheduler's config (T, shift, dynamic shift).
        shift: None = the config's shift; a number overrides it; False (or 1.0) = no shift.
        sample_shape: (C, H, W) of the latent; default from the model config (packed families:
            ``in_channels / 4`` x 128², the pipelines' 1024 px default; the others ``in_channels`` x
            ``sample_size``²).
        guidance: the ``guidance`` value for guidance-embedded models (ignored otherwise).
        pixel_scale: pixels per latent cell (the VAE's downsampling; CogView4's size conditions).
    """
    call = _family(denoiser)
    family = call.kind
    cfg = denoiser.config
    if prompt_embeds.dim() != 3:
        raise ValueError(f"expected prompt_embeds (K, L, D), got {tuple(prompt_embeds.shape)}")
    num_classes, text_len = int(prompt_embeds.shape[0]), int(prompt_embeds.shape[1])
    if call.pooled:
        if pooled_embeds is None or pooled_embeds.dim() != 2 or pooled_embeds.shape[0] != num_classes:
            raise ValueError(
                f"{family}: expected prompt_embeds (K, L, D) and pooled_embeds (K, P) for the same K classes, "
                f"got {tuple(prompt_embeds.shape)} and "
                f"{None if pooled_embeds is None else tuple(pooled_embeds.shape)}"
            )
    elif pooled_embeds is not None:
        raise ValueError(f"{family} takes no pooled text embedding (pooled_embeds must be None)")
    if call.stacked:
        if stacked_embeds is None or stacked_embeds.dim() != 4 or stacked_embeds.shape[1] != num_classes:
            raise ValueError(
                f"{family}: expected stacked_embeds (N, K, L, D) for the same K={num_classes} classes "
                f"({call.stacked}), got {None if stacked_embeds is None else tuple(stacked_embeds.shape)}"
            )
    elif stacked_embeds is not None:
        raise ValueError(f"{family} takes no stacked per-class embeddings (stacked_embeds must be None)")
    if text_mask is not None:
        if call.mask is None and not call.text_list:
            raise ValueError(
                f"{family} takes no text mask: its pipeline zeroes the padded text in the embeddings instead"
            )
        if tuple(text_mask.shape) != (num_classes, text_len):
            raise ValueError(
                f"text_mask must be (K, L) = {(num_classes, text_len)}, got {tuple(text_mask.shape)}"
            )
    if sample_shape is None:
        if call.packed:
            sample_shape = (int(cfg.in_channels) // 4, 128, 128)
        elif call.latent == "tokens":  # a token per latent cell: 1024 px at 16 px per token
            sample_shape = (int(cfg.in_channels), 64, 64)
        else:
            size = getattr(cfg, "sample_size", None) or 128
            size = size if isinstance(size, int) else size[0]
            sample_shape = (int(cfg.in_channels), int(size), int(size))
    sample_shape = tuple(int(s) for s in sample_shape)
    C, H, W = sample_shape
    if call.packed:
        if H % 2 or W % 2 or 4 * C != int(cfg.in_channels):
            raise ValueError(
                f"sample_shape={sample_shape}: {family} packs 2x2 patches of an even-sized latent with "
                f"{int(cfg.in_channels) // 4} channels"
            )
        seq_len = (H // 2) * (W // 2)
    elif call.latent == "tokens":
        if C != int(cfg.in_channels):
            raise ValueError(
                f"sample_shape={sample_shape}: {family} takes {int(cfg.in_channels)} channels per token"
            )
        seq_len = H * W
    else:
        p = (
            getattr(cfg, "patch_size", None) or getattr(cfg, "all_patch_size", (1,))[0]
        )  # Z-Image: all_patch_size
        p = int(p)
        if H % p or W % p:
            raise ValueError(f"sample_shape={sample_shape}: the latent must divide into patches of {p}")
        seq_len = (H // p) * (W // p)
    # the number the pipeline computes μ from (see FlowCall.mu_tokens)
    mu_seq = {"tokens": seq_len, "channels": C, "max_seq": getattr(denoiser, "max_seq", seq_len)}[
        call.mu_tokens
    ]
    if shift is False:
        shift = 1.0
    sigmas = sigmas_from_scheduler_config(
        scheduler_config, mu_seq, None if shift is None else float(shift), mu_rule=call.mu_rule
    )
    emb, pooled, mask, stacked = prompt_embeds, pooled_embeds, text_mask, stacked_embeds
    if conditioning is None and call.text_list:
        # each class's valid tokens, as the pipeline's encode_prompt returns them (a list)
        lengths = [text_len] * num_classes if mask is None else [int(n) for n in mask.bool().sum(1).tolist()]
        per_class = [emb[k, : lengths[k]] for k in range(num_classes)]

        def conditioning(labels: torch.Tensor) -> dict[str, Any]:
            # one host read of the labels per call: the model takes a Python list of captions
            return {"encoder_hidden_states": [per_class[k] for k in labels.tolist()]}

    elif conditioning is None:

        def conditioning(labels: torch.Tensor) -> dict[str, Any]:
            idx = labels.to(emb.device)
            out = {"encoder_hidden_states": emb[idx]}
            if pooled is not None:
                out["pooled_projections"] = pooled[idx]
            if stacked is not None:
                out[call.stacked] = stacked[:, idx.to(stacked.device)]
            if mask is not None:
                out[call.mask] = mask[idx.to(mask.device)]
            return out

    out_ch = int(getattr(cfg, "out_channels", None) or cfg.in_channels)
    # out_channels is the input's (or twice it, learned σ); Qwen-Image counts it before the 2x2 packing
    if out_ch not in (int(cfg.in_channels), 2 * int(cfg.in_channels)) and not (
        call.packed and 4 * out_ch == int(cfg.in_channels)
    ):
        raise ValueError(
            f"{family}: out_channels={out_ch} is neither in_channels={int(cfg.in_channels)} nor twice it; "
            "the prediction would not have the latent's shape"
        )
    use_guidance = call.guidance and bool(getattr(cfg, "guidance_embeds", False))
    scale = float(call.timestep_scale)
    if call.config_timestep_scale:
        scale *= float(getattr(cfg, "timestep_scale", 1.0) or 1.0)
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
            "text_mask": mask,
            "stacked_embeddings": stacked,
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
        timestep_scale=scale,
        packed=call.packed,
        guidance=float(guidance) if use_guidance else None,
        call=call,
        pixel_scale=int(pixel_scale),
    )
