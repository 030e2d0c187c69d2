"""Data sets (Pets, ImageNet folders, COCO, prompt CSVs, Fashion-MNIST) and pipeline bundles."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from bigain.classify import DiffusionClassifier, bundle_from_pipeline, prepare_x0, reference_classify
from bigain.classify.datasets import (
    CocoDataset,
    OxfordPetsDataset,
    imagenet100_ids,
    imagenet_class_names,
    load_dataset,
    load_prompts_csv,
    pets_class_names,
)
from bigain.classify.runner import _candidates
from bigain.classify.summary import summarize
from bigain.classify.testing import CountingBundle
from conftest import TinyTokenizer, make_tiny_vae


def test_shipped_class_lists():
    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert (names[0], names[1], names[151], names[281], names[999]) == (
        "tench",
        "goldfish",
        "Chihuahua",
        "tabby cat",
        "toilet paper",
    )
    ids = imagenet100_ids()
    assert len(ids) == 100 and ids[:3] == (15, 45, 54) and ids[-1] == 994 and list(ids) == sorted(set(ids))
    pets = pets_class_names()
    assert len(pets) == 37 and pets[0] == "Abyssinian" and pets[-1] == "Yorkshire Terrier"


def _png(path, value=0, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=value if mode == "L" else (value, value, value)).save(path)


def test_pets_annotation_list(tmp_path):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "test.txt").write_text(
        "#Image CLASS-ID SPECIES BREED-ID\nAbyssinian_1 1 1 1\nyorkshire_terrier_9 37 2 25\n"
    )
    (tmp_path / "images").mkdir()
    _png(tmp_path / "images" / "Abyssinian_1.jpg".replace(".jpg", ".png"))
    ds = load_dataset(str(tmp_path))
    assert isinstance(ds, OxfordPetsDataset) and len(ds) == 2 and ds.num_classes == 37
    assert [s.label for s in ds] == [0, 36] and ds[0].id == "Abyssinian_1"
    assert ds.prompts[0] == "a photo of a Abyssinian cat, a type of pet."
    assert ds.prompts[36].endswith("Yorkshire Terrier dog, a type of pet.")
    with pytest.raises(FileNotFoundError):
        ds.load_image(ds[1])  # the jpg is missing: recorded by the run, not fatal here


def test_imagenet100_folder_maps_to_imagenet_ids(tmp_path):
    wnids = [f"n{10000 + k:08d}" for k in range(100)]
    for w in wnids:
        (tmp_path / w).mkdir()
    _png(tmp_path / wnids[0] / "x.JPEG")
    _png(tmp_path / wnids[99] / "y.JPEG")
    ds = load_dataset(str(tmp_path))
    assert ds.name == "imagenet100" and ds.model_class_ids == list(imagenet100_ids())
    assert ds.class_names[0] == imagenet_class_names()[15] and ds.prompts[0] == "a photo of a American robin."
    assert [s.label for s in ds] == [0, 99]
    # a 1000-class DiT scores the 100 ImageNet ids; a bundle built from the 100 prompts scores 0..99
    assert _candidates(CountingBundle(1000), ds) == list(imagenet100_ids())
    assert _candidates(CountingBundle(100), ds) == list(range(100))
    with pytest.raises(ValueError, match="no mapping"):
        _candidates(CountingBundle(7), ds)


def test_candidate_classes_are_what_the_denoiser_sees():
    bundle = CountingBundle(1000)
    res = DiffusionClassifier(bundle, classes=[15, 45, 994], n_samples=(1, 2), to_keep=(2, 1)).classify(
        torch.randn(1, 2, 2), 1
    )
    assert res.prediction in (0, 1, 2) and bundle.denoiser.rows == 3 + 2


def test_coco_multilabel(tmp_path):
    ann = {
        "images": [{"id": 2, "file_name": "b.jpg"}, {"id": 1, "file_name": "a.jpg"}],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"image_id": 1, "category_id": 18},
            {"image_id": 1, "category_id": 1},
            {"image_id": 1, "category_id": 18},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    ds = load_dataset(f"coco:{tmp_path}")
    assert isinstance(ds, CocoDataset) and ds.multi_label
    assert ds.class_names == ["person", "car", "dog"] and ds.prompts[2] == "a photo of a dog."
    assert [(s.id, s.label) for s in ds] == [("a.jpg", (0, 2)), ("b.jpg", ())]
    recs = [
        {"index": 0, "id": "a.jpg", "label": [0, 2], "prediction": 2, "ranking": [2, 1, 0], "error": None},
        {"index": 1, "id": "b.jpg", "label": [], "prediction": 1, "ranking": [1, 0, 2], "error": None},
    ]
    s = summarize(recs, ds.class_names, multi_label=True, expected=2)
    assert s["acc1"] == 50.0 and s["mAP"] == pytest.approx(100 * (1 + 2 / 3) / 2 / 2)
    assert s["recall5"] == 50.0


def test_prompt_csv(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text('prompt,classname,classidx\n"a photo of a dog, a pet.",dog,1\na photo of a cat.,cat,0\n')
    prompts, names = load_prompts_csv(p)
    assert prompts == ["a photo of a cat.", "a photo of a dog, a pet."] and names == ["cat", "dog"]
    p.write_text("prompt,classname,classidx\na,b,0\nc,d,2\n")
    with pytest.raises(ValueError, match="without gaps"):
        load_prompts_csv(p)
    p.write_text("prompt,classidx\na,0\n")
    with pytest.raises(ValueError, match="classname"):
        load_prompts_csv(p)


def test_builtin_fashion_mnist():
    ds = load_dataset("builtin:fashion-mnist")
    assert len(ds) == 10000 and ds.num_classes == 10 and ds.class_names[9] == "Ankle boot"
    x = ds.load_image(ds[0])
    assert x.shape == (1, 32, 32) and -1.0 <= float(x.min()) and float(x.max()) <= 1.0


# --------------------------------------------------------------------------------------------
# pipelines
# --------------------------------------------------------------------------------------------
def test_bundle_from_sd_style_pipeline():
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=100,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
        )
    ).eval()
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    vae = make_tiny_vae()
    pipe = SimpleNamespace(unet=unet, text_encoder=text, tokenizer=TinyTokenizer(), vae=vae, scheduler=sched)
    prompts = ["a photo of a cat.", "a photo of a dog.", "a photo of a car."]
    bundle = bundle_from_pipeline(pipe, prompts)
    assert bundle.num_classes == 3 and bundle.sample_shape == (4, 8, 8) and bundle.extras["image_size"] == 16
    assert torch.allclose(bundle.alphas_cumprod, sched.alphas_cumprod.double())
    with torch.no_grad():
        one = text(TinyTokenizer()([prompts[1]], None, 6, True, "pt")["input_ids"])[0]
    assert torch.allclose(bundle.conditioning(torch.tensor([1]))["encoder_hidden_states"], one, atol=1e-6)
    img = Image.new("RGB", (24, 20), color=(200, 30, 60))
    x0 = prepare_x0(bundle, [img])
    pixels = torch.tensor([200, 30, 60]).float().div(255).mul(2).sub(1).view(1, 3, 1, 1).expand(1, 3, 16, 16)
    with torch.no_grad():
        expect = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    assert x0.shape == (1, 4, 8, 8) and torch.allclose(x0, expect, atol=1e-4)
    kw = {"n_samples": (1, 2), "to_keep": (2, 1)}
    res = DiffusionClassifier(bundle, batch_size=4, **kw).classify(x0[0], 3)
    ref = reference_classify(bundle, x0[0], 3, **kw)
    assert res.prediction == ref.prediction
    assert all(abs(a - b) < 1e-5 for a, b in zip(res.mean_errors, ref.mean_errors))


def test_bundle_from_dit_pipeline_learned_sigma():
    from diffusers import DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=5,
    ).eval()
    pipe = SimpleNamespace(
        transformer=dit, vae=make_tiny_vae(), scheduler=DDPMScheduler(), id2label={0: "tench", 1: "goldfish"}
    )
    bundle = bundle_from_pipeline(pipe)
    assert bundle.kind == "dit" and bundle.num_classes == 5 and bundle.learned_sigma
    assert bundle.class_names[:3] == ["tench", "goldfish", "class 2"]
    eps = bundle.predict_eps(torch.randn(2, 4, 8, 8), torch.tensor([10, 500]), torch.tensor([0, 4]))
    assert eps.shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="prompt"):
        bundle_from_pipeline(
            SimpleNamespace(
                unet=torch.nn.Linear(1, 1), text_encoder=1, tokenizer=1, scheduler=DDPMScheduler()
            )
        )
