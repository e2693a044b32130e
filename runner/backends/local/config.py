"""`backend=local`: no settings of its own yet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LocalConfig:
    name: str = "local"


CONFIG = LocalConfig
