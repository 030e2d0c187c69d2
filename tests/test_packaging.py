"""The package metadata reads without setuptools deprecation warnings (they print as a banner on
every install)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_reads_without_deprecation_warnings(monkeypatch):
    pytest.importorskip("setuptools.config.pyprojecttoml")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(ROOT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), os.fspath(ROOT / "pyproject.toml"))
    deprecations = [str(w.message).splitlines()[0] for w in caught if "deprecat" in str(w.message).lower()]
    assert not deprecations, deprecations
    assert dist.metadata.license_expression == "MIT"
