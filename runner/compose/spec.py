"""RunSpec: everything one run needs, as frozen values; and the pure readings of config values it is made of
(memory, GPUs, a command line, requirement lines). No I/O: compose.build makes a RunSpec, compose.validate checks."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.datasets.entry import DataMount
from runner.errors import ConfigError
from runner.harness.boundedlog import DEFAULT_LIMIT, MIN_LIMIT, size_text

SCHEDULES = ("constant", "cosine")
HARNESS_ARGV = ("python", "-m", "runner.harness.train")
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
    max_attempts: int = 1  # attempts where the engine interrupts the run (runner.runs.attempts)
    log_limit: int | None = DEFAULT_LIMIT  # bytes the run's log keeps (runner.harness.boundedlog); None: all


@dataclass(frozen=True)
class Session:
    """mode=jupyter: JupyterLab on 127.0.0.1:port, this version installed on top of the run's environment."""

    port: int
    version: str


@dataclass(frozen=True)
class RunSpec:
    experiment: str  # the MLflow experiment the run is filed under: printed, listed and tagged as such
    project_dir: str
    backend: str
    argv: tuple[str, ...]
    env: EnvSpec
    resources: Resources
    data: tuple[str, ...]  # NAME@VERSION:MOUNT entries as written
    seed: int
    tracking_uri: str
    config_yaml: str
    params: tuple[tuple[str, str], ...]
    backend_config: Any = None  # the backend's own typed settings (runner/backends/NAME/config.py)
    detach: bool = False
    session: Session | None = None  # mode=jupyter: JupyterLab instead of the command
    mounts: tuple[DataMount, ...] = ()  # `data` resolved to exact versions; filled in by launch.execute
    allow_targets: tuple[str, ...] = ()  # the project's own modules a model or dataset node may name
    code_dir: str = ""  # where the run's code is taken from, when not the project itself (a reproduction)
    autolog: str = ""  # MLflow's autologging in the run's process: "on", "models" (models too), "" (off)

    @property
    def source(self) -> str:
        """The folder the run's code, requirements and version come from; its runs live in project_dir."""
        return self.code_dir or self.project_dir


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


def parse_log_limit(value: Any) -> int | None:
    if value is None:
        return None
    match = _MEMORY.match(str(value).strip())
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0
    if size < MIN_LIMIT:
        said = f"is below the least a log keeps, {size_text(MIN_LIMIT)}" if match else "is not a size"
        raise ConfigError(
            f"resources.log_limit: '{value}' {said}. Use bytes or a number with k, m, g or t, e.g. 64k or 1g "
            "(null: no limit)."
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
    from omegaconf import ListConfig  # here: a SLURM job's process imports this module, never OmegaConf's

    if isinstance(value, ListConfig | list | tuple):
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
