"""RunSpec: everything one run needs, resolved from the composed config. Pure: no I/O, no side effects."""

from __future__ import annotations

import math
import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.backends import NAMES as BACKENDS
from runner.backends import config_schema
from runner.datasets.entry import DataMount, parse_all
from runner.errors import ConfigError, suggest
from runner.targets import (
    ALLOWED_TARGET_PREFIXES,
    EVALUATE_PREFIXES,
    LOADER_PREFIXES,
    refused_target,
    with_project,
)

# Only these module prefixes may appear as a model `_target_`: instantiating arbitrary targets from a
# config file is code execution.
SCHEDULES = ("constant", "cosine")
HARNESS_ARGV = ("python", "-m", "runner.job")
MODES = ("run", "jupyter")
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True)
class EnvSpec:
    image: str
    requirements: tuple[str, ...] = ()
    requirements_file: str | None = None  # relative to the project
    index_url: str | None = None
    setup: tuple[str, ...] = ()
    gpu: bool = False
    ca_bundle: str | None = None  # absolute host path
    variables: tuple[tuple[str, str], ...] = ()
    secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resources:
    cpus: float | None = None
    memory_bytes: int | None = None
    timeout: int | None = None
    gpus: int | tuple[str, ...] | None = None  # None: all GPUs when env.gpu
    idle_timeout: int = 3600  # a session's (mode=jupyter)
    cpuset: str | None = None  # CPUs this run may use ("0-1"); a sweep gives each member its own


@dataclass(frozen=True)
class Session:
    """mode=jupyter: JupyterLab on 127.0.0.1:port, this version installed on top of the run's environment."""

    port: int
    version: str


@dataclass(frozen=True)
class RunSpec:
    experiment: str
    project_dir: str
    backend: str
    argv: tuple[str, ...]
    env: EnvSpec
    resources: Resources
    data: tuple[str, ...]  # NAME@VERSION:MOUNT entries as written
    seed: int
    tracking_uri: str
    mlflow_experiment: str
    config_yaml: str
    params: tuple[tuple[str, str], ...]
    backend_config: Any = None  # the backend's own typed settings (runner/backends/NAME/config.py)
    detach: bool = False
    session: Session | None = None  # mode=jupyter: JupyterLab instead of the command
    mounts: tuple[DataMount, ...] = ()  # `data` resolved to exact versions; filled in by launch.execute
    allow_targets: tuple[str, ...] = ()  # the project's own modules a model or dataset node may name
    code_dir: str = ""  # where the run's code is taken from, when not the project itself (a reproduction)

    @property
    def source(self) -> str:
        """The folder the run's code, requirements and version come from; its runs live in project_dir."""
        return self.code_dir or self.project_dir

    @property
    def is_command_mode(self) -> bool:
        return self.argv != HARNESS_ARGV


REQUIREMENTS_BY_NAME = (
    "floyd_requirements.txt",
    "requirements.txt",
)  # at the project's root, when none is named


def requirements_by_name(project: Path, named: str | None) -> str | None:
    """The requirements file: the one the config names ("none": no file), else the first of REQUIREMENTS_BY_NAME
    at the project's root."""
    if named is not None:
        return None if named == "none" else named
    return next((name for name in REQUIREMENTS_BY_NAME if (project / name).is_file()), None)


# Words the shell itself acts on: a command starting with one needs the shell.
SHELL_WORDS = frozenset(
    [
        "!",
        ".",
        ":",
        "[",
        "alias",
        "break",
        "case",
        "cd",
        "command",
        "continue",
        "eval",
        "exec",
        "exit",
        "export",
        "for",
        "if",
        "read",
        "readonly",
        "return",
        "set",
        "shift",
        "source",
        "test",
        "times",
        "trap",
        "ulimit",
        "umask",
        "unset",
        "until",
        "wait",
        "while",
        "{",
    ]
)


def command_argv(command: str) -> tuple[str, ...]:
    """A simple command (words only, each quoted as `shlex.join` would: what `runner run -- CMD` writes) runs
    as those exact arguments, with no shell; anything else (pipes, `$VAR`, `&&`, `A=1 cmd`, a builtin such as
    `cd` or `exit`) runs through `sh -c`."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    simple = words and shlex.join(words) == command and "=" not in words[0] and words[0] not in SHELL_WORDS
    return tuple(words) if simple else ("sh", "-c", command)


def escaped(value: Any) -> Any:
    """`value` with every `${` in its strings escaped, so that a resolved config reads back as the same values
    (a command's literal `${HOME}` is not an interpolation when the record is composed again)."""
    if isinstance(value, dict):
        return {k: escaped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [escaped(v) for v in value]
    if isinstance(value, str) and "${" in value:
        return re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
    return value


def check_requirement(line: str, where: str) -> str:
    """A package requirement, not a pip option (`--index-url`, `-r`, `-e`...) nor a host path or file URL:
    where packages come from is the config's own keys (env.index_url), recorded. A `--hash` a pinned line carries
    is dropped (the lock gets its own hashes)."""
    line = re.sub(r"\s--hash[=\s]\S+", "", line).strip()
    url = re.search(r"@\s*(\S+)", line)
    local = ("/" in line or "\\" in line) and not (url and re.match(r"^(https?|git\+https?)://", url[1]))
    if line.startswith(("-", "/", ".", "~")) or "file:" in line or local:
        raise ConfigError(
            f"{where}: '{line}' is not a package requirement (pip options and local paths are not taken). "
            "Write NAME[==VERSION], e.g. numpy==1.26.4; for another package index set env.index_url=URL."
        )
    return line


def requirement_file_lines(text: str) -> list[tuple[int, str]]:
    """(line number, requirement) of a requirements file: comments dropped, `\\` continuations joined."""
    found, pending, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if not pending:
            start = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line:
            found.append((start, line))
    if pending.strip():
        found.append((start, pending.strip()))
    return found


MIN_MEMORY = 6 * 1024**2


def parse_memory(value: str | None) -> int | None:
    if value is None:
        return None
    match = _MEMORY.match(str(value).strip())
    if not match:
        raise ConfigError(
            f"resources.memory: '{value}' is not a size. Use a number with k, m, g or t, e.g. 512m or 4g."
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size < MIN_MEMORY:  # below it no Python starts (and Docker refuses the container)
        raise ConfigError(
            f"resources.memory: '{value}' is below the least a run can have, 6m. Use e.g. 512m or 4g."
        )
    return size


def parse_gpus(value: Any) -> int | tuple[str, ...] | None:
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, int) and value < 1:
            raise ConfigError(
                f"resources.gpus: {value} is not a GPU count. Use a positive count, a list of ids, or null."
            )
        return value
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return tuple(str(v) for v in value)
    raise ConfigError(f"resources.gpus: '{value}' is not a count or a list of device ids.")


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a resolved config to dotted keys: {'train.epochs': '20', ...}."""
    out: dict[str, str] = {}
    if isinstance(node, Mapping):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = "null" if node is None else str(node)
    return out


def default_tracking_uri(project_dir: str) -> str:
    # MLflow's own default, made absolute so any working directory finds the same store.
    return f"sqlite:///{Path(project_dir) / 'mlflow.db'}"


def validate(cfg: DictConfig, *, backends: tuple[str, ...] = BACKENDS) -> None:
    """Every check that needs only the config. Raises ConfigError naming the key and what is allowed."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"Missing required value: {missing[0]}. Set it on the command line, e.g. {missing[0]}=..."
        )
    if cfg.backend.name not in backends:
        raise ConfigError(
            f"Unknown backend '{cfg.backend.name}'.{suggest(cfg.backend.name, backends)} Valid: {', '.join(backends)}."
        )
    if cfg.command is None:  # the harness builds the model and the data: every target must be allowed
        target = cfg.model.get("_target_") if OmegaConf.is_dict(cfg.model) else None
        if not target:
            raise ConfigError(
                "model._target_ is missing: a model node names its builder, e.g. runner.models.mlp.build."
            )
        if not OmegaConf.is_dict(cfg.dataset) or not cfg.dataset.get("_target_"):
            raise ConfigError(
                "dataset._target_ is missing: a dataset node names its loader, e.g. runner.loaders.random_binary."
            )
        for allow in cfg.allow_targets:
            if (
                not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", str(allow))
                or str(allow).split(".")[0] == "runner"
            ):
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
    parse_memory(cfg.resources.memory)
    parse_gpus(cfg.resources.gpus)
    for key in ("cpus", "timeout"):
        value = cfg.resources[key]
        if value is not None and value <= 0:
            raise ConfigError(f"resources.{key}: {value} must be positive (or null for no limit).")
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
    if not 0 < cfg.train.epochs < math.inf:
        raise ConfigError(f"train.epochs: {cfg.train.epochs} must be a positive number.")
    if cfg.sweep.parallel is not None and cfg.sweep.parallel < 1:
        raise ConfigError(
            f"sweep.parallel: {cfg.sweep.parallel} must be at least 1 (or null: as many as the slots allow)."
        )
    if cfg.sweep.direction not in ("maximize", "minimize"):
        raise ConfigError(f"sweep.direction: '{cfg.sweep.direction}' is not one of: maximize, minimize.")
    parse_all(list(cfg.data))
    for line in cfg.env.requirements:
        check_requirement(str(line), "env.requirements")
    if cfg.env.index_url is not None and not re.match(r"^https?://[^\s'\"]+$", cfg.env.index_url):
        raise ConfigError(
            f"env.index_url: '{cfg.env.index_url}' is not an http(s) URL, e.g. https://pypi.org/simple."
        )
    if cfg.train.steps is not None and cfg.train.steps < 1:
        raise ConfigError(f"train.steps: {cfg.train.steps} must be at least 1 (or null to train by epochs).")
    if cfg.train.schedule not in SCHEDULES:
        raise ConfigError(
            f"train.schedule: '{cfg.train.schedule}' is not a schedule.{suggest(cfg.train.schedule, SCHEDULES)} Valid: {', '.join(SCHEDULES)}."
        )
    if not 0 <= cfg.train.validation_split < 1:
        raise ConfigError(f"train.validation_split: {cfg.train.validation_split} must be in [0, 1).")
    if cfg.train.batch_size < 1:
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} must be at least 1.")
    evaluate = cfg.get("evaluate")
    if evaluate is not None and not OmegaConf.is_dict(evaluate):
        raise ConfigError(
            f"evaluate: '{evaluate}' is not a report node. Give one with a _target_, e.g. "
            "evaluate._target_=runner.mnist.report.evaluate, or null."
        )
    if evaluate is not None:
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
    if cfg.command is not None and not str(cfg.command).strip():
        raise ConfigError("command: empty. Give the command to run, e.g. command='python train.py', or null.")


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


def backend_settings(node: Any) -> Any:
    """The backend's typed settings from its config node. Keys its schema lacks are dropped: a record made
    when every backend shared one set of settings names the Docker ones on a local run too."""
    schema = config_schema(str(node.name))
    known = {f.name for f in fields(schema)}
    given = OmegaConf.to_container(node, resolve=True)
    assert isinstance(given, dict)
    values = {k: v for k, v in given.items() if k in known}
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values))


def build_spec(cfg: DictConfig, *, experiment: str, project_dir: str, environ: Mapping[str, str]) -> RunSpec:
    """The RunSpec for a validated config. `environ` is read for MLFLOW_TRACKING_URI and the CA fallback."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    env = cfg.env
    ca_bundle = env.ca_bundle or environ.get("PIP_CERT") or environ.get("SSL_CERT_FILE") or None
    if ca_bundle:
        ca_bundle = str(Path(project_dir, ca_bundle))  # absolute paths stay as they are
    argv = HARNESS_ARGV if cfg.command is None else command_argv(str(cfg.command))
    tracking_uri = cfg.tracking.uri or environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(project_dir)
    params = flatten(resolved)
    check_param_names(params)
    return RunSpec(
        experiment=experiment,
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
            secrets=tuple(env.secrets),
        ),
        resources=Resources(
            cpus=cfg.resources.cpus,
            memory_bytes=parse_memory(cfg.resources.memory),
            timeout=cfg.resources.timeout,
            gpus=parse_gpus(cfg.resources.gpus),
            idle_timeout=int(cfg.resources.idle_timeout),
        ),
        data=tuple(cfg.data),
        seed=int(cfg.train.seed),
        tracking_uri=tracking_uri,
        # A command of the project's own, with no experiment named: the project's name says what it is.
        mlflow_experiment=cfg.tracking.experiment
        or (Path(project_dir).name if cfg.command is not None and experiment == "default" else experiment),
        allow_targets=tuple(str(a) for a in cfg.allow_targets),
        config_yaml=OmegaConf.to_yaml(escaped(resolved)),
        params=tuple(sorted(params.items())),
        backend_config=backend_settings(cfg.backend),
        detach=bool(cfg.detach),
        session=Session(int(cfg.jupyter.port), str(cfg.jupyter.version)) if cfg.mode == "jupyter" else None,
    )
