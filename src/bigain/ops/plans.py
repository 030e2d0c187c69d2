"""Token reduction plans: bipartite merging (ToMe / BiGain-TM) and pruning (SiTo).

A plan is computed once per block call from a metric and then applied to any
tensor of the same token layout: `reduce` (N -> N - r tokens) before a sub-layer,
`expand` (N - r -> N) after it. `expand` is a single gather through `inverse`,
the position in the reduced sequence that each original token reads from; `reduce`
is one gather through `order` (plus one scatter-mean when sources are merged). All
index bookkeeping is done when the plan is made, once per block call, not per use.

On CUDA with Triton, the matching, the merge and the gathers take the fused kernels of
`bigain.ops.fast` (same plans on inputs without ties, outputs equal up to rounding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from . import fast
from .grid import Grid, check_tokens
from .partition import DEFAULT_WINDOW, partition_windows, score_windows


def _gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, C), idx (B or 1, M) -> (B, M, C)."""
    if fast.active(x):
        return fast.kernels().gather_rows(x, idx)
    b, _, c = x.shape
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(b, idx.shape[1], c))


@dataclass
class MergePlan:
    """Bipartite soft matching result. Reduced layout: [kept sources, destinations]."""

    kept_idx: torch.Tensor  # (B, Ns - r) flat ids of unmerged sources, by descending similarity
    merged_idx: torch.Tensor  # (B, r) flat ids of merged sources
    dst_idx: torch.Tensor  # (B, Nd) flat ids of destinations
    target: torch.Tensor  # (B, r) destination slot (0..Nd-1) of each merged source
    inverse: torch.Tensor  # (B, N) position in the reduced sequence each token reads back
    mode: str = "mean"
    # (B, N) [kept, dst, merged] ids: the reduced rows, then the rows merged into them.
    order: torch.Tensor | None = field(default=None, repr=False)
    # Fast-path bookkeeping for the one-pass merge (`fast.kernels().merge_segments`), made with the plan on CUDA.
    segments: tuple[torch.Tensor, ...] | None = field(default=None, repr=False)
    # (B, r) row of the reduced sequence each merged source goes into (target + number kept).
    slot: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in ("mean", "prune"):
            raise ValueError(f"unknown merge mode {self.mode!r}")
        if self.order is None:
            b = self.inverse.shape[0]
            parts = [self.kept_idx, self.dst_idx.expand(b, -1), self.merged_idx]
            self.order = torch.cat(parts, dim=1)
        if self.slot is None:
            self.slot = self.target + self.kept_idx.shape[1]
        self._slot = self.slot.unsqueeze(-1)  # (B, r, 1) rows merged into

    @property
    def num_removed(self) -> int:
        return self.merged_idx.shape[1]

    @property
    def num_reduced(self) -> int:
        return self.kept_idx.shape[1] + self.dst_idx.shape[1]

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        m, r = self.num_reduced, self.num_removed
        merging = self.mode == "mean" and r > 0
        if fast.active(x):
            kernels = fast.kernels()
            if not merging:
                return kernels.gather_rows(x, self.order[:, :m])
            if self.segments is None:
                self.segments = kernels.merge_segments(
                    self.kept_idx, self.dst_idx, self.merged_idx, self.target
                )
            return kernels.segment_mean(x, *self.segments)
        if not merging:
            return _gather_tokens(x, self.order[:, :m])
        y = _gather_tokens(x, self.order)
        index = self._slot.expand(x.shape[0], r, x.shape[-1])
        # Out of place: the result is a contiguous copy of the reduced rows with the merged rows averaged in.
        return y[:, :m].scatter_reduce(1, index, y[:, m:], reduce="mean")

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        return _gather_tokens(y, self.inverse)


@dataclass
class PrunePlan:
    """SiTo: pruned tokens are dropped; on recovery each copies its most similar retained token."""

    keep_idx: torch.Tensor  # (B, N - r) flat ids of retained tokens, [kept sources, destinations]
    inverse: torch.Tensor  # (B, N)

    def reduce(self, x: torch.Tensor) -> torch.Tensor:
        return _gather_tokens(x, self.keep_idx)

    def expand(self, y: torch.Tensor) -> torch.Tensor:
        return _gather_tokens(y, self.inverse)


def _without_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Switch autocast off where it is on, so that a computation runs in the dtype it was given."""
    kind = device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def _positions(
    b: int, n: int, device: torch.device, parts: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Build `inverse`: scatter each (flat ids, positions) part into a (B, N) map. The parts' ids
    cover every token (kept, destinations, removed), so the map starts uninitialised."""
    inverse = torch.empty(b, n, dtype=torch.int64, device=device)
    for ids, pos in parts:
        inverse.scatter_(1, ids, pos.expand_as(ids))
    return inverse


def bipartite_merge_plan(
    metric: torch.Tensor,
    dst_idx: torch.Tensor,
    src_idx: torch.Tensor,
    r: int,
    mode: str = "mean",
) -> MergePlan:
    """Match every source to its most cosine-similar destination; merge the r best-matched sources.

    `dst_idx`/`src_idx` may have batch 1 (a pattern shared by the batch) or B.
    r is clamped to the number of sources. Returns a plan over the full batch.
    """
    b, n, _ = metric.shape
    dst_idx = dst_idx.expand(b, -1)
    src_idx = src_idx.expand(b, -1)
    r = max(0, min(int(r), src_idx.shape[1]))
    with torch.no_grad():
        use_fast = fast.active(metric)
        if use_fast:
            best, nearest = fast.kernels().best_match(metric, src_idx, dst_idx)
        else:
            unit = metric / metric.norm(dim=-1, keepdim=True)
            a = _gather_tokens(unit, src_idx)
            d = _gather_tokens(unit, dst_idx)
            scores = a @ d.transpose(-1, -2)
            best, nearest = scores.max(dim=-1)
        edge = best.argsort(dim=-1, descending=True)
        ranked = torch.gather(src_idx, 1, edge)  # sources by descending best similarity
        merged_idx, kept_idx = ranked[:, :r], ranked[:, r:]
        target = torch.gather(nearest, 1, edge[:, :r])
        n_kept, nd = kept_idx.shape[1], dst_idx.shape[1]
        order = torch.cat([kept_idx, dst_idx, merged_idx], dim=1)
        ar = torch.arange(n_kept + nd, device=metric.device, dtype=torch.int64).expand(b, -1)
        slot = target + n_kept
        inverse = _positions(b, n, metric.device, [(order[:, : n_kept + nd], ar), (merged_idx, slot)])
        segments = None
        if use_fast and mode == "mean" and r > 0:
            segments = fast.kernels().merge_segments(kept_idx, dst_idx, merged_idx, target)
    return MergePlan(kept_idx, merged_idx, dst_idx, target, inverse, mode, order, segments, slot)


def similarity_prune_plan(
    metric: torch.Tensor,
    height: int,
    width: int,
    r: int,
    sx: int = 2,
    sy: int = 2,
    beta: float = 1.0,
    noise_alpha: float = 0.1,
    noise: torch.Tensor | None = None,
    similarity_dtype: torch.dtype = torch.float32,
) -> PrunePlan:
    """`prune_plan` on an image (H x W grid, sy x sx windows)."""
    return prune_plan(
        metric, Grid.image(height, width), r, (1, sy, sx), beta, noise_alpha, noise, similarity_dtype
    )


def prune_plan(
    metric: torch.Tensor,
    grid: Grid,
    r: int,
    window: Iterable[int] = DEFAULT_WINDOW,
    beta: float = 1.0,
    noise_alpha: float = 0.1,
    noise: torch.Tensor | None = None,
    similarity_dtype: torch.dtype = torch.float32,
) -> PrunePlan:
    """SiTo: representative tokens are destinations; the most redundant sources are pruned.

    `metric` (B, T*H*W, C) on `grid`, one destination per (st, sy, sx) `window` (see
    `bigain.ops.partition` for why st = 1 is the default on video grids).
    score_i = beta * sum_j cos(x_i, x_j) + noise_alpha * noise_i; each window's arg-max is its
    destination; the r sources whose best destination similarity is highest are pruned and
    later copy the output of their most similar retained token.
    `noise` is (B, N) standard normal from the caller's explicit generator (or None: no noise).
    `similarity_dtype`: the metric is cast to it before the normalisation, and the similarities,
    scores and noise term are computed in it, with autocast switched off (an enclosing bf16 autocast
    would otherwise run the matrix product in bf16). SiTo's authors use float16 (their kept-token
    sets); float32 (the default here) separates near-ties that float16 rounds together.
    """
    if not similarity_dtype.is_floating_point:
        raise ValueError(f"similarity_dtype must be a floating dtype, got {similarity_dtype}")
    check_tokens(metric, grid)
    b, n, _ = metric.shape
    with torch.no_grad(), _without_autocast(metric.device):
        use_fast = fast.active(metric)
        unit = metric.to(similarity_dtype)
        unit = unit / unit.norm(dim=-1, keepdim=True)
        if use_fast:
            # sum_j cos(x_i, x_j) = unit_i . sum_j unit_j: O(N C) instead of the (N, N) matrix.
            score = beta * (unit @ unit.sum(dim=1).unsqueeze(-1)).squeeze(-1)
        else:
            sim = unit @ unit.transpose(-1, -2)  # (B, N, N)
            score = beta * sim.sum(dim=-1)
        if noise is not None:
            score = score + noise_alpha * noise.to(score)
        choice = score_windows(score, grid, window, rule="paper", largest=True)
        dst_idx, src_idx = partition_windows(choice, grid, window)
        r = max(0, min(int(r), src_idx.shape[1]))
        if use_fast:
            redundancy = fast.kernels().best_match(unit, src_idx, dst_idx)[0]
        else:
            src_to_dst = torch.gather(sim, 1, src_idx.unsqueeze(-1).expand(b, src_idx.shape[1], n))
            src_to_dst = torch.gather(
                src_to_dst, 2, dst_idx.unsqueeze(1).expand(b, src_idx.shape[1], dst_idx.shape[1])
            )
            redundancy = src_to_dst.max(dim=-1).values
        order = redundancy.argsort(dim=-1, descending=True)
        pruned_idx = torch.gather(src_idx, 1, order[:, :r])
        kept_src = torch.gather(src_idx, 1, order[:, r:])
        keep_idx = torch.cat([kept_src, dst_idx], dim=1)
        n_keep = keep_idx.shape[1]
        # Most similar retained token for every pruned token.
        if use_fast:
            source_pos = fast.kernels().best_match(unit, pruned_idx, keep_idx)[1]
        else:
            to_keep = torch.gather(sim, 1, pruned_idx.unsqueeze(-1).expand(b, r, n))
            to_keep = torch.gather(to_keep, 2, keep_idx.unsqueeze(1).expand(b, r, n_keep))
            source_pos = to_keep.argmax(dim=-1)
        ar = torch.arange(n_keep, device=metric.device, dtype=torch.int64).unsqueeze(0)
        inverse = _positions(b, n, metric.device, [(keep_idx, ar), (pruned_idx, source_pos)])
    return PrunePlan(keep_idx, inverse)
