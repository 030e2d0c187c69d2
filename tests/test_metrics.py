"""Tests of bigain.metrics: Fréchet distance, feature cache, Inception architecture, IS, CLIP score,
fashion CNN metrics, McNemar."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import stats as st
from torch import nn

from bigain.metrics import (
    FeatureStats,
    FIDInceptionV3,
    InceptionExtractor,
    accuracy_decision,
    classifier_accuracy,
    classifier_correct,
    clip_score,
    compute_fid,
    compute_inception_score,
    compute_stats,
    fashion_fid,
    fid_diff_bootstrap,
    fid_from_features,
    frechet_distance,
    generation_decision,
    holm,
    inception_score,
    iter_batches,
    load_fid_inception,
    mcnemar,
    paired_diff_interval,
)


# ------------------------------------------------------------------------------------------------
# Fréchet distance
# ------------------------------------------------------------------------------------------------
def _reference_fd(mu1, s1, mu2, s2):
    """The textbook formula with scipy's general matrix square root (pytorch-fid's approach)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _random_gaussian(rng, dim, n):
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim))
    return x.mean(0) + rng.normal(size=dim), np.atleast_2d(np.cov(x, rowvar=False))


@pytest.mark.parametrize("dim", [1, 5, 32])
def test_frechet_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    mu1, s1 = _random_gaussian(rng, dim, 4 * dim + 10)
    mu2, s2 = _random_gaussian(rng, dim, 4 * dim + 10)
    ours = frechet_distance(mu1, s1, mu2, s2)
    ref = _reference_fd(mu1, s1, mu2, s2)
    assert ours == pytest.approx(ref, rel=1e-7, abs=1e-8)
    # symmetric in its two arguments
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)


def test_frechet_closed_form_diagonal():
    a = np.array([1.0, 4.0, 0.25, 9.0])
    b = np.array([4.0, 1.0, 0.0, 9.0])  # one zero variance: a singular covariance
    mu1, mu2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, -1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_rank_deficient_identical_is_zero():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(10, 64))  # 10 samples in 64-d: covariance of rank 9
    s = FeatureStats.from_features(feats)
    fd = fid_from_features(s, s)
    assert np.isfinite(fd) and fd == pytest.approx(0.0, abs=1e-8)
    # and a rank-deficient pair stays finite, real and matches the real part of the scipy reference
    s2 = FeatureStats.from_features(rng.normal(size=(10, 64)) + 0.5)
    ours = fid_from_features(s, s2)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(_reference_fd(s.mean, s.cov, s2.mean, s2.cov), rel=1e-4)


def test_fid_from_features_identical_and_shifted():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(500, 8))
    assert fid_from_features(f, f) == pytest.approx(0.0, abs=1e-9)
    # shifting every feature by v leaves the covariance unchanged: FID = |v|^2 exactly
    v = np.arange(8) / 4.0
    assert fid_from_features(f, f + v) == pytest.approx(float(v @ v), rel=1e-9)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(3))


# ------------------------------------------------------------------------------------------------
# Statistics file and cache
# ------------------------------------------------------------------------------------------------
def test_feature_stats_save_load_roundtrip(tmp_path):
    s = FeatureStats.from_features(np.random.default_rng(2).normal(size=(50, 6)))
    path = s.save(tmp_path / "ref.npz", key="abc")
    t = FeatureStats.load(path)
    assert t.n == 50 and np.array_equal(t.mean, s.mean) and np.array_equal(t.cov, s.cov)
    assert FeatureStats.load_key(path) == "abc"


class CountingExtractor:
    """A deterministic extractor that records how many images it was asked to encode."""

    name = "counting-test-extractor"

    def __init__(self):
        self.calls = 0
        self.images = 0

    def __call__(self, x):
        self.calls += 1
        self.images += x.shape[0]
        return torch.cat([x.mean(dim=(1, 2, 3))[:, None], x.flatten(1)[:, :7]], dim=1)


def test_compute_stats_caches_and_reuses(tmp_path):
    images = torch.rand(37, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ext = CountingExtractor()
    s1 = compute_stats(ext, images, batch_size=10, cache_path=tmp_path, progress=False, data_id="toy-v1")
    assert ext.calls == 4 and ext.images == 37
    files = list(tmp_path.glob("stats-*.npz"))
    assert len(files) == 1
    s2 = compute_stats(ext, images, batch_size=10, cache_path=tmp_path, progress=False, data_id="toy-v1")
    assert ext.calls == 4, "second call must read the cache, not re-encode"
    assert np.array_equal(s1.mean, s2.mean) and np.array_equal(s1.cov, s2.cov) and s2.n == 37
    # another data identity is another cache entry, and the stats match an uncached computation
    compute_stats(ext, images[:20], batch_size=10, cache_path=tmp_path, progress=False, data_id="toy-v2")
    assert ext.calls == 6 and len(list(tmp_path.glob("stats-*.npz"))) == 2
    direct = compute_stats(CountingExtractor(), images, batch_size=16, progress=False)
    assert np.allclose(direct.mean, s1.mean) and np.allclose(direct.cov, s1.cov)


def test_compute_stats_file_path_with_stale_key_is_recomputed(tmp_path):
    images = torch.rand(12, 1, 4, 4) * 2 - 1
    ext = CountingExtractor()
    path = tmp_path / "ref.npz"
    compute_stats(ext, images, cache_path=path, progress=False, data_id="a")
    compute_stats(ext, images, cache_path=path, progress=False, data_id="a")
    assert ext.calls == 1
    compute_stats(ext, images, cache_path=path, progress=False, data_id="b")  # different key: recompute
    assert ext.calls == 2
    with pytest.raises(ValueError, match="data_id"):
        compute_stats(ext, images, cache_path=path, progress=False)


def test_compute_fid_accepts_images_or_cached_stats(tmp_path):
    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(40, 1, 4, 4, generator=g) * 2 - 1, torch.rand(30, 1, 4, 4, generator=g) * 2 - 1
    ext = CountingExtractor()
    fid = compute_fid(ext, a, b, batch_size=16, progress=False)
    ref = compute_stats(ext, b, cache_path=tmp_path, data_id="b", progress=False)
    assert compute_fid(ext, a, ref, progress=False) == pytest.approx(fid, rel=1e-10)
    assert fid == pytest.approx(fid_from_features(ext(a).double(), ext(b).double()), rel=1e-10)
    assert compute_fid(ext, [a[:5], a[5:]], a, progress=False) == pytest.approx(0.0, abs=1e-9)


def test_iter_batches_rebatches_iterables():
    items = [torch.zeros(3, 1, 2, 2), torch.zeros(1, 2, 2), torch.zeros(5, 1, 2, 2)]  # 3 + 1 + 5 = 9
    sizes = [b.shape[0] for b in iter_batches(items, 4)]
    assert sizes == [4, 4, 1]
    assert [b.shape[0] for b in iter_batches(torch.zeros(9, 1, 2, 2), 4)] == [4, 4, 1]


# ------------------------------------------------------------------------------------------------
# FID Inception architecture (random weights: the real file is not available offline)
# ------------------------------------------------------------------------------------------------
def _expected_inception_keys() -> set[str]:
    """State-dict keys of pytorch-fid's FID Inception checkpoint, written out from its layout."""
    a = [
        "branch1x1",
        "branch5x5_1",
        "branch5x5_2",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3",
        "branch_pool",
    ]
    b = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
    c = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"] + [
        f"branch7x7dbl_{i}" for i in range(1, 6)
    ]
    c += ["branch_pool"]
    d = ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)]
    e = [
        "branch1x1",
        "branch3x3_1",
        "branch3x3_2a",
        "branch3x3_2b",
        "branch3x3dbl_1",
        "branch3x3dbl_2",
        "branch3x3dbl_3a",
        "branch3x3dbl_3b",
        "branch_pool",
    ]
    convs = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
    layout = {
        "5b": a,
        "5c": a,
        "5d": a,
        "6a": b,
        "6b": c,
        "6c": c,
        "6d": c,
        "6e": c,
        "7a": d,
        "7b": e,
        "7c": e,
    }
    convs += [f"Mixed_{blk}.{br}" for blk, branches in layout.items() for br in branches]
    keys = {"fc.weight", "fc.bias"}
    for m in convs:
        keys.add(f"{m}.conv.weight")
        keys.update(
            f"{m}.bn.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
        )
    return keys


def test_fid_inception_keys_and_size_match_pytorch_fid_checkpoint():
    model = FIDInceptionV3()
    sd = model.state_dict()
    assert set(sd) == _expected_inception_keys()
    assert tuple(sd["fc.weight"].shape) == (1008, 2048)
    assert tuple(sd["Conv2d_1a_3x3.conv.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["Mixed_7c.branch_pool.conv.weight"].shape) == (192, 2048, 1, 1)
    # torchvision Inception-v3 without aux head, 1008 classes: 23,850,960 parameters (~91 MiB fp32)
    assert sum(p.numel() for p in model.parameters()) == 23_850_960


def test_fid_inception_strict_load_roundtrip_and_shapes(tmp_path):
    torch.manual_seed(0)
    src = FIDInceptionV3()
    for m in src.modules():  # non-trivial BN statistics so that a wrong mapping would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = src.state_dict()
    # saved without the BatchNorm counters, as in checkpoints from old torch versions: still loads
    path = tmp_path / "pt_inception-2015-12-05-test.pth"
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, path)
    loaded = load_fid_inception(path)
    assert not loaded.training
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k

    # every key must be consumed: an extra key (e.g. torchvision's AuxLogits) fails strict loading
    bad = dict(sd)
    bad["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="AuxLogits"):
        load_fid_inception(tmp_path / "bad.pth")


def test_fid_inception_pools_follow_tensorflow():
    from bigain.metrics.inception import _BlockE, _tf_avg_pool

    # TF's SAME average pool ignores padding: a constant map stays constant up to the borders
    assert torch.allclose(_tf_avg_pool(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))
    # Mixed_7c pools with max, Mixed_7b with the TF average: identical inputs, different outputs
    torch.manual_seed(0)
    e1, e2 = _BlockE(8, max_pool=False).eval(), _BlockE(8, max_pool=True).eval()
    e2.load_state_dict(e1.state_dict())
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        y1, y2 = e1(x), e2(x)
    assert y1.shape == (1, 2048, 5, 5)
    assert torch.equal(y1[:, :-192], y2[:, :-192]) and not torch.allclose(y1[:, -192:], y2[:, -192:])
    with torch.no_grad():
        pooled = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
        assert torch.allclose(y2[:, -192:], e2.branch_pool(pooled))


def test_inception_extractor_preprocessing_and_shapes():
    torch.manual_seed(0)
    model = FIDInceptionV3()
    for m in model.modules():  # He init keeps random activations O(1) (no denormal slow paths)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    ext = InceptionExtractor(model)
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    # pytorch-fid resizes [0, 1] images bilinearly to 299 and then maps to [-1, 1]: same thing
    prep = ext._prepare(x)
    ref = 2 * torch.nn.functional.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear") - 1
    assert prep.shape == (2, 3, 299, 299) and torch.allclose(prep, ref, atol=1e-6)
    assert torch.equal(ext._prepare(x[:, :1]), ext._prepare(x[:, :1].expand(-1, 3, -1, -1)))  # gray -> RGB
    with pytest.raises(ValueError, match="channels"):
        ext._prepare(torch.zeros(1, 2, 8, 8))

    feats, logits = ext.features_and_logits(x[:1])  # one full 299x299 forward (CPU cost ~1 s)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)
    assert torch.isfinite(feats).all() and torch.isfinite(logits).all() and feats.abs().mean() > 1e-3
    assert torch.allclose(logits, model.fc(feats), atol=1e-5)  # logits are fc(pool3)
    # the network is fully convolutional up to pool3: a small batch at 75 px checks batching cheaply
    with torch.no_grad():
        f2, l2 = model(torch.rand(2, 3, 75, 75))
    assert f2.shape == (2, 2048) and l2.shape == (2, 1008)


# ------------------------------------------------------------------------------------------------
# Inception Score
# ------------------------------------------------------------------------------------------------
def test_inception_score_uniform_is_one():
    mean, std = inception_score(np.zeros((100, 1008)), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_inception_score_one_hot_diverse_is_num_classes():
    k = 10
    logits = np.full((200, k), -1e4)
    logits[np.arange(200), np.arange(200) % k] = 1e4  # every split holds every class equally often
    mean, std = inception_score(torch.tensor(logits), splits=10)
    assert mean == pytest.approx(k, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    # all images confidently the same class: no diversity, IS = 1
    same = np.full((50, k), -1e4)
    same[:, 3] = 1e4
    assert inception_score(same, splits=5)[0] == pytest.approx(1.0, abs=1e-9)


def test_compute_inception_score_collects_logits_over_batches():
    class FakeInception:
        def features_and_logits(self, x):
            cls = ((x[:, 0, 0, 0] + 1) * 2).round().long()  # pixel value encodes one of 5 classes
            return torch.zeros(x.shape[0], 2048), 50.0 * torch.nn.functional.one_hot(cls, 1008).float()

    x = torch.zeros(20, 3, 4, 4)
    x[:, 0, 0, 0] = torch.arange(20) % 5 / 2.0 - 1.0
    mean, _ = compute_inception_score(FakeInception(), x, splits=2, batch_size=6, progress=False)
    assert mean == pytest.approx(5.0, rel=1e-3)  # nearly one-hot over 5 of 1008 classes


# ------------------------------------------------------------------------------------------------
# CLIP score with a tiny random CLIP and an offline tokenizer
# ------------------------------------------------------------------------------------------------
def _tiny_clip():
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {ch: i for i, ch in enumerate(chars)}
    vocab.update({ch + "</w>": len(chars) + i for i, ch in enumerate(chars)})
    merges = [("a", "t</w>"), ("c", "at</w>"), ("o", "g</w>"), ("d", "og</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=merges)
    eos, bos = vocab["<|endoftext|>"], vocab["<|startoftext|>"]
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 24,
        "eos_token_id": eos,
        "bos_token_id": bos,
        "pad_token_id": eos,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()
    return model, tok


def test_clip_score_tiny_model_runs_and_is_deterministic(tmp_path):
    model, tok = _tiny_clip()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 40, 48, generator=g) * 2 - 1
    prompts = ["a photo of a cat", "a dog", "cat", "dog at night", "a cat and a dog"]
    s1 = clip_score(images, prompts, model, tok, batch_size=2, progress=False)
    s2 = clip_score(images, prompts, model, tok, batch_size=5, progress=False)
    assert np.isfinite(s1) and 0.0 <= s1 <= 100.0
    assert s1 == pytest.approx(s2, rel=1e-5, abs=1e-5)  # independent of batching
    assert clip_score(images, prompts, model, tok, batch_size=2, progress=False) == s1  # repeatable
    per = clip_score(images, prompts, model, tok, reduction="none", progress=False)
    assert per.shape == (5,) and per.mean() == pytest.approx(s1, rel=1e-5, abs=1e-5)

    # matches a direct computation of 100 * max(cos, 0) on the same preprocessed inputs
    from bigain.metrics.clip import _CLIP_MEAN, _CLIP_STD, _embeds, _preprocess

    enc = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = _embeds(model.get_image_features(pixel_values=_preprocess(images, 32, _CLIP_MEAN, _CLIP_STD)))
        txt = _embeds(model.get_text_features(**enc))
    direct = 100 * torch.nn.functional.cosine_similarity(img, txt).clamp(min=0)
    assert np.allclose(per, direct.numpy(), atol=1e-4)

    # pre-tokenized input ids give the same result
    s3 = clip_score(images, enc["input_ids"], model, attention_mask=enc["attention_mask"], progress=False)
    assert s3 == pytest.approx(s1, rel=1e-5, abs=1e-5)

    # a local folder works too, offline
    model.save_pretrained(tmp_path / "clip")
    tok.save_pretrained(tmp_path / "clip")
    s4 = clip_score(images, prompts, str(tmp_path / "clip"), progress=False)
    assert s4 == pytest.approx(s1, rel=1e-4, abs=1e-4)

    with pytest.raises(ValueError, match="prompts"):
        clip_score(images, prompts[:3], model, tok, progress=False)


# ------------------------------------------------------------------------------------------------
# Fashion-domain metrics with any CNN exposing .features and __call__
# ------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(64, num_classes)

    def features(self, x):
        assert x.shape[1:] == (1, 32, 32)
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def test_fashion_fid_with_tiny_cnn():
    torch.manual_seed(0)
    cnn = TinyCNN()
    g = torch.Generator().manual_seed(1)
    real = torch.rand(64, 1, 32, 32, generator=g) * 2 - 1
    assert fashion_fid(real, real, cnn, batch_size=16, progress=False) == pytest.approx(0.0, abs=1e-6)
    other = (torch.rand(64, 1, 32, 32, generator=g) * 2 - 1).clamp(-1, 0)  # darker images
    fid = fashion_fid(other, real, cnn, batch_size=16, progress=False)
    assert fid > 1e-4
    # agrees with FID on explicitly computed features, and accepts precomputed reference stats
    with torch.no_grad():
        ref = FeatureStats.from_features(cnn.features(real).double())
        expected = fid_from_features(cnn.features(other).double(), ref)
    assert fid == pytest.approx(expected, rel=1e-5)
    assert fashion_fid(other, ref, cnn, progress=False) == pytest.approx(fid, rel=1e-5)
    # image_size resizes other resolutions to what the CNN expects
    up = torch.nn.functional.interpolate(real, size=(64, 64), mode="nearest")
    assert np.isfinite(fashion_fid(up, real, cnn, image_size=32, progress=False))


def test_classifier_accuracy_with_tiny_cnn():
    torch.manual_seed(0)
    cnn = TinyCNN()
    x = torch.rand(30, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        pred = cnn(x).argmax(-1).numpy()
    labels = pred.copy()
    labels[:7] = (labels[:7] + 1) % 10  # 7 wrong out of 30
    correct = classifier_correct(x, labels, cnn, batch_size=8)
    assert correct.dtype == bool and correct.sum() == 23 and not correct[:7].any()
    assert classifier_accuracy(x, labels, cnn, batch_size=8) == pytest.approx(23 / 30)
    with pytest.raises(ValueError, match="labels"):
        classifier_accuracy(x, labels[:10], cnn)
    with pytest.raises(TypeError, match="features"):
        classifier_accuracy(x, labels, nn.Linear(3, 3))


# ------------------------------------------------------------------------------------------------
# McNemar
# ------------------------------------------------------------------------------------------------
def _pairs(n11, b, c, n00):
    a = np.array([1] * n11 + [1] * b + [0] * c + [0] * n00, dtype=bool)
    bb = np.array([1] * n11 + [0] * b + [1] * c + [0] * n00, dtype=bool)
    return a, bb


@pytest.mark.parametrize("b,c", [(0, 5), (3, 9), (7, 7), (1, 0), (12, 2)])
def test_mcnemar_exact_matches_binomtest(b, c):
    res = mcnemar(*_pairs(40, b, c, 11))
    assert (res["b"], res["c"], res["n"], res["n_discordant"]) == (b, c, 51 + b + c, b + c)
    assert res["method"] == "exact"
    expected = st.binomtest(b, b + c, 0.5).pvalue
    assert res["p_value"] == pytest.approx(expected, rel=1e-10)
    assert res["p_exact"] == pytest.approx(expected, rel=1e-10)


def test_mcnemar_exact_by_default_for_large_counts():
    # the reported p is the exact binomial one however many discordant pairs there are
    res = mcnemar(*_pairs(100, 367, 187, 20))
    assert res["method"] == "exact"
    assert res["p_value"] == pytest.approx(st.binomtest(187, 554, 0.5).pvalue, rel=1e-9)
    assert abs(res["p_value"] - res["p_chi2"]) > 0.3 * res["p_chi2"]  # 1.7e-14 vs 2.8e-14


def test_mcnemar_chi2_large_counts():
    b, c = 30, 55
    res = mcnemar(*_pairs(100, b, c, 20), exact_threshold=25)
    assert res["method"] == "chi2"
    stat = (abs(b - c) - 1) ** 2 / (b + c)  # 576 / 85
    assert res["statistic"] == pytest.approx(576 / 85) and res["chi2"] == pytest.approx(stat)
    assert res["p_value"] == pytest.approx(st.chi2.sf(576 / 85, 1), rel=1e-10)
    assert res["p_exact"] == pytest.approx(st.binomtest(b, b + c, 0.5).pvalue, rel=1e-10)
    assert 0.005 < res["p_value"] < 0.02  # chi2(1) = 6.78 -> p ~ 0.0092


def test_mcnemar_edge_cases():
    res = mcnemar([True, False, True], [True, False, True])
    assert res["n_discordant"] == 0 and res["p_value"] == 1.0 and res["p_chi2"] == 1.0
    with pytest.raises(ValueError, match="same length"):
        mcnemar([True], [True, False])


# ------------------------------------------------------------------------------------------------
# Holm, bootstrap intervals, the pre-registered decision rule
# ------------------------------------------------------------------------------------------------
def _holm_reference(p):
    """Holm written out: walk the sorted p-values, multiply by the number of hypotheses left."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        out[i] = running
    return out


def test_holm_by_hand_and_reference():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    rng = np.random.default_rng(0)
    for m in (1, 2, 6, 12):
        p = rng.uniform(0, 0.2, size=m).tolist()
        got = holm(p)
        assert got == pytest.approx(_holm_reference(p))
        assert all(g >= q for g, q in zip(got, p))
    with pytest.raises(ValueError, match="p_values"):
        holm([0.1, 1.5])


def test_paired_diff_interval_matches_item_bootstrap():
    a, b = _pairs(120, 30, 10, 40)  # n = 200, A right on 150, B right on 130
    diff, lo, hi = paired_diff_interval(a, b, n_boot=20_000, seed=1)
    assert diff == pytest.approx(0.10)
    rng = np.random.default_rng(2)  # the slow way: resample the items themselves
    idx = rng.integers(0, a.size, size=(20_000, a.size))
    ref = a[idx].mean(1) - b[idx].mean(1)
    ref_lo, ref_hi = np.quantile(ref, [0.025, 0.975])
    assert lo == pytest.approx(ref_lo, abs=0.006) and hi == pytest.approx(ref_hi, abs=0.006)
    assert lo < diff < hi and lo > 0.0
    # no discordant items: a zero-width interval at 0
    assert paired_diff_interval(a, a) == (0.0, 0.0, 0.0)


def test_fid_diff_bootstrap():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(500, 4))
    ref_stats = FeatureStats.from_features(ref)
    seeds_b = [rng.normal(size=(300, 4)) for _ in range(3)]
    seeds_a = [f + np.array([0.5, 0, 0, 0]) for f in seeds_b]  # A: the same samples, shifted
    res = fid_diff_bootstrap(seeds_a, seeds_b, ref_stats.mean, ref_stats.cov, n_boot=200)
    for f, got in zip(seeds_a, res["fid_a"]):
        s = FeatureStats.from_features(f)
        assert got == pytest.approx(frechet_distance(s.mean, s.cov, ref_stats.mean, ref_stats.cov))
    assert res["delta"] == pytest.approx(res["mean_a"] - res["mean_b"])
    assert 0.0 < res["low"] < res["delta"] < res["high"]
    same = fid_diff_bootstrap(seeds_b, seeds_b, ref_stats.mean, ref_stats.cov, n_boot=20)
    assert same["delta"] == 0.0 and same["low"] == same["high"] == 0.0
    with pytest.raises(ValueError, match="seeds"):
        fid_diff_bootstrap(seeds_a, seeds_b[:2], ref_stats.mean, ref_stats.cov)


def test_weighted_stats_equal_repeated_rows():
    from bigain.metrics.stats import _weighted_stats

    rng = np.random.default_rng(3)
    f = rng.normal(size=(20, 3))
    w = rng.integers(0, 4, size=20)
    mu, cov = _weighted_stats(f, w.astype(float))
    s = FeatureStats.from_features(np.repeat(f, w, axis=0))
    assert np.allclose(mu, s.mean) and np.allclose(cov, s.cov)


@pytest.mark.parametrize(
    "diff,high,p,headroom,want",
    [
        (0.05, 0.08, 0.001, 0.2, "holds"),
        (-0.09, -0.06, 1e-10, 0.2, "does not hold"),  # a significant loss
        (0.002, 0.008, 0.6, 0.2, "does not hold"),  # a gain of a point or more ruled out
        (0.01, 0.03, 0.3, 0.2, "cannot tell"),
        (0.0, 0.002, 1.0, 0.0005, "cannot tell (no headroom)"),
    ],
)
def test_accuracy_decision(diff, high, p, headroom, want):
    assert accuracy_decision(diff, high, p, headroom) == want


def test_generation_decision():
    assert generation_decision(-2.0, 0.5, baseline_fid=10.0) == "holds"  # margin 1.0
    assert generation_decision(1.5, 4.0, baseline_fid=10.0) == "does not hold"
    assert generation_decision(-1.0, 3.0, baseline_fid=10.0) == "cannot tell"
