"""The RunSpec of a validated config: what the config says, resolved against the project (its requirements file)
and the environment (the tracking store, the CA bundle)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.backends import config_schema
from runner.compose.params import run_params
from runner.compose.spec import (
    HARNESS_ARGV,
    EnvSpec,
    Resources,
    RunSpec,
    Session,
    command_argv,
    escaped,
    parse_gpus,
    parse_log_limit,
    parse_memory,
)
from runner.compose.validate import check_param_names
from runner.tracking.store import server_secrets, store_uri

# At the project's root, when none is named.
REQUIREMENTS_BY_NAME = ("floyd_requirements.txt", "requirements.txt")


def requirements_by_name(project: Path, named: str | None) -> str | None:
    """The requirements file: the one the config names ("none": no file), else the first of REQUIREMENTS_BY_NAME
    at the project's root."""
    if named is not None:
        return None if named == "none" else named
    return next((name for name in REQUIREMENTS_BY_NAME if (project / name).is_file()), None)


def backend_settings(node: Any) -> Any:
    """The backend's typed settings from its config node. Keys its schema lacks are dropped: a record made
    when every backend shared one set of settings names the Docker ones on a local run too."""
    schema = config_schema(str(node.name))
    known = {f.name for f in fields(schema)}
    given = OmegaConf.to_container(node, resolve=True)
    assert isinstance(given, dict)
    values = {k: v for k, v in given.items() if k in known}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def experiment_name(cfg: DictConfig, chosen: str, project_dir: str) -> str:
    """The MLflow experiment a run is filed under: `tracking.experiment`, else the experiment config chosen;
    a command of the project's own with neither is filed under the project's name, which says what it is."""
    if cfg.tracking.experiment:
        return str(cfg.tracking.experiment)
    return Path(project_dir).name if cfg.command is not None and chosen == "default" else chosen


def build_spec(
    cfg: DictConfig,
    *,
    chosen: str,
    project_dir: str,
    environ: Mapping[str, str],
    overrides: Iterable[str] = (),
) -> RunSpec:
    """The RunSpec for a validated config; `chosen` is the experiment config the overrides chose ("default":
    none). `environ` is read for MLFLOW_TRACKING_URI and the CA fallback; `overrides`, the user's, for the
    params (compose.params)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    env = cfg.env
    ca_bundle = env.ca_bundle or environ.get("PIP_CERT") or environ.get("SSL_CERT_FILE") or None
    if ca_bundle:
        ca_bundle = str(Path(project_dir, ca_bundle))  # absolute paths stay as they are
    argv = HARNESS_ARGV if cfg.command is None else command_argv(str(cfg.command))
    tracking_uri = store_uri(project_dir, cfg.tracking.uri, environ)
    params = run_params(cfg, resolved, overrides)
    check_param_names(params)
    return RunSpec(
        experiment=experiment_name(cfg, chosen, project_dir),
        project_dir=project_dir,
        backend=cfg.backend.name,
        argv=argv,
        env=EnvSpec(
            image=env.image,
            requirements=tuple(env.requirements),
            requirements_file=requirements_by_name(Path(project_dir), env.requirements_file),
            index_url=env.index_url,
            setup=tuple(env.setup),
            gpu=bool(env.gpu),
            ca_bundle=ca_bundle,
            variables=tuple(sorted((str(k), str(v)) for k, v in env.variables.items())),
            # The team server's password too, where this shell has one (tracking.store.server_secrets).
            secrets=tuple(dict.fromkeys([*env.secrets, *server_secrets(tracking_uri, environ)])),
        ),
        resources=Resources(
            cpus=cfg.resources.cpus,
            memory_bytes=parse_memory(cfg.resources.memory),
            timeout=cfg.resources.timeout,
            gpus=parse_gpus(cfg.resources.gpus),
            idle_timeout=int(cfg.resources.idle_timeout),
            max_attempts=int(cfg.resources.max_attempts),
            log_limit=parse_log_limit(cfg.resources.log_limit),
        ),
        data=tuple(cfg.data),
        seed=int(cfg.train.seed),
        tracking_uri=tracking_uri,
        allow_targets=tuple(str(a) for a in cfg.allow_targets),
        config_yaml=OmegaConf.to_yaml(escaped(resolved)),
        params=tuple(sorted(params.items())),
        backend_config=backend_settings(cfg.backend),
        detach=bool(cfg.detach),
        session=Session(int(cfg.jupyter.port), str(cfg.jupyter.version)) if cfg.mode == "jupyter" else None,
        autolog=autolog_of(cfg),
    )


def autolog_of(cfg: DictConfig) -> str:
    """A command run's autologging: "models" (models logged too), "on", or "" (off; the built-in trainer
    records its own metrics, a session is a notebook's)."""
    if cfg.command is None or cfg.mode != "run" or not cfg.autolog.enabled:
        return ""
    return "models" if cfg.autolog.models else "on"
