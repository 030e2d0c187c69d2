"""A tiny random Wan 2.1 text-to-video pipeline, in memory and saved to disk, for the video tests.

Use in a test module with ``from video_fixtures import tiny_wan_fixture, tiny_wan_folder_fixture  # noqa: F401``
and ask for the fixtures ``tiny_wan`` and ``tiny_wan_folder`` by name.
The builder itself is ``bigain.generate.tiny_wan`` (also what the README's example saves), so the
tests and the documented example run the same pipeline. A 5-frame 32x32 video has a latent grid of
2 frames x 2 x 2 tokens; 2 steps take about a second on a CPU.
"""

from __future__ import annotations

import pytest

from bigain.generate.tiny_wan import save_tiny_wan, tiny_wan_pipeline, tiny_wan_transformer

__all__ = [
    "SMALL_VIDEO",
    "save_tiny_wan",
    "tiny_wan_fixture",
    "tiny_wan_folder_fixture",
    "tiny_wan_pipeline",
    "tiny_wan_transformer",
]

# call settings of a quick sample: 5 frames (Wan makes 4k + 1), 32x32 pixels, 2 steps
SMALL_VIDEO = {
    "num_frames": 5,
    "height": 32,
    "width": 32,
    "num_inference_steps": 2,
    "max_sequence_length": 16,
}


@pytest.fixture(scope="module", name="tiny_wan")
def tiny_wan_fixture():
    """A ``WanPipeline`` with random weights (module-scoped: do not leave it patched)."""
    return tiny_wan_pipeline()


@pytest.fixture(scope="module", name="tiny_wan_folder")
def tiny_wan_folder_fixture(tmp_path_factory):
    """The same pipeline saved with ``save_pretrained`` (load it with ``DiffusionPipeline.from_pretrained``)."""
    return save_tiny_wan(tmp_path_factory.mktemp("tiny-wan") / "pipe")
