"""The embedded Fashion-MNIST models: their architectures and configs.

- ``fashion-dit``: a pixel-space class-conditional ``DiTTransformer2DModel`` (patch 2, 256 tokens).
- ``fashion-dit28``: the same with DiT-XL/2's depth (28 blocks, hidden 128 = 2 heads of 64), so the
  paper's DiT placement (blocks 1-5 and 7-11) compresses the same share of the depth as on DiT-XL/2.
  Its width is what the shipped-weights budget allows (about 19.5 MB in fp16).
- ``fashion-unet``: a ``UNet2DConditionModel`` conditioned through cross-attention on a learned
  set of tokens per class (`ClassTokenEmbedding`), the way Stable Diffusion reads text tokens.
- ``fashion-cnn``: a small CNN classifier whose penultimate features define "Fashion-FID".

Both diffusion models use DDPM with 1000 steps and linear betas 1e-4..0.02, epsilon prediction,
and reserve class index 10 as the null class for classifier-free guidance.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler",
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def dit_config(tiny: bool = False) -> dict[str, Any]:
    """DiTTransformer2DModel kwargs: 1 channel, 32x32, patch 2, 10 classes (+ null 10)."""
    return dict(
        num_attention_heads=1 if tiny else 3,
        attention_head_dim=16 if tiny else 64,
        in_channels=1,
        out_channels=1,
        num_layers=2 if tiny else 8,
        patch_size=2,
        sample_size=32,
        num_embeds_ada_norm=NUM_CLASSES,  # LabelEmbedding adds the null class at index 10
    )


def dit28_config(tiny: bool = False) -> dict[str, Any]:
    """`dit_config` at DiT-XL/2's depth: 28 blocks of width 128 (tiny: 28 blocks of width 16)."""
    return {
        **dit_config(tiny),
        "num_layers": 28,
        "num_attention_heads": 1 if tiny else 2,
        "attention_head_dim": 16 if tiny else 64,
    }


DIT_MODELS = ("fashion-dit", "fashion-dit28")


def unet_config(tiny: bool = False) -> dict[str, Any]:
    """UNet2DConditionModel kwargs: cross-attention transformer blocks at 32x32 and 16x16."""
    return dict(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 32, 32) if tiny else (64, 128, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32 if tiny else 128,
        # diffusers' legacy name: this is the number of heads (head dim 32 at 64 ch, 64 at 128 ch)
        attention_head_dim=1 if tiny else 2,
        norm_num_groups=8 if tiny else 32,
    )


def class_embedding_config(tiny: bool = False) -> dict[str, Any]:
    return dict(num_classes=NUM_CLASSES, num_tokens=2 if tiny else 4, dim=32 if tiny else 128)


def cnn_config(tiny: bool = False) -> dict[str, Any]:
    return dict(
        channels=[8, 16, 16] if tiny else [32, 64, 128], feature_dim=32 if tiny else 256, num_classes=10
    )


class ClassTokenEmbedding(nn.Module):
    """A learned set of `num_tokens` cross-attention tokens per class, plus the null class.

    ``forward(labels)`` gives ``encoder_hidden_states`` of shape (B, num_tokens, dim).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, num_tokens: int = 4, dim: int = 128):
        super().__init__()
        self.num_classes = num_classes
        self.num_tokens = num_tokens
        self.dim = dim
        self.weight = nn.Parameter(torch.randn(num_classes + 1, num_tokens, dim))

    @property
    def null_class(self) -> int:
        return self.num_classes

    def config(self) -> dict[str, Any]:
        return dict(num_classes=self.num_classes, num_tokens=self.num_tokens, dim=self.dim)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.weight[labels]


class FashionCNN(nn.Module):
    """Small VGG-style classifier on (B, 1, 32, 32) images in [-1, 1].

    ``forward`` gives logits (B, 10); ``features`` the penultimate activations (B, feature_dim).
    """

    def __init__(
        self,
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 256,
        num_classes: int = 10,
    ):
        super().__init__()
        self.channels = list(channels)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        c_in = 1
        for c in self.channels:  # 32 -> 16 -> 8 -> 4
            layers += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(c_in * 4 * 4, feature_dim), nn.ReLU(inplace=True)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def config(self) -> dict[str, Any]:
        return dict(channels=self.channels, feature_dim=self.feature_dim, num_classes=self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build(model: str, tiny: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, nn.Module]:
    """Fresh randomly initialised modules of one embedded model, by name (``fashion-dit`` ...)."""
    overrides = dict(overrides or {})
    if model in DIT_MODELS:
        from diffusers import DiTTransformer2DModel

        cfg = dit_config(tiny) if model == "fashion-dit" else dit28_config(tiny)
        return {"denoiser": DiTTransformer2DModel(**{**cfg, **overrides})}
    if model == "fashion-unet":
        from diffusers import UNet2DConditionModel

        emb_over = overrides.pop("class_embedding", {})
        unet = UNet2DConditionModel(**{**unet_config(tiny), **overrides})
        emb_cfg = {**class_embedding_config(tiny), **emb_over, "dim": unet.config.cross_attention_dim}
        return {"denoiser": unet, "class_embedding": ClassTokenEmbedding(**emb_cfg)}
    if model == "fashion-cnn":
        return {"classifier": FashionCNN(**{**cnn_config(tiny), **overrides})}
    raise ValueError(
        f"model={model!r}: expected 'fashion-dit', 'fashion-dit28', 'fashion-unet' or 'fashion-cnn'"
    )
