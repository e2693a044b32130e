"""A Hydra application's own resolved config as the run's params: the `.hydra/config.yaml` that a command built
with `@hydra.main` writes into its output folder (outputs/DATE/TIME/ under its working directory by default).

The run's folder is the run's to write, so it is read warily: links are never followed, a file is read up to
MAX_BYTES, and a file that is no YAML mapping is passed over with a line in the log, never failing the record.
Several configs (a multirun inside the command): the values they all share are params; the keys whose values
differ are named in the log and are no params (a param holds one value)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runner.compose.spec import flatten

PREFIX = "app."
MAX_BYTES = 1_000_000
MAX_FILES = 100
MAX_PARAMS = 1000
MAX_DEPTH = 32
_BATCH, _MAX_VALUE, _MAX_KEY = 100, 6000, 250  # MLflow's limits


def app_configs(folder: Path, unchanged: dict[str, list[int]]) -> list[Path]:
    """The `.hydra/config.yaml` files under `folder` written during the run (not as the `unchanged` manifest
    has them): regular files only, no linked folder entered; at most MAX_FILES, in path order."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # a linked folder is listed, never entered
        dirnames.sort()
        if os.path.basename(dirpath) != ".hydra" or "config.yaml" not in filenames:
            continue
        path = Path(dirpath, "config.yaml")
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and unchanged.get(str(path.relative_to(folder))) != [
            info.st_size,
            info.st_mtime_ns,
        ]:
            found.append(path)
        if len(found) == MAX_FILES:
            break
    return found


def read_config(path: Path) -> dict[str, str]:
    """A config's values, flattened to dotted keys; ValueError saying why a file is not taken."""
    import yaml

    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
        data = fh.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise ValueError(f"larger than {MAX_BYTES // 1000} kB")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = data.decode()
        _check_shape(yaml.parse(text, Loader=loader))
        node = yaml.load(text, Loader=loader)  # a safe loader: plain values only
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"not YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    if not isinstance(node, dict):
        raise ValueError("not a YAML mapping")
    return flatten(node)


def _check_shape(events: Iterator[Any]) -> None:
    """Before a file is loaded: no alias (it repeats a node without its bytes, and a chain of them grows
    without bound; Hydra writes none) and no nesting past MAX_DEPTH (the parser slows with depth, and loading
    recurses). The events come one by one: a hostile file is refused as soon as it shows it."""
    import yaml

    depth = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("it holds YAML aliases, which Hydra never writes")
        depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")


def shared_values(configs: list[dict[str, str]]) -> tuple[dict[str, str], list[str]]:
    """The values every config holds alike, and the keys whose values differ (or that some lack)."""
    keys = sorted(set().union(*configs)) if configs else []
    alike = {k: configs[0][k] for k in keys if all(c.get(k) == configs[0].get(k) for c in configs)}
    return alike, [k for k in keys if k not in alike]


def app_params(folders: list[tuple[Path, str, dict[str, list[int]]]]) -> tuple[dict[str, str], list[str]]:
    """The params (PREFIX and the config's keys) from the configs written under `folders` ((folder, its name in
    the record, its unchanged manifest)), and lines for the log saying what was taken and what was not."""
    configs, names, said = [], [], []
    for folder, where, unchanged in folders:
        for path in app_configs(folder, unchanged) if folder.is_dir() else []:
            name = f"{where}/{path.relative_to(folder)}"
            try:
                configs.append(read_config(path))
                names.append(name)
            except (OSError, ValueError) as exc:
                said.append(f"{name}: not taken as {PREFIX}* params: {exc}")
    alike, differ = shared_values(configs)
    if differ:
        shown = ", ".join(differ[:10]) + (f" and {len(differ) - 10} more" if len(differ) > 10 else "")
        said.append(f"{len(configs)} Hydra configs differ in {shown}: those are no {PREFIX}* params")
    params = {PREFIX + k: v for k, v in alike.items()}
    if params:
        said.append(
            f"{PREFIX}*: {len(params)} params from {names[0] if len(names) == 1 else ', '.join(names)}"
        )
    return params, said


def log_app_params(
    client: Any, run_id: str, folders: list[tuple[Path, str, dict[str, list[int]]]]
) -> list[str]:
    """Log app_params into the run: names MLflow refuses, keys past MAX_PARAMS and keys the run holds already
    (the command's own mlflow.log_param, say) are left out and said. Returns the lines for the log."""
    from mlflow.entities import Param
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import path_not_unique, validate_param_and_metric_name

    params, said = app_params(folders)
    held = client.get_run(run_id).data.params
    taken = {k: v for k, v in params.items() if k not in held}
    bad = [
        k for k in taken if len(k) > _MAX_KEY or not validate_param_and_metric_name(k) or path_not_unique(k)
    ]
    if bad:
        said.append(f"{len(bad)} {PREFIX}* key(s) MLflow cannot name, left out: {', '.join(bad[:5])}")
    items = [Param(k, v[:_MAX_VALUE]) for k, v in taken.items() if k not in bad][:MAX_PARAMS]
    if len(taken) - len(bad) > MAX_PARAMS:
        said.append(f"{PREFIX}*: only the first {MAX_PARAMS} params are kept")
    clashes = [k for k in sorted(set(params) & set(held)) if held[k] != params[k][:_MAX_VALUE]]
    if clashes:
        said.append(f"{', '.join(clashes[:5])}: the run logged other values already; those are kept")
    for i in range(0, len(items), _BATCH):
        try:
            client.log_batch(run_id, params=items[i : i + _BATCH])
        except MlflowException as exc:
            said.append(
                f"{PREFIX}* params {i + 1}-{i + len(items[i : i + _BATCH])} not recorded: {exc.message}"
            )
    return said
