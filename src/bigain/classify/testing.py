"""Tiny bundles with random weights for tests and benchmarks (no downloads, CPU friendly)."""

from __future__ import annotations

from typing import Any

import torch

from ..models.bundle import DiffusionBundle

__all__ = ["CountingBundle", "linear_alphas_cumprod", "tiny_dit_bundle", "tiny_unet_bundle"]


def linear_alphas_cumprod(
    num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """ᾱ_t of the DDPM linear-β schedule (float64)."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def tiny_dit_bundle(
    num_classes: int = 10, size: int = 16, channels: int = 1, seed: int = 0, layers: int = 2
) -> DiffusionBundle:
    """A 2-layer DiT (hidden 32, patch 2) on channels×size×size inputs with a null class."""
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=channels,
        out_channels=channels,
        num_layers=layers,
        sample_size=size,
        patch_size=2,
        num_embeds_ada_norm=num_classes,  # LabelEmbedding adds the null class row
        norm_num_groups=1,
    )
    # diffusers zero-initialises nothing here, but make the conditioning clearly matter
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.norm1.emb.class_embedder.embedding_table.weight.normal_(0, 1.0)
    model.eval()
    return DiffusionBundle(
        name="tiny-dit",
        denoiser=model,
        kind="dit",
        alphas_cumprod=linear_alphas_cumprod(),
        num_classes=num_classes,
        class_names=[f"class{i}" for i in range(num_classes)],
        sample_shape=(channels, size, size),
        conditioning=lambda labels: {"class_labels": labels},
        null_class=num_classes,
    )


class _ClassTokens(torch.nn.Module):
    def __init__(self, num_classes: int, dim: int, tokens: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(num_classes, dim * tokens)
        self.dim, self.tokens = dim, tokens

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels).view(labels.shape[0], self.tokens, self.dim)


def tiny_unet_bundle(
    num_classes: int = 10, size: int = 16, channels: int = 1, seed: int = 0
) -> DiffusionBundle:
    """A small cross-attention UNet2DConditionModel conditioned on an nn.Embedding class table."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    model = UNet2DConditionModel(
        sample_size=size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    model.eval()
    table = _ClassTokens(num_classes, 32, 2).eval()

    def conditioning(labels: torch.Tensor) -> dict[str, Any]:
        return {"encoder_hidden_states": table(labels.to(table.table.weight.device))}

    return DiffusionBundle(
        name="tiny-unet",
        denoiser=model,
        kind="unet",
        alphas_cumprod=linear_alphas_cumprod(),
        num_classes=num_classes,
        class_names=[f"class{i}" for i in range(num_classes)],
        sample_shape=(channels, size, size),
        conditioning=conditioning,
        extras={"class_table": table},
    )


class _Stub(torch.nn.Module):
    """A denoiser that returns a fixed function of its inputs and counts rows."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.rows = 0
        self.calls = 0
        self.timesteps: list[int] = []

    def forward(self, x, timestep, class_labels, return_dict=False):
        self.rows += x.shape[0]
        self.calls += 1
        self.timesteps.extend(int(t) for t in timestep)
        # class-dependent output: class c "predicts" c/num · x
        scale = (class_labels.float() + 1.0).view(-1, 1, 1, 1) * 0.01
        return (x * scale * self.w,)


class CountingBundle(DiffusionBundle):
    """A cheap bundle whose denoiser counts the rows it is asked for (for schedule tests)."""

    def __init__(self, num_classes: int, shape: tuple[int, int, int] = (1, 2, 2)) -> None:
        super().__init__(
            name="counting",
            denoiser=_Stub(),
            kind="stub",
            alphas_cumprod=linear_alphas_cumprod(),
            num_classes=num_classes,
            class_names=[str(i) for i in range(num_classes)],
            sample_shape=shape,
            conditioning=lambda labels: {"class_labels": labels},
        )


class _ToyDenoiser(torch.nn.Module):
    """A few convolutions with a class embedding added to the features (pure torch, fast import)."""

    def __init__(self, num_classes: int, channels: int, width: int = 16) -> None:
        super().__init__()
        self.inp = torch.nn.Conv2d(channels, width, 3, padding=1)
        self.emb = torch.nn.Embedding(num_classes + 1, width)
        self.temb = torch.nn.Linear(1, width)
        self.mid = torch.nn.Conv2d(width, width, 3, padding=1)
        self.out = torch.nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x, timestep, class_labels, return_dict=False):
        t = (timestep.float() / 1000.0).view(-1, 1).to(x.dtype)
        h = self.inp(x) + (self.emb(class_labels) + self.temb(t))[:, :, None, None]
        h = self.mid(torch.nn.functional.silu(h))
        return (self.out(torch.nn.functional.silu(h)),)


def toy_bundle(num_classes: int = 6, size: int = 16, channels: int = 1, seed: int = 0) -> DiffusionBundle:
    """A class-conditional pixel-space bundle without diffusers (for multi-process tests)."""
    torch.manual_seed(seed)
    model = _ToyDenoiser(num_classes, channels).eval()
    return DiffusionBundle(
        name="toy",
        denoiser=model,
        kind="toy",
        alphas_cumprod=linear_alphas_cumprod(),
        num_classes=num_classes,
        class_names=[f"class{i}" for i in range(num_classes)],
        sample_shape=(channels, size, size),
        conditioning=lambda labels: {"class_labels": labels},
        null_class=num_classes,
    )
