"""Models by name, and the embedded Fashion-MNIST models.

``load(name)`` gives a `DiffusionBundle` for ``builtin:fashion-dit``, ``builtin:fashion-unet``,
a local diffusers folder, or a hub id (network only); ``load_classifier("builtin:fashion-cnn")``
gives the CNN used for Fashion-FID. The training recipe is ``python -m bigain.models.train``.
Flow-matching denoisers (SD3, Flux) are :class:`FlowBundle` (:mod:`bigain.models.flow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

# torch loads on first use of a name (`bigain train --help` parses before it)
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "DiffusionBundle": ".bundle",
        "ClassTokenEmbedding": ".fashion",
        "FashionCNN": ".fashion",
        "FlowBundle": ".flow",
        "make_flow_bundle": ".flow",
        **dict.fromkeys(("BUILTIN", "available", "load", "load_classifier", "resolve", "save_folder"), ".registry"),
    },
)

if TYPE_CHECKING:
    from .bundle import DiffusionBundle
    from .fashion import ClassTokenEmbedding, FashionCNN
    from .flow import FlowBundle, make_flow_bundle
    from .registry import BUILTIN, available, load, load_classifier, resolve, save_folder

__all__ = [
    "BUILTIN",
    "ClassTokenEmbedding",
    "DiffusionBundle",
    "FashionCNN",
    "FlowBundle",
    "available",
    "load",
    "load_classifier",
    "make_flow_bundle",
    "resolve",
    "save_folder",
]
