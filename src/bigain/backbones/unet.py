"""Stable Diffusion U-Nets (SD 1.x/2.x, SDXL): `BasicTransformerBlock`s inside the down, mid and up
blocks, at the resolution level of the feature map they sit on.

Default placement: the highest-resolution level that has attention (level 1 on SD 1.x/2.x, whose
64x64-latent blocks see 4096 tokens; level 2 on SDXL, whose first down block has no attention).
The merge metric is the block input (as in ToMe for SD).
"""

from __future__ import annotations

from torch import nn

from .. import ops
from .base import Backbone, Block, ForwardInfo, as_timesteps


def _is_basic_block(m: nn.Module) -> bool:
    return hasattr(m, "attn1") and hasattr(m, "norm1") and hasattr(m, "ff")


def _roles(m: nn.Module) -> dict[str, nn.Module]:
    roles = {"attn": m.attn1, "ff": m.ff}
    if getattr(m, "attn2", None) is not None:
        roles["cross"] = m.attn2
    return roles


class UNetBackbone(Backbone):
    name = "unet"
    classes = ("UNet2DConditionModel",)
    default_metric = "block"
    placement = (
        "the self-attention of every block at the highest-resolution level that has attention "
        "(level 1 on SD 1.x/2.x, level 2 on SDXL)"
    )

    def matches(self, model: nn.Module) -> bool:
        return super().matches(model) or (hasattr(model, "down_blocks") and hasattr(model, "up_blocks"))

    def blocks(self, model: nn.Module) -> list[Block]:
        out: list[Block] = []

        def add(prefix: str, container: nn.Module, level: int) -> None:
            for name, m in container.named_modules():
                if _is_basic_block(m):
                    out.append(Block(len(out), f"{prefix}.{name}" if name else prefix, m, level, _roles(m)))

        level = 1
        for i, down in enumerate(model.down_blocks):
            if hasattr(down, "attentions"):
                add(f"down_blocks.{i}.attentions", down.attentions, level)
            if getattr(down, "downsamplers", None) is not None:
                level *= 2
        if getattr(model, "mid_block", None) is not None and hasattr(model.mid_block, "attentions"):
            add("mid_block.attentions", model.mid_block.attentions, level)
        for i, up in enumerate(model.up_blocks):
            if hasattr(up, "attentions"):
                add(f"up_blocks.{i}.attentions", up.attentions, level)
            if getattr(up, "upsamplers", None) is not None:
                level //= 2
        return out

    def default_level(self, blocks: list[Block]) -> int:
        return min((b.level for b in blocks), default=1)

    def read_forward(self, model: nn.Module, args: tuple, kwargs: dict, cache: dict) -> ForwardInfo:
        x = args[0] if args else kwargs.get("sample")
        if x is None or x.dim() != 4:
            raise ValueError("bigain: the U-Net input `sample` must be a (B, C, H, W) latent")
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        dev, host = as_timesteps(t, x.shape[0], x.device)
        return ForwardInfo(ops.Grid.image(int(x.shape[-2]), int(x.shape[-1])), dev, host)

    def grid(self, info: ForwardInfo, block: Block, num_tokens: int) -> ops.Grid:
        grids = info.extra.setdefault("grids", {})  # one Grid per token count and forward
        grid = grids.get(num_tokens)
        if grid is None:
            latent = info.grid
            grid = latent.at_level(block.level)
            if grid.tokens != num_tokens:
                grid = latent.at_level(ops.infer_level(latent.height, latent.width, num_tokens))
            grids[num_tokens] = grid
        return grid

    def sample_grid(self, model: nn.Module) -> ops.Grid | None:
        s = getattr(model.config, "sample_size", None)
        if s is None:
            return None
        return ops.Grid.image(s, s) if isinstance(s, int) else ops.Grid.image(int(s[0]), int(s[1]))

    def block_grid(self, grid: ops.Grid, level: int) -> ops.Grid:
        return grid.at_level(level)
