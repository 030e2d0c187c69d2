"""Model registry, folder round trips, the training recipe, and the shipped Fashion-MNIST models."""

from __future__ import annotations

import json

import pytest
import torch

from bigain import models
from bigain.models import fashion, train

torch.set_grad_enabled(True)


def _eps(bundle, n=2, size=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, h, w = bundle.sample_shape
    if size is not None:
        h = w = size
    x = torch.randn(n, c, h, w, generator=g)
    t = torch.tensor([10, 900][:n])
    labels = torch.tensor([3, bundle.null_class][:n])
    with torch.no_grad():
        return x, t, labels, bundle.predict_eps(x, t, labels)


@pytest.mark.parametrize("name", ["fashion-dit", "fashion-unet"])
def test_folder_round_trip(tmp_path, name):
    torch.manual_seed(0)
    mods = fashion.build(name, tiny=True)
    for m in mods.values():
        m.eval()
    models.save_folder(tmp_path, mods, {"class_names": [f"c{i}" for i in range(10)]}, dtype=torch.float32)
    assert (tmp_path / "config.json").is_file() and (
        tmp_path / "diffusion_pytorch_model.safetensors"
    ).is_file()
    b = models.load(tmp_path)
    assert b.kind == ("dit" if name == "fashion-dit" else "unet")
    assert b.num_classes == 10 and b.null_class == 10 and b.class_names[4] == "c4" and not b.learned_sigma
    assert b.sample_shape == (1, 32, 32) and b.num_train_timesteps == 1000
    assert b.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4)
    x, t, labels, got = _eps(b, size=16 if name == "fashion-unet" else None)
    with torch.no_grad():
        if name == "fashion-dit":
            want = mods["denoiser"](x, timestep=t, class_labels=labels, return_dict=False)[0]
        else:
            want = mods["denoiser"](
                x, timestep=t, encoder_hidden_states=mods["class_embedding"](labels), return_dict=False
            )[0]
    assert got.shape == x.shape
    torch.testing.assert_close(got, want)
    if name != "fashion-dit":
        return
    # fp16 storage is upcast on load and stays close
    models.save_folder(tmp_path / "h", mods, dtype=torch.float16)
    bh = models.load(tmp_path / "h")
    assert next(bh.denoiser.parameters()).dtype == torch.float32
    assert (_eps(bh, size=16 if name == "fashion-unet" else None)[3] - got).abs().max() < 0.05


def test_classifier_round_trip(tmp_path):
    torch.manual_seed(0)
    clf = fashion.build("fashion-cnn", tiny=True)["classifier"].eval()
    models.save_folder(tmp_path, {"classifier": clf}, dtype=torch.float32)
    got = models.load_classifier(tmp_path)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(got(x), clf(x))
        assert got.features(x).shape == (3, clf.feature_dim)


def test_bad_names():
    with pytest.raises(ValueError, match="unknown builtin"):
        models.load("builtin:nope")
    with pytest.raises(FileNotFoundError):
        models.load("./no/such/folder")


def test_tiny_training_decreases_loss_saves_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = [
        "--model",
        "fashion-dit",
        "--out",
        str(out),
        "--tiny",
        "--split",
        "test",
        "--limit",
        "32",
        "--batch-size",
        "4",
        "--lr",
        "3e-3",
        "--warmup",
        "1",
        "--log-every",
        "4",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--seed",
        "1",
    ]
    args = train.parse_args(common + ["--steps", "16"])
    summary = train.train(args)
    curve = [v for _, v in summary["loss_curve"]]
    assert len(curve) == 4 and summary["steps_done"] == 16
    assert curve[-1] < 0.8 * curve[0], curve
    cfg = json.loads((out / "train_config.json").read_text())
    assert cfg["steps_done"] == 16 and cfg["schedule"]["beta_end"] == 0.02
    b = models.load(out)
    assert _eps(b)[3].shape == (2, 1, 32, 32)
    # resume continues from the checkpoint, through main(argv)
    assert train.main(common + ["--steps", "20", "--resume"]) == 0
    ck = train.load_checkpoint(train.latest_checkpoint(out))
    assert ck["step"] == 20 and len(ck["losses"]) == 5
    # a time budget of zero stops at once and still writes the weights
    summary = train.train(train.parse_args(common + ["--steps", "100", "--resume", "--max-minutes", "0"]))
    assert summary["steps_done"] == 20 and summary["stopped_by"] == "max_minutes"


def test_tiny_cnn_training(tmp_path):
    args = train.parse_args(
        [
            "--model",
            "fashion-cnn",
            "--out",
            str(tmp_path),
            "--tiny",
            "--split",
            "test",
            "--limit",
            "16",
            "--batch-size",
            "8",
            "--steps",
            "2",
            "--eval-limit",
            "64",
            "--precision",
            "fp32",
            "--device",
            "cpu",
        ]
    )
    summary = train.train(args)
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert models.load_classifier(tmp_path)(torch.zeros(1, 1, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", ["builtin:fashion-dit", "builtin:fashion-unet"])
def test_builtin_diffusion_models(name):
    b = models.load(name)
    assert b.num_classes == 10 and b.null_class == 10 and b.class_names[9] == "Ankle boot"
    assert b.sample_shape == (1, 32, 32) and b.num_train_timesteps == 1000
    x, t, labels, eps = _eps(b)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    # a trained model predicts the noise: at t=900 x_t is mostly noise, so eps ~ x_t / sqrt(1 - a)
    a = b.alphas_cumprod[900].float()
    target = x[1] / (1 - a).sqrt()
    assert torch.nn.functional.cosine_similarity(eps[1].flatten(), target.flatten(), dim=0) > 0.9


def test_builtin_classifier_accuracy():
    from bigain.data import load as load_data

    clf = models.load_classifier("builtin:fashion-cnn")
    x, y = load_data("builtin:fashion-mnist", limit=1000).tensors()
    with torch.no_grad():
        acc = (clf(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.9
    assert clf.features(x[:2]).shape == (2, 256)
    assert set(models.available()) >= {"builtin:fashion-dit", "builtin:fashion-unet", "builtin:fashion-cnn"}


def test_shipped_sizes():
    total = 0
    for folder in models.BUILTIN.values():
        if not folder.is_dir():  # a builtin not trained yet (see the model card)
            continue
        for f in folder.iterdir():
            assert f.stat().st_size <= 16 * 2**20, f
            total += f.stat().st_size
    assert total <= 60 * 10**6


def _train_args(out, steps, *extra, model="fashion-dit"):
    return train.parse_args(
        ["--model", model, "--out", str(out), "--tiny", "--split", "test", "--limit", "24",
         "--batch-size", "4", "--lr", "3e-3", "--warmup", "2", "--log-every", "1", "--precision", "fp32",
         "--device", "cpu", "--seed", "3", "--steps", str(steps), *extra]
    )  # fmt: skip


def _flat(obj, prefix=""):
    """Every tensor of a nested checkpoint, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flat(val, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flat(val, f"{prefix}/{i}").items()}
    return {}


def test_resumed_training_equals_uninterrupted(tmp_path):
    # 2 steps, then a resumed run to 4, against 4 steps in one go: weights, EMA, optimizer moments,
    # data order and random streams all continue, so the two runs agree exactly
    train.train(_train_args(tmp_path / "a", 2))
    assert [d.name for d in (tmp_path / "a" / "checkpoints").iterdir()] == ["step-000000002"]
    chunked = train.train(_train_args(tmp_path / "a", 4, "--resume"))
    whole = train.train(_train_args(tmp_path / "b", 4))
    assert chunked["steps_done"] == whole["steps_done"] == 4
    assert chunked["loss_curve"] == whole["loss_curve"]
    a = train.load_checkpoint(train.latest_checkpoint(tmp_path / "a"))
    b = train.load_checkpoint(train.latest_checkpoint(tmp_path / "b"))
    assert a["step"] == b["step"] == 4
    ta, tb = (
        _flat({k: a[k] for k in ("model", "ema", "opt", "batches", "gen")}),
        _flat({k: b[k] for k in ("model", "ema", "opt", "batches", "gen")}),
    )
    assert ta.keys() == tb.keys() and any("exp_avg_sq" in k for k in ta)
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    # the first step moved the weights away from the initialisation (the comparison is not vacuous)
    init = fashion.build("fashion-dit", tiny=True)
    assert not torch.equal(a["model"]["denoiser"]["proj_out_2.weight"], init["denoiser"].proj_out_2.weight)
    # older checkpoints beyond --keep-checkpoints are removed
    names = sorted(d.name for d in (tmp_path / "a" / "checkpoints").iterdir())
    assert names == ["step-000000002", "step-000000004"]


class _Payload:
    """An object whose unpickling would write a file (stands in for arbitrary code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def test_malicious_checkpoints_are_refused(tmp_path):
    import pickle

    marker = tmp_path / "pwned"
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"step": 1, "x": _Payload(marker)}, legacy / "checkpoint.pt")
    with pytest.raises(ValueError, match="refusing to load"):
        train.train(_train_args(legacy, 2, "--resume"))
    assert not marker.exists()
    # a pickle disguised as a checkpoint folder's tensor file is not valid safetensors
    fake = tmp_path / "fake" / train.CHECKPOINTS_DIR / "step-000000001"
    fake.mkdir(parents=True)
    (fake / train.TENSORS_FILE).write_bytes(pickle.dumps(_Payload(marker)))
    (fake / train.STATE_FILE).write_text('{"__tensor__": "x"}')
    with pytest.raises(Exception) as err:
        train.train(_train_args(tmp_path / "fake", 2, "--resume"))
    assert "ran" not in str(err.value) and not marker.exists()


def test_init_from_a_finished_folder(tmp_path):
    first = train.train(_train_args(tmp_path / "a", 3))
    cont = train.train(_train_args(tmp_path / "b", 5, "--init-from", str(tmp_path / "a")))
    assert cont["steps_done"] == 5 and [s for s, _ in cont["loss_curve"]] == [1, 2, 3, 4, 5]
    assert cont["loss_curve"][:3] == first["loss_curve"]
    ck = train.load_checkpoint(train.latest_checkpoint(tmp_path / "b"))
    assert int(ck["opt"]["state"][0]["step"]) == 2  # the optimizer restarted; the step count did not


def test_fashion_dit28_architecture_and_budget():
    from diffusers import DiTTransformer2DModel

    cfg = fashion.dit28_config()
    with torch.device("meta"):
        den = DiTTransformer2DModel(**cfg)
    hidden = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    assert len(den.transformer_blocks) == 28 and hidden == 128
    assert cfg["sample_size"] // cfg["patch_size"] == 16  # DiT-XL/2's 16x16 token grid
    shipped = sum(
        f.stat().st_size
        for n, d in models.BUILTIN.items()
        if n != "fashion-dit28" and d.is_dir()
        for f in d.iterdir()
    )
    assert shipped + 2 * sum(p.numel() for p in den.parameters()) <= 60 * 10**6  # fp16 weights


def test_fashion_dit28_trains_and_saves_in_small_shards(tmp_path):
    # the full-size model: one CPU training step, then the shipped folder format in shards
    args = train.parse_args(
        ["--model", "fashion-dit28", "--out", str(tmp_path), "--split", "test", "--limit", "4",
         "--batch-size", "2", "--steps", "1", "--precision", "fp32", "--device", "cpu"]
    )  # fmt: skip
    summary = train.train(args)
    assert summary["parameters"]["denoiser"] > 9_000_000
    shards = sorted(tmp_path.glob("diffusion_pytorch_model*.safetensors"))
    assert len(shards) >= 2 and all(f.stat().st_size <= 16 * 2**20 for f in shards)
    b = models.load(tmp_path)
    assert b.kind == "dit" and len(b.denoiser.transformer_blocks) == 28
    assert _eps(b)[3].shape == (2, 1, 32, 32)


def test_builtin_fashion_dit28_only_with_weights():
    folder = models.BUILTIN["fashion-dit28"]
    if (folder / "config.json").is_file():
        assert len(models.load("builtin:fashion-dit28").denoiser.transformer_blocks) == 28
    else:
        assert "builtin:fashion-dit28" not in models.available()
        with pytest.raises(FileNotFoundError, match="not trained yet"):
            models.load("builtin:fashion-dit28")
