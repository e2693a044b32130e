"""`backend=docker`: the settings only the Docker backend has."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DockerConfig:
    name: str = "docker"
    keep_container: bool = False  # keep the stopped container for debugging
    network: str = "bridge"  # "host" only when asked for


CONFIG = DockerConfig
