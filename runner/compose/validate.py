"""Every check that needs only the composed config, one function per config group; and the checks of what a
config names on this machine (a CA bundle) or in the record (param names). Each raises ConfigError naming the
key, what it got and what is allowed."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf

from runner.backends import NAMES as BACKENDS
from runner.compose.spec import MODES, SCHEDULES, check_requirement, parse_gpus, parse_log_limit, parse_memory
from runner.datasets.entry import parse_all
from runner.errors import ConfigError, suggest
from runner.harness.targets import (
    ALLOWED_TARGET_PREFIXES,
    EVALUATE_PREFIXES,
    LOADER_PREFIXES,
    refused_target,
    with_project,
)

MODULE_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def validate(cfg: DictConfig, *, backends: tuple[str, ...] = BACKENDS) -> None:
    """Every check that needs only the config. Raises ConfigError naming the key and what is allowed."""
    _missing(cfg)
    _backend(cfg, backends)
    if cfg.command is None:  # the harness builds the model and the data: every target must be allowed
        _targets(cfg)
    _resources(cfg)
    _mode(cfg)
    _train(cfg)
    _sweep(cfg)
    parse_all(list(cfg.data))
    _env(cfg)
    _evaluate(cfg)
    if cfg.command is not None and not str(cfg.command).strip():
        raise ConfigError("command: empty. Give the command to run, e.g. command='python train.py', or null.")


def _missing(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"Missing required value: {missing[0]}. Set it on the command line, e.g. {missing[0]}=..."
        )


def _backend(cfg: DictConfig, backends: tuple[str, ...]) -> None:
    if cfg.backend.name not in backends:
        raise ConfigError(
            f"Unknown backend '{cfg.backend.name}'.{suggest(cfg.backend.name, backends)} Valid: {', '.join(backends)}."
        )


def _targets(cfg: DictConfig) -> None:
    """model, dataset and allow_targets: what the harness would build."""
    target = cfg.model.get("_target_") if OmegaConf.is_dict(cfg.model) else None
    if not target:
        raise ConfigError("model._target_ is missing: a model node names its builder, e.g. models.mlp.build.")
    if not OmegaConf.is_dict(cfg.dataset) or not cfg.dataset.get("_target_"):
        raise ConfigError(
            "dataset._target_ is missing: a dataset node names its loader, e.g. runner.loaders.random_binary."
        )
    for allow in cfg.allow_targets:
        if not MODULE_PATH.match(str(allow)) or str(allow).split(".")[0] == "runner":
            raise ConfigError(
                f"allow_targets: '{allow}' is not a module of the project. Name one by its dotted path, e.g. "
                "allow_targets=[mypkg.models]."
            )
    for name, prefixes, what in (
        ("model", with_project(ALLOWED_TARGET_PREFIXES, cfg.allow_targets), "Builders"),
        ("dataset", with_project(LOADER_PREFIXES, cfg.allow_targets), "Loaders"),
    ):
        refused = refused_target(OmegaConf.to_container(cfg[name], resolve=False), prefixes, name)
        if refused:
            raise ConfigError(
                f"{refused} is not allowed (Hydra would build it). {what} must live under: {', '.join(prefixes)}"
            )


def _resources(cfg: DictConfig) -> None:
    parse_memory(cfg.resources.memory)
    parse_gpus(cfg.resources.gpus)
    parse_log_limit(cfg.resources.log_limit)
    for key in ("cpus", "timeout"):
        value = cfg.resources[key]
        if value is not None and value <= 0:
            raise ConfigError(f"resources.{key}: {value} must be positive (or null for no limit).")
    if cfg.resources.max_attempts < 1:
        raise ConfigError(
            f"resources.max_attempts: {cfg.resources.max_attempts} must be at least 1 (1: a run interrupted by its "
            "engine ends there; N: up to N attempts, each from the run's last checkpoint)."
        )


def _mode(cfg: DictConfig) -> None:
    """mode, and what a session needs: an idle timeout, Docker, a port, a JupyterLab version."""
    if cfg.mode not in MODES:
        raise ConfigError(
            f"mode: '{cfg.mode}' is not a mode.{suggest(str(cfg.mode), MODES)} Modes: {', '.join(MODES)}."
        )
    if cfg.resources.idle_timeout <= 0:
        raise ConfigError(
            f"resources.idle_timeout: {cfg.resources.idle_timeout} must be a positive number of seconds "
            "(a session that never stops itself is what it prevents)."
        )
    if cfg.mode == "jupyter" and cfg.backend.name != "docker":
        raise ConfigError(
            f"mode=jupyter runs JupyterLab in a container: use backend=docker (not {cfg.backend.name})."
        )
    if not 0 < cfg.jupyter.port < 65536:
        raise ConfigError(f"jupyter.port: {cfg.jupyter.port} is not a port (1-65535).")
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", str(cfg.jupyter.version)):  # it becomes a requirement line
        raise ConfigError(
            f"jupyter.version: {str(cfg.jupyter.version)!r} is not a version (a release number such as 4.6.6)."
        )


def _train(cfg: DictConfig) -> None:
    train = cfg.train
    if not 0 < train.epochs < math.inf:
        raise ConfigError(f"train.epochs: {train.epochs} must be a positive number.")
    if train.steps is not None and train.steps < 1:
        raise ConfigError(f"train.steps: {train.steps} must be at least 1 (or null to train by epochs).")
    if train.schedule not in SCHEDULES:
        raise ConfigError(
            f"train.schedule: '{train.schedule}' is not a schedule.{suggest(train.schedule, SCHEDULES)} Valid: {', '.join(SCHEDULES)}."
        )
    if not 0 <= train.validation_split < 1:
        raise ConfigError(f"train.validation_split: {train.validation_split} must be in [0, 1).")
    if train.batch_size < 1:
        raise ConfigError(f"train.batch_size: {train.batch_size} must be at least 1.")
    if not 0 < train.checkpoint_minutes < math.inf:
        raise ConfigError(
            f"train.checkpoint_minutes: {train.checkpoint_minutes} must be a positive number of minutes."
        )


def _sweep(cfg: DictConfig) -> None:
    if cfg.sweep.parallel is not None and cfg.sweep.parallel < 1:
        raise ConfigError(
            f"sweep.parallel: {cfg.sweep.parallel} must be at least 1 (or null: as many as the slots allow)."
        )
    if cfg.sweep.direction not in ("maximize", "minimize"):
        raise ConfigError(f"sweep.direction: '{cfg.sweep.direction}' is not one of: maximize, minimize.")
    if cfg.sweep.pruner is not None and cfg.sweep.pruner not in ("median", "halving", "hyperband"):
        raise ConfigError(f"sweep.pruner: '{cfg.sweep.pruner}' is not one of: median, halving, hyperband.")


def _env(cfg: DictConfig) -> None:
    for line in cfg.env.requirements:
        check_requirement(str(line), "env.requirements")
    if cfg.env.index_url is not None and not re.match(r"^https?://[^\s'\"]+$", cfg.env.index_url):
        raise ConfigError(
            f"env.index_url: '{cfg.env.index_url}' is not an http(s) URL, e.g. https://pypi.org/simple."
        )


def _evaluate(cfg: DictConfig) -> None:
    evaluate = cfg.get("evaluate")
    if evaluate is None:
        return
    if not OmegaConf.is_dict(evaluate):
        raise ConfigError(
            f"evaluate: '{evaluate}' is not a report node. Give one with a _target_, e.g. "
            "evaluate._target_=runner.mnist.report.evaluate, or null."
        )
    plain = OmegaConf.to_container(evaluate, resolve=False)
    refused = (
        refused_target(plain, EVALUATE_PREFIXES, "evaluate")
        if evaluate.get("_target_")
        else "evaluate._target_ ''"
    )
    if refused:
        raise ConfigError(
            f"{refused} is not allowed. Reports must live under: {', '.join(EVALUATE_PREFIXES)}"
        )


def check_ca_bundle(path: str) -> None:
    """A CA bundle is mounted into runs and builds: it must be a file of certificates, and nothing else (not
    the Docker socket, a device, a folder, or a file holding a private key)."""
    where = "env.ca_bundle (or the host's PIP_CERT / SSL_CERT_FILE)"
    try:
        info = os.stat(path)  # through links: what would be mounted
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: {path} is not a regular file. Give a PEM file of CA certificates.")
        if info.st_size > 50 * 1024 * 1024:
            raise ConfigError(f"{where}: {path} is {info.st_size} bytes: too large for a CA bundle.")
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read {path} ({exc.strerror}). Give a PEM file of CA certificates."
        ) from exc
    if b"-----BEGIN CERTIFICATE-----" not in text or b"PRIVATE KEY" in text:
        raise ConfigError(
            f"{where}: {path} is not a CA bundle (PEM certificates, no private key): it is not mounted into runs. "
            "E.g. env.ca_bundle=/etc/ssl/certs/ca-certificates.crt"
        )


def check_param_names(params: Mapping[str, str]) -> None:
    """Every config key becomes an MLflow param: one MLflow would refuse fails here, before any run exists."""
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    for key in params:
        if not validate_param_and_metric_name(key) or path_not_unique(key):
            raise ConfigError(
                f"'{key}' cannot name a recorded param: MLflow takes letters, digits, spaces and _ - . : / in a "
                "name, and no '.' or '..' path steps. Rename the key."
            )
