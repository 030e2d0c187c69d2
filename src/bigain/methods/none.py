"""`none`: no compression. apply/remove still install and remove the bookkeeping hook."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import MethodConfig


@dataclass
class NoneConfig(MethodConfig):
    """No compression: the baseline."""

    name: ClassVar[str] = "none"
    mechanism: ClassVar[str] = "none"
    on_empty: str = "ignore"
