"""Rotary position embeddings applied by bigain when a method changes the tokens an attention sees.

Four conventions of diffusers; the first two rotate pairs of adjacent channels with tables whose
entries repeat per pair (cos[..., 2i] == cos[..., 2i + 1]):
- `rope_pairs` (Flux, `diffusers.models.embeddings.apply_rotary_emb` with `use_real_unbind_dim=-1`):
  x * cos + rotate(x) * sin in float32, rounded to x's dtype;
- `rope_pairs_promoted` (Wan's attention processor): the even/odd halves combined in the tables'
  precision (float64 on CPU and CUDA), written into a tensor of x's dtype;
- `rope_halves` (CogView4, `apply_rotary_emb` with `use_real_unbind_dim=-2`): channel i paired with
  channel i + D/2, x * cos + rotate(x) * sin in float32, rounded to x's dtype;
- `rope_complex` (Qwen-Image's `apply_rotary_emb_qwen(use_real=False)`, Lumina2's
  `apply_rotary_emb(use_real=False)`, Z-Image's processor): complex tables, one entry per pair of
  adjacent channels, passed as their real and imaginary parts (D/2 columns); the pairs as complex
  numbers in float32 times the table, rounded to x's dtype.
Tables are (S, D) rows shared by the batch or (B, S, D) rows per sample (D/2 for `rope_complex`);
x is (B, S, heads, D). `rope_after_text` applies one of them to the image rows of a heads-first
[text; image] q/k tensor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def _broadcast(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if cos.dim() == 2:
        return cos[None, :, None, :], sin[None, :, None, :]
    return cos[:, :, None, :], sin[:, :, None, :]


def rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Flux's rotary embedding on (B, S, heads, D), computed in fp32 like diffusers."""
    cos, sin = _broadcast(cos, sin)
    pairs = x.reshape(*x.shape[:-1], -1, 2)
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(3)
    return (x.float() * cos.to(x.device) + rotated.float() * sin.to(x.device)).to(x.dtype)


def rope_pairs_promoted(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on (B, S, heads, D): the arithmetic of `WanAttnProcessor`, op for op."""
    cos, sin = _broadcast(cos, sin)
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    c, s = cos[..., 0::2].to(x.device), sin[..., 1::2].to(x.device)
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def rope_halves(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """CogView4's rotary embedding on (B, S, heads, D): the first and second halves of the channels
    as the real and imaginary parts, computed in fp32 like diffusers."""
    cos, sin = _broadcast(cos, sin)
    real, imag = x.reshape(*x.shape[:-1], 2, -1).unbind(-2)
    rotated = torch.cat([-imag, real], dim=-1)
    return (x.float() * cos.to(x.device) + rotated.float() * sin.to(x.device)).to(x.dtype)


def rope_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The complex-table rotary embedding on (B, S, heads, D), op for op as diffusers computes it:
    adjacent channel pairs viewed as complex numbers in float32, times the rows cos + i sin (the real
    and imaginary parts of the model's complex table, (S, D/2) or (B, S, D/2)), rounded to x's dtype."""
    cos, sin = _broadcast(cos, sin)
    freqs = torch.complex(cos, sin).to(x.device)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * freqs).flatten(3).type_as(x)


def rope_after_text(
    rope: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
) -> torch.Tensor:
    """`rope` (one of the above) on the image rows of a heads-first (B, heads, T + N, D) q/k tensor of
    [text; image] (CogVideoX, CogView4: the processor joins the text in front before the q/k norms):
    the last N = rows-of-the-tables tokens are rotated, the T text tokens are left as they are."""
    n = cos.shape[-2]
    t = x.shape[2] - n
    image = rope(x[:, :, t:].transpose(1, 2), cos, sin).transpose(1, 2)
    return torch.cat([x[:, :, :t], image], dim=2) if t else image
