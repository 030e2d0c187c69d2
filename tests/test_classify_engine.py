"""Diffusion-classifier engine: adaptive schedule, batched == reference, invariances."""

from __future__ import annotations

import math

import pytest
import torch

import bigain
from bigain.classify import (
    DiffusionClassifier,
    adaptive_plan,
    average_precision,
    calls_per_image,
    recall_at_k,
    reference_classify,
    stage_timesteps,
    timestep_grid,
)
from bigain.classify.engine import draw_noise, mix_keys, row_keys
from bigain.classify.testing import CountingBundle, linear_alphas_cumprod, tiny_dit_bundle, tiny_unet_bundle
from bigain.models.bundle import DiffusionBundle

FAST = {"n_samples": (2, 4), "to_keep": (3, 1)}


# tiny forwards are dominated by thread synchronisation on a busy machine: one thread
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dit():
    return tiny_dit_bundle(num_classes=6, size=16, seed=0)


# --------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------
def test_timestep_lists_match_spec():
    assert timestep_grid(1000, 20) == list(range(25, 1000, 50))
    s1, s2 = stage_timesteps(1000, (5, 20))
    assert s1 == [125, 325, 525, 725, 925]
    assert s2 == [25, 75, 175, 225, 275, 375, 425, 475, 575, 625, 675, 775, 825, 875, 975]
    plan = adaptive_plan(1000, (5, 20), (5, 1))
    assert [st.slots for st in plan] == [tuple(range(5)), tuple(range(5, 20))]  # noise j = j-th timestep
    assert [st.keep for st in plan] == [5, 1]


@pytest.mark.parametrize("classes,expected", [(37, 260), (100, 575), (80, 475), (1000, 5075)])
def test_denoiser_rows_per_image_match_spec(classes, expected):
    plan = adaptive_plan(1000, (5, 20), (5, 1))
    assert calls_per_image(classes, plan) == expected
    bundle = CountingBundle(classes)
    res = DiffusionClassifier(bundle, batch_size=256).classify(torch.randn(1, 2, 2), image_key=3)
    stub = bundle.denoiser
    assert stub.rows == expected == res.calls
    # every row's timestep: all classes at the 5 stage-1 timesteps, 5 survivors at the other 15
    counts = {t: stub.timesteps.count(t) for t in set(stub.timesteps)}
    assert counts == {
        **{t: classes for t in (125, 325, 525, 725, 925)},
        **{t: 5 for t in stage_timesteps(1000, (5, 20))[1]},
    }
    assert [len(s.classes) for s in res.stages] == [classes, 5]
    # one forward per full batch of 256 rows across classes, per stage
    assert stub.calls == math.ceil(classes * 5 / 256) + math.ceil(5 * 15 / 256)


def test_schedule_validation():
    with pytest.raises(ValueError, match="to_keep"):
        adaptive_plan(1000, (5, 20), (5, 2))
    with pytest.raises(ValueError, match="n_samples"):
        adaptive_plan(1000, (20, 5), (5, 1))
    with pytest.raises(ValueError, match="loss"):
        DiffusionClassifier(CountingBundle(3), loss="l3")
    with pytest.raises(ValueError, match="pattern"):
        DiffusionClassifier(CountingBundle(3), pattern="random")
    with pytest.raises(ValueError, match="dtype"):
        DiffusionClassifier(CountingBundle(3), dtype="int8")


# --------------------------------------------------------------------------------------------
# adaptive pruning on an oracle whose per-(class, t) error is known
# --------------------------------------------------------------------------------------------
class _Oracle(torch.nn.Module):
    """With x0 = 0, ε = x_t / sqrt(1 - ᾱ_t); return ε + d(c, t) so the l2 error is d(c, t)²."""

    def __init__(self, delta):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.delta = delta
        self.ac = linear_alphas_cumprod()

    def forward(self, x, timestep, class_labels, return_dict=False):
        sb = (1 - self.ac[timestep]).sqrt().float().view(-1, 1, 1, 1)
        d = torch.tensor([self.delta(int(c), int(t)) for c, t in zip(class_labels, timestep)]).view(
            -1, 1, 1, 1
        )
        return (x / sb + d,)


def _oracle_bundle(num_classes, delta):
    return DiffusionBundle(
        "oracle",
        _Oracle(delta),
        "stub",
        linear_alphas_cumprod(),
        num_classes,
        [str(i) for i in range(num_classes)],
        (1, 2, 2),
        lambda y: {"class_labels": y},
    )


def test_adaptive_keeps_the_right_classes():
    s1 = set(stage_timesteps(1000, (5, 20))[0])
    # stage-1 error ranks classes 0 < 1 < ... < 7; at stage 2 class 4 is best by far, class 0 worst
    stage1 = {c: 0.1 * (c + 1) for c in range(8)}
    stage2 = {0: 3.0, 1: 1.1, 2: 0.9, 3: 0.85, 4: 0.05, 5: 0.0, 6: 0.0, 7: 0.0}

    def delta(c, t):
        return math.sqrt(stage1[c] if t in s1 else stage2[c])

    res = DiffusionClassifier(_oracle_bundle(8, delta), batch_size=7).classify(torch.zeros(1, 2, 2), 11)
    assert res.stages[0].classes == list(range(8))
    assert res.stages[1].classes == [0, 1, 2, 3, 4]  # 5, 6, 7 pruned despite perfect stage-2 scores
    assert res.prediction == 4
    # mean over all 20 timesteps for survivors, over 5 for the pruned ones
    expect = {c: (5 * stage1[c] + 15 * stage2[c]) / 20 if c < 5 else stage1[c] for c in range(8)}
    for c in range(8):
        assert res.mean_errors[c] == pytest.approx(expect[c], rel=1e-5)
    # ranking: winner first, then ascending mean over what each class received
    rest = sorted((c for c in range(8) if c != 4), key=lambda c: expect[c])
    assert res.ranking == [4] + rest
    ref = reference_classify(_oracle_bundle(8, delta), torch.zeros(1, 2, 2), 11)
    assert ref.prediction == 4 and ref.ranking == res.ranking


# --------------------------------------------------------------------------------------------
# batched engine == plain reference loop
# --------------------------------------------------------------------------------------------
def _close(a, b, tol=1e-5):
    return all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b))


@pytest.mark.parametrize("maker", ["dit", "unet"])
def test_batched_equals_reference(maker, dit):
    bundle = dit if maker == "dit" else tiny_unet_bundle(num_classes=5, size=8, seed=1)
    x0 = torch.randn(bundle.sample_shape, generator=torch.Generator().manual_seed(5))
    ref = reference_classify(bundle, x0, 42, **FAST)
    res = DiffusionClassifier(bundle, batch_size=5, **FAST).classify(x0, 42)
    assert res.prediction == ref.prediction
    assert res.ranking == ref.ranking
    assert res.calls == ref.calls == calls_per_image(bundle.num_classes, adaptive_plan(1000, (2, 4), (3, 1)))
    for a, b in zip(res.stages, ref.stages):
        assert a.classes == b.classes and a.timesteps == b.timesteps
        for ra, rb in zip(a.errors, b.errors):
            assert _close(ra, rb)


def test_several_images_packed_equal_one_at_a_time(dit):
    x0 = torch.randn(3, *dit.sample_shape, generator=torch.Generator().manual_seed(1))
    keys = [7, 8, 9]
    clf = DiffusionClassifier(dit, batch_size=16, **FAST)
    many = clf.classify_batch(x0, keys)
    for i in range(3):
        one = clf.classify(x0[i], keys[i])
        assert one.prediction == many[i].prediction
        assert _close(one.mean_errors, many[i].mean_errors)


def test_same_seed_same_results_and_noise(dit):
    x0 = torch.randn(dit.sample_shape, generator=torch.Generator().manual_seed(2))
    a = DiffusionClassifier(dit, batch_size=8, seed=3, **FAST).classify(x0, 5)
    b = DiffusionClassifier(dit, batch_size=8, seed=3, **FAST).classify(x0, 5)
    c = DiffusionClassifier(dit, batch_size=8, seed=4, **FAST).classify(x0, 5)
    assert a.mean_errors == b.mean_errors
    assert a.mean_errors != c.mean_errors
    assert torch.equal(draw_noise((1, 4, 4), 3, 0, 9), draw_noise((1, 4, 4), 3, 0, 9))
    assert not torch.equal(draw_noise((1, 4, 4), 3, 0, 9), draw_noise((1, 4, 4), 3, 0, 10))
    assert mix_keys(1, 2) != mix_keys(2, 1)
    keys = row_keys([5, 5, 6], [0, 1, 0])
    assert keys.dtype == torch.int64 and len(set(keys.tolist())) == 3


@pytest.mark.parametrize("loss", ["l1", "huber"])
def test_other_losses(loss, dit):
    x0 = torch.randn(dit.sample_shape, generator=torch.Generator().manual_seed(3))
    ref = reference_classify(dit, x0, 1, loss=loss, **FAST)
    res = DiffusionClassifier(dit, batch_size=64, loss=loss, **FAST).classify(x0, 1)
    assert res.prediction == ref.prediction and _close(res.mean_errors, ref.mean_errors)


def test_bf16_autocast_runs(dit):
    x0 = torch.randn(dit.sample_shape, generator=torch.Generator().manual_seed(3))
    fp32 = DiffusionClassifier(dit, batch_size=64, **FAST).classify(x0, 1)
    bf16 = DiffusionClassifier(dit, batch_size=64, dtype="bf16", **FAST).classify(x0, 1)
    assert all(abs(a - b) < 0.05 * abs(a) + 1e-3 for a, b in zip(fp32.mean_errors, bf16.mean_errors))


# --------------------------------------------------------------------------------------------
# with compression: batch size, composition and class order change nothing (per-sample keys)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,opts", [("tome", {"ratio": 0.5}), ("sito", {"ratio": 0.5})])
def test_compressed_results_independent_of_batching(method, opts, dit):
    x0 = torch.randn(2, *dit.sample_shape, generator=torch.Generator().manual_seed(4))
    perm = [3, 0, 5, 1, 4, 2]
    with bigain.compressed(dit, method, **opts):
        base = DiffusionClassifier(dit, batch_size=64, **FAST).classify_batch(x0, [1, 2])
        small = DiffusionClassifier(dit, batch_size=5, **FAST).classify_batch(x0, [1, 2])
        alone = DiffusionClassifier(dit, batch_size=3, **FAST).classify(x0[1], 2)
        permuted = DiffusionClassifier(dit, batch_size=7, classes=perm, **FAST).classify_batch(x0, [1, 2])
        ref = reference_classify(dit, x0[0], 1, **FAST)
        per_call = DiffusionClassifier(dit, batch_size=5, pattern="per-call", **FAST).classify_batch(
            x0, [1, 2]
        )
    uncompressed = DiffusionClassifier(dit, batch_size=64, **FAST).classify_batch(x0, [1, 2])
    for g in range(2):
        assert small[g].prediction == base[g].prediction and _close(small[g].mean_errors, base[g].mean_errors)
        assert permuted[g].prediction == perm.index(base[g].prediction)
        assert _close([permuted[g].mean_errors[perm.index(c)] for c in range(6)], base[g].mean_errors)
    assert alone.prediction == base[1].prediction and _close(alone.mean_errors, base[1].mean_errors)
    assert ref.prediction == base[0].prediction and _close(ref.mean_errors, base[0].mean_errors)
    # the compression is really on, and the per-call reference pattern differs from the keyed one
    assert not _close(uncompressed[0].mean_errors, base[0].mean_errors, tol=1e-4)
    assert not _close(per_call[0].mean_errors, base[0].mean_errors, tol=1e-6)


# --------------------------------------------------------------------------------------------
# multi-label metrics
# --------------------------------------------------------------------------------------------
def test_average_precision_and_recall():
    assert average_precision([3, 1, 2, 0], [3]) == 1.0
    assert average_precision([0, 3, 1, 2], [3, 2]) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert average_precision([0, 1], []) == 0.0
    assert recall_at_k([0, 1, 2, 3, 4, 5], [5, 1], 5) == 0.5
    assert recall_at_k([0, 1], [], 5) == 0.0
