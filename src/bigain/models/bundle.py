"""A denoiser together with everything needed to noise, condition and read it.

The classifier, the generator and the demo talk to models only through this
interface, so pixel-space class-conditional models (the embedded ones, DiT)
and latent text-conditional pipelines (SD) are handled by the same code. Flow-matching
models (SD3, Flux) are :class:`bigain.models.flow.FlowBundle`, a subclass that predicts velocities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class DiffusionBundle:
    """A diffusers denoiser plus its noise schedule and conditioning.

    `conditioning(labels)` maps class indices (LongTensor, shape (B,)) to the keyword
    arguments of the denoiser's forward (e.g. ``{"class_labels": labels}`` for DiT or
    ``{"encoder_hidden_states": emb[labels]}`` for a cross-attention U-Net).
    """

    name: str
    denoiser: torch.nn.Module
    kind: str  # "dit" | "unet" | "pixart" | "sd3" | "flux" | ...
    alphas_cumprod: torch.Tensor | None  # (T,), float64 or float32, the training schedule (None: flow)
    num_classes: int
    class_names: list[str]
    sample_shape: tuple[int, int, int]  # (C, H, W) of x0 as the denoiser sees it
    conditioning: Callable[[torch.Tensor], dict[str, Any]]
    null_class: int | None = None  # index used for classifier-free guidance, if any
    learned_sigma: bool = False  # output has 2*C channels; the first C are epsilon
    extras: dict[str, Any] = field(default_factory=dict)
    prediction_type: str = "epsilon"  # what `predict` returns: "epsilon", or "flow" (velocity)

    def __post_init__(self) -> None:
        if self.prediction_type != "epsilon":
            raise ValueError(
                f"prediction_type={self.prediction_type!r}: a DiffusionBundle predicts 'epsilon'; "
                "flow-matching models are bigain.models.flow.FlowBundle"
            )
        if self.alphas_cumprod is None:
            raise ValueError("an epsilon-prediction bundle needs alphas_cumprod (its training schedule)")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """epsilon prediction for a batch; `t` and `labels` have one entry per row."""
        kwargs = self.conditioning(labels)
        out = self.denoiser(x_t, timestep=t, return_dict=False, **kwargs)[0]
        if self.learned_sigma:
            out = out[:, : x_t.shape[1]]
        return out

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The denoiser's prediction in its own parametrisation (``prediction_type``): here ε."""
        return self.predict_eps(x_t, t, labels)
