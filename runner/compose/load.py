"""Compose the config tree with Hydra and turn Hydra's errors into one clear line each."""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from runner.compose.schema import PACKAGED, PACKAGED_ROOT, register_configs
from runner.environment.lock import cache_dir, content_hash, write_whole
from runner.errors import ConfigError, suggest

# Hydra composes through one process-wide instance (GlobalHydra): a sweep's members compose in threads, one at a time.
_HYDRA = threading.RLock()

GROUPS = ("experiment", "model", "dataset", "env", "backend", "tracking")


def find_project_dir(start: Path | None = None) -> Path:
    """The project: the nearest directory at or above `start` with the runner's state (.runner) or a git
    repository; else (a folder that is no git repository) the nearest with a conf/ folder."""
    here = (start or Path.cwd()).resolve()
    for marks in ((".runner", ".git"), ("conf",)):
        for candidate in (here, *here.parents):
            if any((candidate / mark).exists() for mark in marks):
                return candidate
    raise ConfigError(
        f"{here} is not inside a project (no git repository, conf/ or .runner/ here or above). The runner records "
        "your code by its commit: git init && git add -A && git commit -m start, then runner init."
    )


def config_dirs(project_dir: Path) -> list[Path]:
    """Where configs are looked up, first match wins: the project's conf/ (when it has one), then the runner's."""
    own = project_dir / "conf"
    return [own, PACKAGED] if own.is_dir() and own.resolve() != PACKAGED else [PACKAGED]


def primary(project_dir: Path) -> tuple[Path, str]:
    """Hydra's config folder and root config's name: the project's conf/ and its config.yaml, or the runner's
    root config when the project's conf/ has none (or there is no project conf/ at all)."""
    first = config_dirs(project_dir)[0]
    return first, "config" if own_root(first / "config.yaml") else PACKAGED_ROOT


def own_root(path: Path) -> bool:
    """Whether `path` is a root config for the runner (it builds on the runner's schema), not the root config of
    the project's own Hydra application, which many projects keep at conf/config.yaml too."""
    try:
        return path == PACKAGED / "config.yaml" or "runner_schema" in path.read_text()
    except OSError:
        return False


# Hydra's flags that take a value of their own (`--cfg job`): that value is no override.
VALUED_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")  # fmt: skip


def hydra_argv(project_dir: Path, argv: list[str]) -> list[str]:
    """`argv` for Hydra with the rest of the config search path (config_dirs after the primary folder) among the
    overrides: Hydra's parser takes its overrides as one group, so they go just before the first override
    given (after `-m` and other flags), or last when none is."""
    argv = [spelled_out(a) for a in argv]
    rest = config_dirs(project_dir)[1:]
    if not rest:
        return argv
    quoted = ",".join("'file://" + str(d).replace("\\", "\\\\").replace("'", "\\'") + "'" for d in rest)
    at, i = len(argv), 0
    while i < len(argv):
        if argv[i] in VALUED_FLAGS:
            i += 2
            continue
        if not argv[i].startswith("-"):
            at = i
            break
        i += 1
    return [*argv[:at], f"hydra.searchpath=[{quoted}]", *argv[at:]]


def spelled_out(override: str) -> str:
    """`autolog=false` (or true) is `autolog.enabled=false`: the short form a switch deserves."""
    key, eq, value = override.partition("=")
    if eq and key == "autolog" and value.lower() in ("true", "false"):
        return f"autolog.enabled={value.lower()}"
    return override


def check_hydra_args(project_dir: Path, argv: list[str]) -> DictConfig:
    """A sweep's command line as Hydra takes it (its flags; the hydra.* and hydra/ overrides, which the runner's
    own composition leaves to Hydra; the sweeper's settings), refused in one line before the sweep's parent run
    exists; the config Hydra composes for it, its `hydra` node included (the sweeper's settings, the overrides)."""
    from hydra._internal.utils import get_args_parser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    args, unknown = get_args_parser().parse_known_args(argv)
    if unknown:
        raise ConfigError(f"'{unknown[0]}' is not a flag Hydra takes (its flags: runner --help).")
    register_configs()
    folder, name = primary(project_dir)
    with _HYDRA:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
                return GlobalHydra.instance().hydra.compose_config(  # type: ignore[union-attr]
                    args.config_name or name,
                    hydra_argv(project_dir, args.overrides),
                    run_mode=RunMode.MULTIRUN,
                    from_shell=True,
                    with_log_configuration=False,
                )
        except HydraException as exc:
            raise ConfigError(f"Hydra refuses the sweep: {_one_line(exc)}") from exc
        finally:
            GlobalHydra.instance().clear()


def _one_line(exc: Exception) -> str:
    """Hydra's message, its cause and the options it lists, on one line."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    said = lines[0].rstrip(".")
    if exc.__cause__ is not None and str(exc.__cause__).strip():
        said += f" ({str(exc.__cause__).splitlines()[0]})"
    listed = next((i for i, ln in enumerate(lines) if ln.startswith("Available options")), None)
    if listed is not None:
        end = next((i for i, ln in enumerate(lines) if ln.startswith("Config search path")), len(lines))
        said += f". Available: {', '.join(ln for ln in lines[listed + 1 : end] if ln)}"
    return said + "."


def options(project_dir: Path, group: str) -> list[str]:
    return sorted({p.stem for d in config_dirs(project_dir) for p in (d / group).glob("*.yaml")})


def _parse(overrides: list[str]) -> list[Any]:
    try:
        return list(OverridesParser.create().parse_overrides(overrides))
    except OverrideParseException as exc:
        detail = " ".join(ln.strip() for ln in str(exc).splitlines()[:2] if not ln.startswith("See "))
        raise ConfigError(
            f"Cannot parse the overrides ({detail}). Quote a value that holds spaces, quotes or commas as a whole, "
            "e.g. 'command=\"python train.py --name x\"'."
        ) from exc


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """Override lists that together use every value of every sweep once: the first values, then each other
    value of each sweep with the first values of the rest. Checking these checks a sweep before it starts."""
    parsed = _parse(overrides)
    values = [_values(raw, ov) for raw, ov in zip(overrides, parsed, strict=True)]
    base = [v[0] for v in values]
    variants = [base]
    for i, vs in enumerate(values):
        variants += [[*base[:i], v, *base[i + 1 :]] for v in vs[1:]]
    return variants


def _values(raw: str, ov: Any) -> list[str]:
    if not ov.is_sweep_override():
        return [raw]
    # A sweeper samples an interval: its bounds stand for it.
    if ov.is_interval_sweep():
        interval = ov.value()
        return [f"{ov.get_key_element()}={interval.start}", f"{ov.get_key_element()}={interval.end}"]
    return [f"{ov.get_key_element()}={v}" for v in ov.sweep_string_iterator()]


def experiment_of(overrides: list[str]) -> str:
    """The experiment the overrides choose (`+experiment=NAME`, the last one), else "default"."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("experiment=")]
    return chosen[-1] if chosen else "default"


def compose_config(project_dir: Path, overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with overrides; raises ConfigError with a clear message.

    A composed config is kept (pickled, unresolved: interpolations still resolve when read) under the key of
    its inputs: the overrides, every file of the project's conf/ (name, size, time) and the runner's code.
    Hydra takes a tenth of a second to compose; reading it back takes a millisecond."""
    cfg = composed_before(project_dir, overrides)
    if cfg is not None:
        return cfg
    _check_empty_groups(project_dir, overrides)
    cached = _cached(project_dir, overrides)
    register_configs()
    with explained(project_dir, overrides):
        cfg = _compose(project_dir, overrides)
    write_whole(cached, pickle.dumps(cfg))
    return cfg


def _check_empty_groups(project_dir: Path, overrides: list[str]) -> None:
    """A choice in a group that has no option anywhere (a project without models or experiments of its own): Hydra
    would take `+experiment=x` for a plain value, so it is refused here, as an unknown option is."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and key in GROUPS and value not in ("", "null") and not options(project_dir, key):
            raise ConfigError(
                f"Unknown {key} '{value}'. Available: (none): add conf/{key}/{value}.yaml to the project."
            )


@contextlib.contextmanager
def explained(project_dir: Path, overrides: list[str]) -> Iterator[None]:
    """Hydra's composition errors inside, for `overrides`, as the runner's one clear line (a ConfigError)."""
    try:
        yield
    except MissingConfigException as exc:
        raise _missing_group_option(project_dir, exc) from exc
    except ConfigCompositionException as exc:
        raise _bad_override(project_dir, overrides, exc) from exc


def composed_before(project_dir: Path, overrides: list[str]) -> DictConfig | None:
    """The config these overrides composed to before (so they parse, and name one run), or None."""
    try:
        with open(_cached(project_dir, overrides), "rb") as fh:
            cfg = pickle.load(fh)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        return None
    return cfg if isinstance(cfg, DictConfig) else None


def _cached(project_dir: Path, overrides: list[str]) -> Path:
    return cache_dir() / "compose" / f"{_compose_key(project_dir, overrides)}.pkl"


def _compose_key(project_dir: Path, overrides: list[str]) -> str:
    from runner.agent.wire import loaded

    parts = [loaded(), str(project_dir), *(f"override {o}" for o in overrides)]
    # The runner's own configs and the project's conf/, as they are now (the code's fingerprint is found once per
    # process, and a sweep's driver composes for hours).
    for dirpath, dirnames, filenames in itertools.chain(os.walk(PACKAGED), os.walk(project_dir / "conf")):
        dirnames.sort()
        for name in sorted(filenames):
            info = os.stat(os.path.join(dirpath, name))
            parts.append(f"{dirpath}/{name}:{info.st_size}:{info.st_mtime_ns}")
    return content_hash("\n".join(parts))


def _compose(project_dir: Path, overrides: list[str]) -> DictConfig:
    folder, name = primary(project_dir)
    with _HYDRA:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
                return compose(name, overrides=hydra_argv(project_dir, overrides))
        finally:
            GlobalHydra.instance().clear()


def _missing_group_option(project_dir: Path, exc: MissingConfigException) -> ConfigError:
    name = str(exc.missing_cfg_file or "")
    group, _, choice = name.rpartition("/")
    if group in GROUPS:
        avail = options(project_dir, group)
        return ConfigError(
            f"Unknown {group} '{choice}'.{suggest(choice, avail)} Available: {', '.join(avail) or '(none)'}."
        )
    return ConfigError(str(exc).splitlines()[0])


def _bad_override(project_dir: Path, overrides: list[str], exc: ConfigCompositionException) -> ConfigError:
    cause = exc.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError):
        key = str(cause.full_key or "")
        parent, _, leaf = key.rpartition(".")
        known = _keys_at(
            project_dir, [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key], parent
        )
        hint = suggest(leaf, known)
        where = f"'{parent}'" if parent else "the config"
        if not known and parent in GROUPS:
            return ConfigError(
                f"Unknown key '{key}': no {parent} is chosen. Choose one first, e.g. +experiment=NAME or "
                f"{parent}=NAME ({', '.join(options(project_dir, parent)) or f'none in conf/{parent}/'})."
            )
        return ConfigError(f"Unknown key '{key}'.{hint} Keys in {where}: {', '.join(known)}.")
    if isinstance(cause, ValidationError):
        msg = str(cause.msg).splitlines()[0]
        return ConfigError(f"{cause.full_key}: {msg}.")
    return ConfigError(str(exc).splitlines()[0])


def _keys_at(project_dir: Path, overrides: list[str], parent: str) -> list[str]:
    """Keys under `parent` in the config composed from the group choices alone."""
    choices = [o for o in overrides if "." not in o.split("=", 1)[0]]
    try:
        cfg = _compose(project_dir, choices)
    except Exception:
        return []
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
