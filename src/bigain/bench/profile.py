"""Where a patched transformer block spends its time: plan, reduce, attention, expand, rest.

Timestamps are taken by forward hooks placed around the patch's own hooks (prepended or appended),
so the same decomposition works for bigain's hook-based patch and for tomesd's replaced block
forward, and nothing of the model or the patch changes:

    block pre ─plan─ norm1 ─norm1─ │ ─reduce─ to_q ─attention─ attn1 out ─expand─ norm2 ─rest─ block out
                                   (attn1 pre-hooks: merge / prune / KV downsample)
    (norm2 = the first norm after attn1: norm2 before attn2, or norm3 before the FF on DiT)

For bigain on DiT (metric = attention input) the plan is made in attn1's pre-hook and is counted
in "reduce". CPU only (no synchronisation), or CUDA with `sync=True`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

PARTS = ("plan", "norm1", "reduce", "attention", "expand", "rest")


class BlockProfiler:
    """Accumulates per-block part times over forwards run inside the `with` block."""

    def __init__(self, model: nn.Module, blocks: Sequence[str], sync: bool = False) -> None:
        self.model = model
        self.blocks = list(blocks)
        self.sync = sync
        self.times: dict[str, dict[str, float]] = {b: dict.fromkeys(PARTS, 0.0) for b in self.blocks}
        self.calls: dict[str, int] = dict.fromkeys(self.blocks, 0)
        self._marks: dict[str, dict[str, float]] = {}
        self._handles: list[Any] = []
        from ..patching import inspect_model

        info = inspect_model(model)
        self.roles = {b.name: b.roles["attn"] for b in info.blocks}

    def _mark(self, block: str, point: str) -> None:
        if self.sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        self._marks.setdefault(block, {})[point] = time.perf_counter()

    def _pre(self, block: str, point: str):
        def hook(module: nn.Module, args: tuple) -> None:
            self._mark(block, point)

        return hook

    def _post(self, block: str, point: str):
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            self._mark(block, point)
            if point == "end":
                self._close(block)

        return hook

    def _close(self, block: str) -> None:
        m = self._marks.pop(block, {})
        need = (
            "start",
            "norm1_in",
            "norm1_out",
            "attn_in",
            "q_in",
            "attn_out",
            "attn_done",
            "norm2_in",
            "end",
        )
        if any(k not in m for k in need):
            return  # a block whose structure differs (e.g. no norm2): skip rather than mis-attribute
        t = self.times[block]
        t["plan"] += m["norm1_in"] - m["start"]
        t["norm1"] += m["norm1_out"] - m["norm1_in"]
        t["reduce"] += m["q_in"] - m["norm1_out"]
        t["attention"] += m["attn_out"] - m["q_in"]
        t["expand"] += m["norm2_in"] - m["attn_out"]
        t["rest"] += m["end"] - m["norm2_in"]
        self.calls[block] += 1

    def __enter__(self) -> BlockProfiler:
        for name in self.blocks:
            blk = self.model.get_submodule(name)
            attn = self.roles[name]
            h = self._handles
            h.append(blk.register_forward_pre_hook(self._pre(name, "start"), prepend=True))
            h.append(blk.norm1.register_forward_pre_hook(self._pre(name, "norm1_in"), prepend=True))
            h.append(blk.norm1.register_forward_hook(self._post(name, "norm1_out")))
            h.append(attn.register_forward_pre_hook(self._pre(name, "attn_in"), prepend=True))
            h.append(attn.to_q.register_forward_pre_hook(self._pre(name, "q_in"), prepend=True))
            h.append(attn.register_forward_hook(self._post(name, "attn_out"), prepend=True))
            h.append(attn.register_forward_hook(self._post(name, "attn_done")))
            after = blk.norm2 if getattr(blk, "norm2", None) is not None else blk.norm3  # DiT: no attn2/norm2
            h.append(after.register_forward_pre_hook(self._pre(name, "norm2_in"), prepend=True))
            h.append(blk.register_forward_hook(self._post(name, "end")))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def totals(self) -> dict[str, float]:
        """Sum of each part over all profiled blocks (seconds, over all forwards)."""
        return {p: sum(self.times[b][p] for b in self.blocks) for p in PARTS}
