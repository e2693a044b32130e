"""Which of a config's values a run records as its params: those the run reads, and those the user set.

A command run reads its command, env, data, resources, backend and tracking, not the built-in trainer's model,
dataset and train nodes; a JupyterLab session reads its own settings instead of a command; no run reads the
sweep's settings (its parent run's tags hold them). The resolved config, every value of it, is an artifact."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.compose.spec import flatten

EVERY_RUN = ("env", "data", "resources", "backend", "tracking")
COMMAND = ("command", "autolog")  # autolog: MLflow's autologging, in a command's process only
TRAINER = ("model", "dataset", "train", "evaluate", "allow_targets")
SESSION = ("mode", "jupyter", "resources.idle_timeout")
# Read by no run, set by the user or not: how the terminal follows it, and the sweep's own settings.
NEVER = ("detach", "sweep")
# `${train.seed}`, not `\${HOME}` (a literal) nor `${oc.env:X}` (no config key).
_REFERENCE = re.compile(r"(?<!\\)\$\{([A-Za-z_][\w.]*)\}")


def read_keys(cfg: DictConfig) -> tuple[str, ...]:
    """The config keys (dotted prefixes) the run reads: its mode's, and the keys those values interpolate."""
    if cfg.mode == "jupyter":
        read: tuple[str, ...] = (*EVERY_RUN, *SESSION)
    elif cfg.command is None:
        read = (*EVERY_RUN, *TRAINER)
    else:
        read = (*EVERY_RUN, *COMMAND)
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    values = [v for k, v in flatten(raw).items() if _under(k, read)]
    return (*read, *(m for v in values for m in _REFERENCE.findall(v)))


def set_keys(overrides: Iterable[str]) -> tuple[str, ...]:
    """The config keys the user's overrides set (`model=mlp` sets the whole model node)."""
    keys = (o.lstrip("+~").split("=", 1)[0] for o in overrides)
    return tuple(k for k in keys if k and not k.startswith(("hydra.", "hydra/")))


def run_params(cfg: DictConfig, resolved: Mapping[Any, Any], overrides: Iterable[str] = ()) -> dict[str, str]:
    """The run's params: the flattened values of `resolved` (cfg, resolved) it reads or `overrides` set."""
    unread = NEVER if cfg.mode == "jupyter" else (*NEVER, *SESSION)
    kept = (*read_keys(cfg), *set_keys(overrides))
    return {k: v for k, v in flatten(resolved).items() if _under(k, kept) and not _under(k, unread)}


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)
