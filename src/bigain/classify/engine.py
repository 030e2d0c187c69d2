"""The diffusion classifier (Li et al., BiGain protocol): batched engine and a plain reference loop.

A class ``c`` is scored on an image ``x0`` by how well the denoiser, conditioned on ``c``,
predicts the noise that was added: for each evaluated (timestep t, noise ε)

    x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε,     e = mean_{C,H,W} loss(ε̂(x_t, t, c), ε)

and the class score is the mean of ``e``; lowest wins. Flow-matching models (SD3, Flux: bundles
with ``prediction_type == "flow"``, see :mod:`bigain.models.flow`) predict a velocity instead:

    x_t = (1 - σ_t) x0 + σ_t ε,     e = mean_{C,H,W} loss(v̂(x_t, t, c), ε - x0)

with σ_t the bundle's table (``t / T`` under the scheduler's shift). Classes are pruned in stages
(:mod:`bigain.classify.schedule`). The noise is drawn once per image from a generator seeded by
``(seed, image_key)``, one tensor per noise slot, shared by all classes.

The engine packs (image, class, slot) evaluations of many classes and images into full batches.
Each row's result depends only on its own (image, class, slot): with compression active, the
per-row random choices are keyed through ``bigain.sample_keys`` by a hash of (image_key, slot),
identical for every class of one (image, t, ε), so neither batch size, batch composition nor
class order changes a class's error.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..ops.keyed import mix_keys, row_keys
from ..precision import autocast, resolve_dtype
from .schedule import Stage, adaptive_plan, num_slots

__all__ = [
    "ClassifyResult",
    "DiffusionClassifier",
    "NonFiniteError",
    "StageErrors",
    "draw_noise",
    "image_key_from_id",
    "mix_keys",
    "reference_classify",
    "row_keys",
]


_LOSSES = ("l2", "l1", "huber")
_PATTERNS = ("per-sample", "per-call")


# --------------------------------------------------------------------------------------------
# keys and noise
# --------------------------------------------------------------------------------------------
def image_key_from_id(image_id: str | int) -> int:
    """A stable 63-bit key for an image id (its dataset-relative path or name)."""
    if isinstance(image_id, int):
        return mix_keys(image_id)
    digest = hashlib.blake2b(str(image_id).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def draw_noise(shape: tuple[int, int, int], n: int, seed: int, image_key: int) -> torch.Tensor:
    """The n noise tensors of one image, float32 on CPU, from a generator seeded by (seed, key)."""
    g = torch.Generator(device="cpu")
    g.manual_seed(mix_keys(seed, image_key))
    return torch.randn((n, *shape), generator=g, dtype=torch.float32)


# --------------------------------------------------------------------------------------------
# helpers shared by the engine and the reference loop
# --------------------------------------------------------------------------------------------
def _check_loss(loss: str) -> str:
    if loss not in _LOSSES:
        raise ValueError(f"loss={loss!r}: allowed are {', '.join(_LOSSES)}")
    return loss


def _check_pattern(pattern: str) -> str:
    if pattern not in _PATTERNS:
        raise ValueError(f"pattern={pattern!r}: allowed are {', '.join(_PATTERNS)}")
    return pattern


def _row_errors(eps_hat: torch.Tensor, eps: torch.Tensor, loss: str) -> torch.Tensor:
    """mean over (C, H, W) of loss(ε̂, ε), one value per row, float32."""
    eps_hat = eps_hat.float()
    if loss == "l2":
        e = (eps_hat - eps) ** 2
    elif loss == "l1":
        e = (eps_hat - eps).abs()
    else:
        e = F.huber_loss(eps_hat, eps, reduction="none", delta=1.0)
    return e.flatten(1).mean(dim=1)


def _noise_coefficients(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ab = alphas_cumprod.detach().to("cpu", torch.float64)[t.cpu()]
    return ab.sqrt().float(), (1.0 - ab).sqrt().float()


def _is_flow(bundle: Any) -> bool:
    return getattr(bundle, "prediction_type", "epsilon") == "flow"


def _coefficients(bundle: Any, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a_t, b_t) of x_t = a_t x0 + b_t ε: (√ᾱ_t, √(1 - ᾱ_t)), or (1 - σ_t, σ_t) for flow bundles."""
    if _is_flow(bundle):
        sigma = bundle.sigmas.detach().to("cpu", torch.float64)[t.cpu()]
        return (1.0 - sigma).float(), sigma.float()
    return _noise_coefficients(bundle.alphas_cumprod, t)


def _target(bundle: Any, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """What the prediction is compared with: ε, or the velocity ε - x0 for flow bundles."""
    return eps - x0 if _is_flow(bundle) else eps


def _predict(bundle: Any, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The bundle's prediction in its own parametrisation (ε, or the velocity for flow bundles)."""
    return bundle.predict(x_t, t, labels) if _is_flow(bundle) else bundle.predict_eps(x_t, t, labels)


def _noised(x0: torch.Tensor, eps: torch.Tensor, sa: torch.Tensor, sb: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (x0.dim() - 1)
    return sa.to(x0.device).view(shape) * x0 + sb.to(x0.device).view(shape) * eps


def _denoiser_of(bundle: Any) -> torch.nn.Module:
    return bundle.denoiser


def _param_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in module.parameters():
        return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def _sample_keys_context(bundle: Any, keys: torch.Tensor | None, pattern: str):
    """``bigain.sample_keys(bundle, keys)`` when keyed sampling applies and exists, else nothing."""
    if keys is None or pattern != "per-sample":
        return contextlib.nullcontext()
    try:
        import bigain

        sample_keys = getattr(bigain, "sample_keys", None)
    except ImportError:  # pragma: no cover - bigain always importable inside the package
        sample_keys = None
    if sample_keys is None:
        return contextlib.nullcontext()
    return sample_keys(bundle, keys)


def _host_timesteps_context(bundle: Any, t_host: torch.Tensor):
    """Tell a patched denoiser the timesteps of the coming forward as host numbers (on the 0-1000
    scale of what the denoiser sees: 1000 sigma for flow bundles), so that decisions on t (the KV
    methods' switch-off) need no read of the device timesteps. A no-op on an unpatched model."""
    import bigain

    t = t_host.detach().to("cpu").reshape(-1)
    t = bundle.sigma_at(t.long()).to(torch.float64) * 1000.0 if _is_flow(bundle) else t.to(torch.float64)
    return bigain.host_timesteps(_denoiser_of(bundle), t.tolist())


def _nonfinite_cause(err: torch.Tensor, slot_t: torch.Tensor) -> str | None:
    """A one-line cause if any evaluated entry of ``err`` (classes × slots; NaN = not evaluated,
    written as -inf by ``_evaluate`` when the denoiser itself gave NaN) is not finite, else None."""
    evaluated = ~torch.isnan(err)
    bad = evaluated & ~torch.isfinite(err)
    if not bool(bad.any()):
        return None
    ts = sorted({int(slot_t[s]) for s in bad.nonzero()[:, 1].tolist()})
    return (
        f"{NonFiniteError.__name__}: {int(bad.sum())} of {int(evaluated.sum())} denoiser evaluations gave a "
        f"non-finite error (NaN/inf) at t={ts}; check the method options and the dtype (fp16 overflow?)"
    )


def _rank(classes: Iterable[int], means: dict[int, float]) -> list[int]:
    """Classes by ascending mean error; ties broken by class index (deterministic)."""
    return sorted(classes, key=lambda c: (means[c], c))


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
class NonFiniteError(RuntimeError):
    """The denoiser gave a non-finite error (NaN/inf): that image has no prediction."""


@dataclass
class StageErrors:
    """Errors of one stage: ``errors[i][j]`` is class ``classes[i]`` at slot ``j`` of this stage."""

    timesteps: list[int]  # timestep of each slot of the stage
    slots: list[int]  # noise slot of each column
    classes: list[int]  # candidate indices evaluated in this stage (ascending)
    errors: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "timesteps": self.timesteps,
            "slots": self.slots,
            "classes": self.classes,
            "errors": self.errors,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageErrors:
        return cls(list(d["timesteps"]), list(d["slots"]), list(d["classes"]), [list(r) for r in d["errors"]])


@dataclass
class ClassifyResult:
    """The outcome for one image. Class indices are candidate indices (positions in ``classes``).

    ``error`` is set (and ``prediction`` is None, ``ranking`` empty) when a denoiser evaluation of
    the image was not finite: a NaN must never turn into a class.
    """

    prediction: int | None
    ranking: list[int]  # winner first, then the others by ascending mean error over what they got
    mean_errors: list[float]  # per candidate, mean over all its evaluated (t, ε)
    stages: list[StageErrors]
    seconds: float = 0.0
    calls: int = 0  # denoiser rows spent on this image
    extras: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "prediction": self.prediction,
            "ranking": self.ranking,
            "mean_errors": self.mean_errors,
            "stages": [s.to_dict() for s in self.stages],
            "seconds": self.seconds,
            "calls": self.calls,
        }


def _finish(
    err: torch.Tensor, plan: list[Stage], stage_classes: list[list[int]], winner: int, seconds: float
) -> ClassifyResult:
    """Build a ClassifyResult from an error matrix (candidates × slots, NaN = not evaluated)."""
    evaluated = ~torch.isnan(err)
    sums = torch.where(evaluated, err, torch.zeros_like(err)).sum(dim=1)
    counts = evaluated.sum(dim=1)
    means = (sums / counts.clamp(min=1)).tolist()
    means = [m if c > 0 else float("inf") for m, c in zip(means, counts.tolist())]
    mdict = dict(enumerate(means))
    ranking = [winner] + _rank([c for c in range(err.shape[0]) if c != winner], mdict)
    stages = []
    for stage, classes in zip(plan, stage_classes):
        cols = list(stage.slots)
        stages.append(
            StageErrors(
                timesteps=list(stage.slot_timesteps),
                slots=cols,
                classes=list(classes),
                errors=err[classes][:, cols].tolist() if classes else [],
            )
        )
    return ClassifyResult(winner, ranking, means, stages, seconds, int(counts.sum()))


# --------------------------------------------------------------------------------------------
# the batched engine
# --------------------------------------------------------------------------------------------
class DiffusionClassifier:
    """Zero-shot classification with a diffusion denoiser, batched.

    Args:
        bundle: a :class:`bigain.models.bundle.DiffusionBundle` (or anything with ``denoiser``,
            ``alphas_cumprod``, ``num_classes``, ``sample_shape`` and ``predict_eps``), or a flow bundle
            (``prediction_type == "flow"``, ``sigmas`` and ``predict``: :mod:`bigain.models.flow`).
        classes: the model label of each candidate (default ``range(bundle.num_classes)``).
            Predictions are positions in this list, e.g. ImageNet-100 folder indices for a DiT.
        n_samples, to_keep: the adaptive stages (default ``(5, 20)`` / ``(5, 1)``, the BiGain protocol).
        loss: ``"l2"`` (default), ``"l1"`` or ``"huber"`` (δ = 1).
        batch_size: denoiser rows per forward.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"``: autocast for the denoiser; noising and errors
            stay in fp32.
        seed: seeds the per-image noise (together with the image key).
        pattern: ``"per-sample"`` (default: compressed blocks draw their random choices from
            per-row keys, batch-independent) or ``"per-call"`` (a new pattern per forward).
        n_trials: noise draws per timestep (the protocol uses 1).
    """

    def __init__(
        self,
        bundle: Any,
        *,
        classes: Sequence[int] | None = None,
        n_samples: Sequence[int] = (5, 20),
        to_keep: Sequence[int] = (5, 1),
        loss: str = "l2",
        batch_size: int = 32,
        dtype: str | torch.dtype = "fp32",
        seed: int = 0,
        pattern: str = "per-sample",
        n_trials: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        self.bundle = bundle
        self.classes = list(range(bundle.num_classes)) if classes is None else [int(c) for c in classes]
        if not self.classes:
            raise ValueError("classes must not be empty")
        self.n_samples = tuple(int(n) for n in n_samples)
        self.to_keep = tuple(int(k) for k in to_keep)
        self.loss = _check_loss(loss)
        self.batch_size = int(batch_size)
        self.dtype = resolve_dtype(dtype)
        self.seed = int(seed)
        self.pattern = _check_pattern(pattern)
        self.n_trials = int(n_trials)
        self.plan = adaptive_plan(bundle.num_train_timesteps, self.n_samples, self.to_keep, self.n_trials)
        self.num_slots = num_slots(self.plan)
        self.slot_t = torch.zeros(self.num_slots, dtype=torch.long)
        for stage in self.plan:
            for s, t in zip(stage.slots, stage.slot_timesteps):
                self.slot_t[s] = t
        self._labels = torch.tensor(self.classes, dtype=torch.long)
        self.progress = progress  # called with the number of rows done after each forward

    # -- public -------------------------------------------------------------------------------
    def classify(self, x0: torch.Tensor, image_key: int) -> ClassifyResult:
        """Classify one image ``x0`` of shape ``bundle.sample_shape``."""
        return self.classify_batch(x0.unsqueeze(0), [image_key])[0]

    @torch.inference_mode()
    def classify_batch(
        self, x0s: torch.Tensor | Sequence[torch.Tensor], image_keys: Sequence[int]
    ) -> list[ClassifyResult]:
        """Classify several images at once, packing all their evaluations into full batches."""
        if not isinstance(x0s, torch.Tensor):
            x0s = torch.stack(list(x0s))
        if x0s.dim() != 4 or len(image_keys) != x0s.shape[0]:
            raise ValueError(f"expected x0s of shape (G, C, H, W) and G image keys, got {tuple(x0s.shape)}")
        start = time.perf_counter()
        device, _ = _param_device_dtype(_denoiser_of(self.bundle))
        G, K = x0s.shape[0], len(self.classes)
        x0s = x0s.to(device=device, dtype=torch.float32)
        noise = torch.stack(
            [draw_noise(tuple(x0s.shape[1:]), self.num_slots, self.seed, k) for k in image_keys]
        )
        noise = noise.to(device)
        err = torch.full((G, K, self.num_slots), float("nan"), dtype=torch.float64)
        alive = [list(range(K)) for _ in range(G)]
        stage_classes: list[list[list[int]]] = [[] for _ in range(G)]
        failed: list[str | None] = [None] * G
        rows_per_image = [0] * G
        for stage in self.plan:
            img_idx, cls_idx, slot_idx = [], [], []
            for g in range(G):
                stage_classes[g].append(list(alive[g]))
                for c in alive[g]:
                    for s in stage.slots:
                        img_idx.append(g)
                        cls_idx.append(c)
                        slot_idx.append(s)
                rows_per_image[g] += len(alive[g]) * len(stage.slots)
            self._evaluate(x0s, noise, image_keys, img_idx, cls_idx, slot_idx, err)
            for g in range(G):
                if failed[g] is None and alive[g]:
                    failed[g] = _nonfinite_cause(err[g], self.slot_t)
                if failed[g] is not None:
                    alive[g] = []  # no more evaluations for an image that has no valid score
                    continue
                evaluated = ~torch.isnan(err[g])
                sums = torch.where(evaluated, err[g], torch.zeros_like(err[g])).sum(dim=1)
                means = (sums / evaluated.sum(dim=1).clamp(min=1)).tolist()
                alive[g] = sorted(_rank(alive[g], dict(enumerate(means)))[: stage.keep])
        seconds = time.perf_counter() - start
        total_rows = max(1, sum(rows_per_image))
        results = []
        for g in range(G):
            share = seconds * rows_per_image[g] / total_rows
            if failed[g] is not None:
                results.append(ClassifyResult(None, [], [], [], share, rows_per_image[g], error=failed[g]))
                continue
            winner = alive[g][0]
            results.append(_finish(err[g], self.plan, stage_classes[g], winner, share))
        return results

    # -- internals ----------------------------------------------------------------------------
    def _evaluate(
        self,
        x0s: torch.Tensor,
        noise: torch.Tensor,
        image_keys: Sequence[int],
        img_idx: list[int],
        cls_idx: list[int],
        slot_idx: list[int],
        err: torch.Tensor,
    ) -> None:
        """Score the (image, class, slot) rows in batches of `batch_size`; write errors into `err`."""
        n = len(img_idx)
        if n == 0:
            return
        denoiser = _denoiser_of(self.bundle)
        device, param_dtype = _param_device_dtype(denoiser)
        # everything indexed per row is built once per stage, on the device
        img_all = torch.tensor(img_idx, dtype=torch.long)
        cls_all = torch.tensor(cls_idx, dtype=torch.long)
        slot_all = torch.tensor(slot_idx, dtype=torch.long)
        t_all = self.slot_t[slot_all]
        sa_all, sb_all = _coefficients(self.bundle, t_all)
        key_table = torch.tensor(
            [[mix_keys(k, s) for s in range(self.num_slots)] for k in image_keys], dtype=torch.int64
        )
        keys_all = key_table[img_all, slot_all].to(device)
        img_d, slot_d, t_d = img_all.to(device), slot_all.to(device), t_all.to(device)
        labels_d = self._labels[cls_all].to(device)
        sa_d, sb_d = sa_all.to(device), sb_all.to(device)
        errors = []
        for lo in range(0, n, self.batch_size):
            sl = slice(lo, lo + self.batch_size)
            eps = noise[img_d[sl], slot_d[sl]]
            x0 = x0s[img_d[sl]]
            x_t = _noised(x0, eps, sa_d[sl], sb_d[sl])
            with (
                _sample_keys_context(self.bundle, keys_all[sl], self.pattern),
                _host_timesteps_context(self.bundle, t_all[sl]),
                autocast(device, self.dtype),
            ):
                pred = _predict(self.bundle, x_t.to(param_dtype), t_d[sl], labels_d[sl])
            errors.append(_row_errors(pred, _target(self.bundle, x0, eps), self.loss))
            if self.progress is not None:
                self.progress(int(eps.shape[0]))
        values = torch.cat(errors).double().cpu()  # one device sync per stage
        # NaN marks "not evaluated" in `err`: a NaN from the denoiser is stored as -inf instead
        err[img_all, cls_all, slot_all] = torch.nan_to_num(
            values, nan=-math.inf, posinf=math.inf, neginf=-math.inf
        )


# --------------------------------------------------------------------------------------------
# the plain reference loop
# --------------------------------------------------------------------------------------------
@torch.inference_mode()
def reference_classify(
    bundle: Any,
    x0: torch.Tensor,
    image_key: int,
    *,
    classes: Sequence[int] | None = None,
    n_samples: Sequence[int] = (5, 20),
    to_keep: Sequence[int] = (5, 1),
    loss: str = "l2",
    dtype: str | torch.dtype = "fp32",
    seed: int = 0,
    pattern: str = "per-sample",
    n_trials: int = 1,
) -> ClassifyResult:
    """The classification protocol written plainly: one class, one (t, ε), one forward at a time."""
    start = time.perf_counter()
    _check_loss(loss)
    _check_pattern(pattern)
    amp = resolve_dtype(dtype)
    classes = list(range(bundle.num_classes)) if classes is None else [int(c) for c in classes]
    plan = adaptive_plan(bundle.num_train_timesteps, tuple(n_samples), tuple(to_keep), n_trials)
    device, param_dtype = _param_device_dtype(_denoiser_of(bundle))
    x0 = x0.to(device=device, dtype=torch.float32)
    noise = draw_noise(tuple(x0.shape), num_slots(plan), seed, image_key).to(device)
    err = torch.full((len(classes), num_slots(plan)), float("nan"), dtype=torch.float64)
    alive = list(range(len(classes)))
    stage_classes = []
    for stage in plan:
        stage_classes.append(list(alive))
        for c in alive:
            for slot, t in zip(stage.slots, stage.slot_timesteps):
                tt = torch.tensor([t], dtype=torch.long)
                sa, sb = _coefficients(bundle, tt)
                eps = noise[slot : slot + 1]
                x_t = _noised(x0.unsqueeze(0), eps, sa, sb)
                keys = row_keys([image_key], [slot]).to(device)
                label = torch.tensor([classes[c]], dtype=torch.long, device=device)
                with (
                    _sample_keys_context(bundle, keys, pattern),
                    _host_timesteps_context(bundle, tt),
                    autocast(device, amp),
                ):
                    pred = _predict(bundle, x_t.to(param_dtype), tt.to(device), label)
                err[c, slot] = float(_row_errors(pred, _target(bundle, x0.unsqueeze(0), eps), loss)[0])
        means = {}
        for c in alive:
            vals = [v for v in err[c].tolist() if not math.isnan(v)]
            means[c] = sum(vals) / len(vals)
        alive = sorted(_rank(alive, means)[: stage.keep])
    return _finish(err, plan, stage_classes, alive[0], time.perf_counter() - start)
