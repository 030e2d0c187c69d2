"""Triton kernels for the hot operators, and the Python launchers that take and return torch tensors.

Each launcher computes what a reference op in `bigain.ops` computes (named in its docstring), in one
kernel and without the reference's intermediates: the matching never writes the (Ns, Nd) score matrix,
the merge reads every token once and writes every reduced token once, the KV source is read straight
from the (B, N, C) token layout. Arithmetic is float32 whatever the storage dtype. Imported only through
`bigain.ops.fast.kernels()`, so that installs without Triton never import it.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

# Reductions are written with tl.reduce over our own combine functions, and tensors are made with
# tl.full, rather than with Triton's standard-library sum/max/argmax/zeros: those are jit functions
# defined when triton is imported, so they do not run under the interpreter (TRITON_INTERPRET=1, the
# CPU tests) unless it was switched on before triton's first import.


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _first_argmax(v1, i1, v2, i2):
    # The larger value; on equal values the lower index, as torch.max returns the first maximum.
    take1 = (v1 > v2) | ((v1 == v2) & (i1 < i2))
    return tl.where(take1, v1, v2), tl.where(take1, i1, i2)


# ---------------------------------------------------------------------------------------------------
# Cosine similarity -> per-row best match, without the score matrix.
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _best_match_kernel(
    x_ptr,
    src_ptr,
    dst_ptr,
    best_ptr,
    arg_ptr,
    Ns,
    Nd,
    C,
    stride_xb,
    stride_xn,
    stride_sb,
    stride_db,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_C: tl.constexpr,
    IEEE: tl.constexpr,
):
    pid_s = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    rs = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    ms = rs < Ns
    rc = tl.arange(0, BLOCK_C)
    xb = x_ptr + b * stride_xb
    src = tl.load(src_ptr + b * stride_sb + rs, mask=ms, other=0)
    a_rows = xb + src[:, None] * stride_xn

    # Norms of the source rows (float32).
    na = tl.full([BLOCK_S], 0.0, dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cm = (c0 + rc) < C
        a = tl.load(a_rows + (c0 + rc)[None, :], mask=ms[:, None] & cm[None, :], other=0.0).to(tl.float32)
        na += tl.reduce(a * a, 1, _add)
    na = tl.where(ms, tl.sqrt(na), 1.0)  # padding rows: no 0/0

    best = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    arg = tl.full([BLOCK_S], 0, dtype=tl.int32)
    for d0 in range(0, Nd, BLOCK_D):
        rd = d0 + tl.arange(0, BLOCK_D)
        md = rd < Nd
        dst = tl.load(dst_ptr + b * stride_db + rd, mask=md, other=0)
        d_rows = xb + dst[:, None] * stride_xn
        acc = tl.full([BLOCK_S, BLOCK_D], 0.0, dtype=tl.float32)
        nd = tl.full([BLOCK_D], 0.0, dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cm = (c0 + rc) < C
            a = tl.load(a_rows + (c0 + rc)[None, :], mask=ms[:, None] & cm[None, :], other=0.0)
            d = tl.load(d_rows + (c0 + rc)[None, :], mask=md[:, None] & cm[None, :], other=0.0)
            if IEEE:
                acc = tl.dot(a, tl.trans(d), acc, input_precision="ieee")
            else:
                acc = tl.dot(a, tl.trans(d), acc)
            df = d.to(tl.float32)
            nd += tl.reduce(df * df, 1, _add)
        nd = tl.where(md, tl.sqrt(nd), 1.0)
        score = acc / (na[:, None] * nd[None, :])
        score = tl.where(md[None, :], score, float("-inf"))
        cols = tl.full([BLOCK_S, BLOCK_D], 0, dtype=tl.int32) + tl.arange(0, BLOCK_D)[None, :]
        block_best, block_arg = tl.reduce((score, cols), 1, _first_argmax)
        better = block_best > best  # strict: the first maximum wins, as in torch.max
        arg = tl.where(better, block_arg + d0, arg)
        best = tl.where(better, block_best, best)
    tl.store(best_ptr + b * Ns + rs, best, mask=ms)
    tl.store(arg_ptr + b * Ns + rs, arg.to(tl.int64), mask=ms)


def _index_rows(idx: torch.Tensor, b: int) -> tuple[torch.Tensor, int]:
    """(B or 1, M) int64 index, contiguous along M, and its batch stride (0 when shared by the batch)."""
    if idx.stride(-1) != 1:
        idx = idx.contiguous()
    stride = 0 if idx.shape[0] == 1 or idx.stride(0) == 0 else idx.stride(0)
    return idx, stride


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def best_match(
    x: torch.Tensor, src_idx: torch.Tensor, dst_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every source row, the max cosine similarity to the destination rows and its arg-max.

    x (B, N, C); src_idx (B or 1, Ns), dst_idx (B or 1, Nd) token ids. Returns best (B, Ns) float32 and
    nearest (B, Ns) int64 (position in dst_idx), what `(unit[src] @ unit[dst].T).max(-1)` gives.
    """
    x = _rows(x)
    b, _, c = x.shape
    src, s_stride = _index_rows(src_idx, b)
    dst, d_stride = _index_rows(dst_idx, b)
    ns, nd = src.shape[-1], dst.shape[-1]
    best = torch.empty(b, ns, device=x.device, dtype=torch.float32)
    nearest = torch.empty(b, ns, device=x.device, dtype=torch.int64)
    if ns == 0:
        return best, nearest
    if nd == 0:
        raise ValueError("best_match needs at least one destination")
    block_c = 64 if c >= 64 else max(16, triton.next_power_of_2(c))
    grid = (triton.cdiv(ns, 64), b)
    _best_match_kernel[grid](
        x, src, dst, best, nearest, ns, nd, c,
        x.stride(0), x.stride(1), s_stride, d_stride,
        BLOCK_S=64, BLOCK_D=64, BLOCK_C=block_c, IEEE=x.dtype == torch.float32,
        num_warps=4,
    )  # fmt: skip
    return best, nearest


# ---------------------------------------------------------------------------------------------------
# Row gather (unmerge, prune) and segment mean (merge).
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _gather_rows_kernel(
    x_ptr,
    idx_ptr,
    out_ptr,
    M,
    C,
    stride_xb,
    stride_xn,
    stride_ib,
    stride_ob,
    stride_on,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mm = rm < M
    mask = mm[:, None] & (rc < C)[None, :]
    tok = tl.load(idx_ptr + b * stride_ib + rm, mask=mm, other=0)
    v = tl.load(x_ptr + b * stride_xb + tok[:, None] * stride_xn + rc[None, :], mask=mask)
    tl.store(out_ptr + b * stride_ob + rm[:, None] * stride_on + rc[None, :], v, mask=mask)


def _row_blocks(c: int) -> tuple[int, int]:
    """(rows, channels) per program: ~2048 elements, a channel block that divides C when one does
    (C=320 -> 64, 1152 -> 128), so no lanes idle on a masked tail."""
    block_c = next((bc for bc in (256, 128, 64, 32) if c % bc == 0), min(256, triton.next_power_of_2(c)))
    return max(1, 2048 // block_c), block_c


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B or 1, M) -> (B, M, C): `torch.gather(x, 1, idx[..., None].expand(B, M, C))`."""
    x = _rows(x)
    b, _, c = x.shape
    idx, i_stride = _index_rows(idx, b)
    m = idx.shape[-1]
    out = torch.empty(b, m, c, device=x.device, dtype=x.dtype)
    if m == 0 or c == 0:
        return out
    block_m, block_c = _row_blocks(c)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c), b)
    _gather_rows_kernel[grid](
        x, idx, out, m, c, x.stride(0), x.stride(1), i_stride, out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out


@triton.jit
def _segment_mean_kernel(
    x_ptr,
    kept_ptr,
    dst_ptr,
    merged_ptr,
    bounds_ptr,
    out_ptr,
    M,
    C,
    n_kept,
    stride_xb,
    stride_xn,
    stride_kb,
    stride_db,
    stride_mb,
    stride_bb,
    stride_ob,
    stride_on,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mm = rm < M
    cm = rc < C
    # Row j < n_kept copies kept source j; row n_kept + d averages destination d with the sources
    # merged[bounds[d] : bounds[d + 1]] (those merged into d, in merge order).
    is_dst = mm & (rm >= n_kept)
    is_kept = mm & (rm < n_kept)
    d = tl.where(is_dst, rm - n_kept, 0)
    first = tl.where(
        is_dst,
        tl.load(dst_ptr + b * stride_db + d, mask=is_dst, other=0),
        tl.load(kept_ptr + b * stride_kb + rm, mask=is_kept, other=0),
    )
    xb = x_ptr + b * stride_xb
    acc = tl.load(
        xb + first[:, None] * stride_xn + rc[None, :], mask=mm[:, None] & cm[None, :], other=0.0
    ).to(tl.float32)
    lo = tl.load(bounds_ptr + b * stride_bb + d, mask=is_dst, other=0)
    count = tl.load(bounds_ptr + b * stride_bb + d + 1, mask=is_dst, other=0) - lo
    kmax = tl.reduce(count, 0, _max)
    for k in range(0, kmax):
        valid = k < count
        tok = tl.load(merged_ptr + b * stride_mb + lo + k, mask=valid, other=0)
        acc += tl.load(
            xb + tok[:, None] * stride_xn + rc[None, :], mask=valid[:, None] & cm[None, :], other=0.0
        ).to(tl.float32)
    out = acc / (count + 1).to(tl.float32)[:, None]
    tl.store(
        out_ptr + b * stride_ob + rm[:, None] * stride_on + rc[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=mm[:, None] & cm[None, :],
    )


def segment_mean(
    x: torch.Tensor,
    kept_idx: torch.Tensor,
    dst_idx: torch.Tensor,
    merged_sorted: torch.Tensor,
    bounds: torch.Tensor,
) -> torch.Tensor:
    """The merge's gather + mean in one pass: (B, N, C) -> (B, n_kept + Nd, C).

    Row j < n_kept is x[kept_idx[j]]; row n_kept + d is the mean of x over dst_idx[d] and
    merged_sorted[bounds[d] : bounds[d + 1]], as `merge_segments` lays them out. Sums in float32.
    """
    x = _rows(x)
    b, _, c = x.shape
    kept, k_stride = _index_rows(kept_idx, b)
    dst, d_stride = _index_rows(dst_idx, b)
    merged, m_stride = _index_rows(merged_sorted, b)
    bounds, b_stride = _index_rows(bounds, b)
    n_kept, nd = kept.shape[-1], dst.shape[-1]
    m = n_kept + nd
    out = torch.empty(b, m, c, device=x.device, dtype=x.dtype)
    if m == 0 or c == 0:
        return out
    block_m, block_c = _row_blocks(c)
    block_m = min(block_m, 32)
    grid = (triton.cdiv(m, block_m), triton.cdiv(c, block_c), b)
    _segment_mean_kernel[grid](
        x, kept, dst, merged, bounds, out, m, c, n_kept,
        x.stride(0), x.stride(1), k_stride, d_stride, m_stride, b_stride, out.stride(0), out.stride(1),
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out


def merge_segments(
    kept_idx: torch.Tensor, dst_idx: torch.Tensor, merged_idx: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index bookkeeping for `segment_mean`, computed once per plan: a stable sort of the merged
    sources by destination (merge order kept within a destination, so each destination sums its
    sources in the order the reference does) and each destination's run in it (one searchsorted).
    Returns (kept_idx, dst_idx, merged sources sorted by destination, bounds (B, Nd + 1))."""
    b, nd = target.shape[0], dst_idx.shape[1]
    order = target.argsort(dim=1, stable=True)
    merged_sorted = merged_idx.gather(1, order)
    target_sorted = target.gather(1, order)
    edges = torch.arange(nd + 1, device=target.device, dtype=target.dtype).expand(b, -1).contiguous()
    bounds = torch.searchsorted(target_sorted, edges)
    return kept_idx, dst_idx, merged_sorted, bounds


# ---------------------------------------------------------------------------------------------------
# KV downsampling (nearest-exact at offset floor(s/2) + average pool, alpha blend), from (B, N, C).
# ---------------------------------------------------------------------------------------------------


@triton.jit
def _kv_downsample_kernel(
    x_ptr,
    alpha_ptr,
    out_ptr,
    W,
    H_MAX,
    W_MAX,
    W2,
    T,
    C,
    scale_h,
    scale_w,
    alpha,
    stride_xb,
    stride_xn,
    stride_ob,
    stride_on,
    S: tl.constexpr,
    MODE: tl.constexpr,  # 0: blend, 1: nearest only (alpha == 1), 2: average only (alpha == 0)
    ALPHA_PER_ROW: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_c = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    rt = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    rc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mt = rt < T
    mask = mt[:, None] & (rc < C)[None, :]
    i = rt // W2
    j = rt % W2
    xb = x_ptr + b * stride_xb
    if MODE != 2:
        # torch's nearest-exact source index: min(floor((i + 0.5) * (in / out)), in - 1), in float32.
        ni = tl.minimum(tl.floor((i.to(tl.float32) + 0.5) * scale_h).to(tl.int32), H_MAX)
        nj = tl.minimum(tl.floor((j.to(tl.float32) + 0.5) * scale_w).to(tl.int32), W_MAX)
        near = tl.load(
            xb + (ni * W + nj).to(tl.int64)[:, None] * stride_xn + rc[None, :], mask=mask, other=0.0
        )
        near = near.to(tl.float32)
    if MODE != 1:
        avg = tl.full([BLOCK_T, BLOCK_C], 0.0, dtype=tl.float32)
        for u in tl.static_range(S):
            for v in tl.static_range(S):
                tok = (i * S + u) * W + (j * S + v)
                avg += tl.load(
                    xb + tok.to(tl.int64)[:, None] * stride_xn + rc[None, :], mask=mask, other=0.0
                ).to(tl.float32)
        avg = avg / (S * S)
    if MODE == 0:
        if ALPHA_PER_ROW:
            a = tl.load(alpha_ptr + b).to(tl.float32)
        else:
            a = alpha
        out = near * a + avg * (1.0 - a)
    elif MODE == 1:
        out = near
    else:
        out = avg
    tl.store(
        out_ptr + b * stride_ob + rt[:, None] * stride_on + rc[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=mask,
    )


def downsample_tokens(
    tokens: torch.Tensor, height: int, width: int, factor: int, alpha: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """`bigain.ops.downsample_tokens` in one kernel: (B, H*W, C) -> (B, (H//s)*(W//s), C)."""
    x = _rows(tokens)
    b, n, c = x.shape
    if n != height * width:
        raise ValueError(f"{n} tokens do not form a {height}x{width} grid")
    h2, w2 = height // factor, width // factor
    t = h2 * w2
    out = torch.empty(b, t, c, device=x.device, dtype=x.dtype)
    if t == 0 or c == 0:
        return out
    per_row = isinstance(alpha, torch.Tensor)
    if per_row:
        mode, alpha_t, alpha_f = 0, alpha.to(device=x.device, dtype=torch.float32).reshape(-1).expand(b), 0.0
        alpha_t = alpha_t.contiguous()
    else:
        mode = 1 if alpha == 1.0 else 2 if alpha == 0.0 else 0
        alpha_t, alpha_f = x, float(alpha)  # alpha_ptr unused
    # float(in) / out rounded to float32, as torch computes the nearest-exact scale.
    scale_h = float(np.float32(height) / np.float32(h2))
    scale_w = float(np.float32(width) / np.float32(w2))
    block_t, block_c = _row_blocks(c)
    block_t = min(block_t, 32)
    grid = (triton.cdiv(t, block_t), triton.cdiv(c, block_c), b)
    _kv_downsample_kernel[grid](
        x, alpha_t, out, width, height - 1, width - 1, w2, t, c, scale_h, scale_w, alpha_f,
        x.stride(0), x.stride(1), out.stride(0), out.stride(1),
        S=factor, MODE=mode, ALPHA_PER_ROW=per_row, BLOCK_T=block_t, BLOCK_C=block_c, num_warps=4,
    )  # fmt: skip
    return out
