"""Command line: `runner [OVERRIDES...]` runs a config through Hydra; `runner VERB ...` manages runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from runner.errors import RunnerError

VERBS = ("ls", "logs", "ui", "gc", "image", "data")
# Hydra's own flags: passed through to Hydra untouched, no pre-flight.
_HYDRA_INFO_FLAGS = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--resolve",
    "--package",
    "-p",
)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in VERBS:
            from runner import commands

            sys.exit(commands.dispatch(argv))
        run_with_hydra(argv)
    except RunnerError as exc:
        if os.environ.get("RUNNER_TRACEBACK"):
            raise
        print(f"runner: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)


def _preflight_overrides(argv: list[str]) -> list[str] | None:
    """The config overrides to check before Hydra runs, or None where Hydra only prints something."""
    if any(a.split("=", 1)[0] in _HYDRA_INFO_FLAGS for a in argv):
        return None
    return [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def run_with_hydra(argv: list[str]) -> None:
    import hydra

    from runner.compose import compose_config, find_project_dir, first_of_sweeps
    from runner.config import register_configs
    from runner.spec import validate

    project = find_project_dir()
    os.chdir(project)  # MLflow's relative defaults (mlruns/) then match `mlflow ui` started here
    overrides = _preflight_overrides(argv)
    if overrides is not None:
        cfg = compose_config(project, first_of_sweeps(overrides))
        validate(cfg)  # every config error surfaces here: before Hydra, a run, or a build

    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(version_base="1.3", config_path=str(project / "conf"), config_name="config")(task)()


def task(cfg: object) -> float | None:
    """Hydra's task function: one run. Returns the objective for sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from runner.launch import execute
    from runner.spec import build_spec, validate

    assert isinstance(cfg, DictConfig)
    experiment = HydraConfig.get().runtime.choices.get("experiment") or "default"
    try:
        validate(cfg)
        spec = build_spec(cfg, experiment=experiment, project_dir=str(Path.cwd()), environ=os.environ)
        result = execute(spec)
    except RunnerError as exc:
        if os.environ.get("RUNNER_TRACEBACK"):
            raise
        print(f"runner: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    if result.outcome.status != "FINISHED":
        raise SystemExit(1)
    return None
