"""The backends, by name: each is a package here, `runner/backends/NAME/`, holding its Backend (`BACKEND`)
and its typed config (`config.py`: `CONFIG`, the schema of `backend=NAME`). This is the one list of them.
A lookup of an unknown name lists the valid ones. Kept light: a backend's heavy imports come when it is used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, suggest

if TYPE_CHECKING:
    from runner.backends.base import Backend

NAMES = ("docker", "local", "slurm")


def _module(name: str, part: str = "") -> Any:
    if name not in NAMES:
        raise ConfigError(f"Unknown backend '{name}'.{suggest(name, NAMES)} Valid: {', '.join(NAMES)}.")
    return importlib.import_module(f"runner.backends.{name}{part}")


def get_backend(name: str) -> Backend[Any]:
    backend: Backend[Any] = _module(name).BACKEND()
    return backend


def backend_class(name: str) -> type[Backend[Any]]:
    """The backend's class, for what it says of every run (nothing is reached: no engine is asked)."""
    cls: type[Backend[Any]] = _module(name).BACKEND
    return cls


def config_schema(name: str) -> type:
    """The dataclass of `backend=NAME`'s settings."""
    schema: type = _module(name, ".config").CONFIG
    return schema
