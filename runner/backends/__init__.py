"""Backends by name. A lookup of an unknown name lists the valid ones."""

from __future__ import annotations

import importlib

from runner.backends.base import Backend
from runner.errors import ConfigError, suggest
from runner.spec import BACKENDS as NAMES  # the one list of backends; each is the module of that name here

_MODULES = {name: f"runner.backends.{name}" for name in NAMES}


def get_backend(name: str) -> Backend:
    if name not in _MODULES:
        raise ConfigError(f"Unknown backend '{name}'.{suggest(name, NAMES)} Valid: {', '.join(NAMES)}.")
    module = importlib.import_module(_MODULES[name])  # heavy imports (docker SDK) only when chosen
    backend: Backend = module.BACKEND()
    return backend
