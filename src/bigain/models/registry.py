"""Loading and saving models by name: the embedded ones, local diffusers folders, hub ids.

Folder format (diffusers'): ``config.json`` + ``diffusion_pytorch_model.safetensors`` for the
denoiser, ``scheduler_config.json`` for the noise schedule (default: DDPM, linear betas
1e-4..0.02, 1000 steps), ``class_embeddings.safetensors`` (tensor ``weight`` of shape
(classes + 1, tokens, dim)) for a cross-attention U-Net, ``train_config.json`` for the recipe.
The embedded classifier uses ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch

from .bundle import DiffusionBundle
from .fashion import NULL_CLASS, SCHEDULER_CONFIG, ClassTokenEmbedding, FashionCNN

WEIGHTS_DIR = Path(__file__).with_name("weights")
BUILTIN = {
    "fashion-dit": WEIGHTS_DIR / "fashion-dit",
    "fashion-dit28": WEIGHTS_DIR / "fashion-dit28",
    "fashion-unet": WEIGHTS_DIR / "fashion-unet",
    "fashion-cnn": WEIGHTS_DIR / "fashion-cnn",
}
CLASS_EMBEDDINGS_FILE = "class_embeddings.safetensors"
CLASSIFIER_FILE = "model.safetensors"
TRAIN_CONFIG_FILE = "train_config.json"
MAX_SHARD_SIZE = "15MB"  # below 16 MiB per weight file


def available() -> list[str]:
    """Names of the embedded models whose weights are present in this install."""
    return [f"builtin:{n}" for n, p in BUILTIN.items() if (p / "config.json").is_file()]


def _builtin_name(name: str) -> str | None:
    key = name[len("builtin:") :] if name.startswith("builtin:") else name
    if key in BUILTIN:
        return key
    if name.startswith("builtin:"):
        raise ValueError(f"model={name!r}: unknown builtin model; expected one of {sorted(BUILTIN)}")
    return None


def resolve(name: str | os.PathLike) -> Path:
    """A local folder for a model name: builtin, an existing folder, or a hub id (downloaded)."""
    name = os.fspath(name)
    key = _builtin_name(name)
    if key is not None:
        folder = BUILTIN[key]
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"builtin model {key!r} has no weights in this install (not trained yet, or not shipped): "
                f"train it with `bigain train --model {key} --out DIR` (scripts/train_gpu.sh on a GPU) "
                f"and copy DIR's files to {folder}"
            )
        return folder
    if Path(name).is_dir():
        return Path(name)
    if Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(
            f"model={name!r}: not a builtin name, a local folder, or a hub id (owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as e:  # network errors, missing repo, offline mode
        raise RuntimeError(
            f"model={name!r} looks like a Hugging Face hub id but could not be downloaded ({type(e).__name__}: {e}); "
            "hub models need network access (or a local copy: pass its folder instead)"
        ) from e


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def alphas_cumprod_from_config(config: dict[str, Any] | None) -> torch.Tensor:
    """The training schedule's cumulative alphas (float64, shape (T,)) from a scheduler config."""
    from diffusers import DDPMScheduler

    cfg = {k: v for k, v in {**SCHEDULER_CONFIG, **(config or {})}.items() if not k.startswith("_")}
    sched = DDPMScheduler.from_config(cfg)
    return sched.alphas_cumprod.to(torch.float64).clone()


def _class_names(folder: Path, num_classes: int, extra: dict[str, Any] | None = None) -> list[str]:
    for src in (extra or {}, _read_json(folder / TRAIN_CONFIG_FILE)):
        names = src.get("class_names")
        if isinstance(names, list) and len(names) == num_classes:
            return [str(n) for n in names]
        id2label = src.get("id2label")
        if isinstance(id2label, dict) and len(id2label) >= num_classes:
            return [str(id2label.get(str(i), id2label.get(i, f"class {i}"))) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


def _dit_bundle(
    name: str, folder: Path, sched_cfg: dict, device, dtype, extras: dict, index: dict
) -> DiffusionBundle:
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    cfg = model.config
    num_classes = int(cfg.num_embeds_ada_norm)
    out_ch = cfg.out_channels or cfg.in_channels
    size = int(cfg.sample_size)
    return DiffusionBundle(
        name=name,
        denoiser=model,
        kind="dit",
        alphas_cumprod=alphas_cumprod_from_config(sched_cfg).to(device),
        num_classes=num_classes,
        class_names=_class_names(folder, num_classes, index),
        sample_shape=(int(cfg.in_channels), size, size),
        conditioning=lambda labels: {"class_labels": labels},
        null_class=num_classes,
        learned_sigma=out_ch == 2 * cfg.in_channels,
        extras=extras,
    )


def _unet_bundle(name: str, folder: Path, sched_cfg: dict, device, dtype, extras: dict) -> DiffusionBundle:
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    emb_path = folder / CLASS_EMBEDDINGS_FILE
    if not emb_path.is_file():
        raise ValueError(
            f"{folder}: a UNet2DConditionModel needs {CLASS_EMBEDDINGS_FILE} beside it to be class-conditional "
            "(text-conditional pipelines are not loaded by bigain.models.load)"
        )
    model = UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    weight = load_file(emb_path)["weight"]
    emb = ClassTokenEmbedding(weight.shape[0] - 1, weight.shape[1], weight.shape[2])
    emb.weight.data.copy_(weight.float())
    emb = emb.to(device=device, dtype=dtype).eval().requires_grad_(False)
    cfg = model.config
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    return DiffusionBundle(
        name=name,
        denoiser=model,
        kind="unet",
        alphas_cumprod=alphas_cumprod_from_config(sched_cfg).to(device),
        num_classes=emb.num_classes,
        class_names=_class_names(folder, emb.num_classes),
        sample_shape=(int(cfg.in_channels), int(size), int(size)),
        conditioning=lambda labels: {"encoder_hidden_states": emb(labels)},
        null_class=emb.null_class,
        learned_sigma=(cfg.out_channels == 2 * cfg.in_channels),
        extras={**extras, "class_embedding": emb},
    )


def load(
    name: str | os.PathLike = "builtin:fashion-dit",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionBundle:
    """A `DiffusionBundle` by name: ``builtin:fashion-dit``, ``builtin:fashion-unet``, a local
    diffusers folder (a DiT/U-Net model folder or a DiT pipeline folder), or a hub id (network)."""
    label = os.fspath(name)
    folder = resolve(name)
    extras: dict[str, Any] = {"path": str(folder)}
    index = _read_json(folder / "model_index.json")
    if index:  # a pipeline folder
        sub = "transformer" if (folder / "transformer").is_dir() else "unet"
        if not (folder / sub).is_dir():
            raise ValueError(f"{folder}: pipeline without a 'transformer' or 'unet' folder")
        sched_cfg = _read_json(folder / "scheduler" / "scheduler_config.json")
        if (folder / "vae").is_dir():
            extras["vae_path"] = str(folder / "vae")
        model_folder = folder / sub
    else:
        sched_cfg = _read_json(folder / "scheduler_config.json")
        model_folder = folder
    if not (model_folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model={label!r}: {model_folder} has no config.json, so it is not a diffusers model folder; "
            "expected a folder with config.json (DiTTransformer2DModel or UNet2DConditionModel) and its "
            "weights, or a pipeline folder with model_index.json"
        )
    cls = _read_json(model_folder / "config.json").get("_class_name")
    if cls == "FashionCNN":
        raise ValueError(
            f"model={label!r} is the embedded classifier (the features of Fashion-FID), not a diffusion "
            f"model: load it with bigain.models.load_classifier({label!r}); models.load takes "
            "builtin:fashion-dit, builtin:fashion-unet, a diffusers folder or a hub id"
        )
    if cls == "DiTTransformer2DModel":
        return _dit_bundle(label, model_folder, sched_cfg, device, dtype, extras, index)
    if cls == "UNet2DConditionModel":
        return _unet_bundle(label, model_folder, sched_cfg, device, dtype, extras)
    raise ValueError(
        f"model={label!r}: {model_folder}/config.json names the class {cls!r}; expected a denoiser of class "
        "DiTTransformer2DModel or UNet2DConditionModel (a pipeline folder needs model_index.json)"
    )


def load_classifier(
    name: str | os.PathLike = "builtin:fashion-cnn",
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FashionCNN:
    """The embedded CNN classifier (eval mode) by name or folder."""
    from safetensors.torch import load_file

    folder = resolve(name)
    cfg = {k: v for k, v in _read_json(folder / "config.json").items() if not k.startswith("_")}
    model = FashionCNN(**cfg)
    state = {k: v.float() for k, v in load_file(folder / CLASSIFIER_FILE).items()}
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def save_folder(
    folder: str | os.PathLike,
    modules: dict[str, torch.nn.Module],
    train_config: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write a model in the shipped folder format (weights stored as `dtype`; loading upcasts).

    `modules` holds ``denoiser`` (+ ``class_embedding``) for a diffusion model, or ``classifier``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if "classifier" in modules:
        clf = modules["classifier"]
        state = {
            k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
            for k, v in clf.state_dict().items()
        }
        save_file(state, str(folder / (CLASSIFIER_FILE + ".tmp")))
        os.replace(folder / (CLASSIFIER_FILE + ".tmp"), folder / CLASSIFIER_FILE)
        _write_json(folder / "config.json", {"_class_name": type(clf).__name__, **clf.config()})
    else:
        den = copy.deepcopy(modules["denoiser"]).to("cpu", dtype)
        # shards of at most MAX_SHARD_SIZE keep every shipped file small (repository and transfer limits)
        den.save_pretrained(folder, safe_serialization=True, max_shard_size=MAX_SHARD_SIZE)
        _write_json(folder / "scheduler_config.json", SCHEDULER_CONFIG)
        if "class_embedding" in modules:
            w = modules["class_embedding"].weight.detach().to("cpu", dtype).contiguous()
            save_file({"weight": w}, str(folder / (CLASS_EMBEDDINGS_FILE + ".tmp")))
            os.replace(folder / (CLASS_EMBEDDINGS_FILE + ".tmp"), folder / CLASS_EMBEDDINGS_FILE)
    if train_config is not None:
        _write_json(folder / TRAIN_CONFIG_FILE, train_config)
    return folder


__all__ = ["BUILTIN", "NULL_CLASS", "available", "load", "load_classifier", "resolve", "save_folder"]
