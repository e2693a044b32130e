"""`runner [OVERRIDES...]` and `runner run ... -- COMMAND`: a config through Hydra, as one run or a sweep."""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import ConfigError, RunnerError
from runner.runs.rundir import LIVE, RunDir

if TYPE_CHECKING:
    from runner.launch.sweep_parent import Sweep

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


def _preflight_overrides(argv: list[str]) -> list[str] | None:
    """The config overrides to check before Hydra runs, or None where Hydra only prints something."""
    if any(a.split("=", 1)[0] in _HYDRA_INFO_FLAGS for a in argv):
        return None
    return [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


RUN_USAGE = "runner run [OVERRIDES...] -- COMMAND [ARGS...], e.g. runner run -- python train.py --lr 0.01"


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`runner run`'s overrides, and the command after `--` (None when there is no `--`)."""
    if "--" not in argv:
        return argv, None
    at = argv.index("--")
    overrides, command = argv[:at], argv[at + 1 :]
    if not command:
        raise ConfigError(f"runner run: nothing after '--' to run. Usage: {RUN_USAGE}")
    if any(a in ("-m", "--multirun") for a in overrides):
        raise ConfigError(
            "runner run: a sweep (-m) changes config values, which a command given after '--' does not read. "
            "Sweep a config whose command= names them, e.g. command='python train.py --lr ${train.learning_rate}'."
        )
    flags = [a for a in overrides if a.startswith("-")]
    if flags:
        raise ConfigError(
            f"runner run: '{flags[0]}' before '--': only config overrides go there (KEY=VALUE). Usage: {RUN_USAGE}"
        )
    return overrides, command


def with_command(cfg: Any, command: list[str] | None) -> Any:
    """`cfg` running `command` exactly (quoted for the shell word by word; `${` kept from OmegaConf)."""
    from runner.compose.spec import escaped

    if command is not None:
        cfg = cfg.copy()
        cfg.command = escaped(shlex.join(command))
    return cfg


def run_with_hydra(argv: list[str], resume: str | None = None, command: list[str] | None = None) -> None:
    from runner.compose.load import (
        compose_config,
        composed_before,
        experiment_of,
        find_project_dir,
        sweep_variants,
    )
    from runner.compose.validate import validate

    project = find_project_dir()
    # MLflow's relative defaults (mlruns/) then match `mlflow ui` started here.
    os.chdir(project)
    threading.Thread(target=_open_early, args=(project,), daemon=True).start()
    overrides = _preflight_overrides(argv)
    # Hydra prints something (--cfg, --help, ...).
    if overrides is None:
        _hydra_main(project, argv)
        return
    multirun = any(a in ("-m", "--multirun") for a in argv)
    single = None if multirun else composed_before(project, overrides)
    # Composed before: one run, and valid.
    if single is not None and not any(a.startswith("-") for a in argv):
        single = with_command(single, command)
        validate(single)
        sys.exit(run_one(single, experiment_of(argv), project, {}, overrides))
    variants = sweep_variants(overrides)
    if not multirun and len(variants) > 1:
        swept = next(o for o in overrides if o not in variants[0])
        raise ConfigError(
            f"'{swept}' holds several values: to sweep over them add -m (runner -m ...); for a list write "
            "key=[a,b]; for a string with a comma quote it: key='a,b'."
        )
    cfg = None
    for variant in variants:
        cfg = with_command(compose_config(project, variant), command)
        # Every config error surfaces here: before Hydra, a run, or a build.
        validate(cfg)
    assert cfg is not None
    if multirun:
        run_sweep(argv, compose_config(project, variants[0]), project, resume)
    elif any(a.startswith("-") for a in argv):
        # Hydra's other flags: Hydra's own app runs the task.
        _hydra_main(project, argv)
    else:
        # One run: composed and checked once, as above; Hydra's app would compose it four times more.
        sys.exit(run_one(cfg, experiment_of(argv), project, {}, overrides))


def _open_early(project: Path) -> None:
    """Open the project's existing store and the Docker engine's connection while the config is composed:
    a run needs both, and each takes a few hundredths of a second. Nothing is created here."""
    from runner.tracking.store import store_uri

    uri = store_uri(project)
    with contextlib.suppress(Exception):
        if uri.startswith("sqlite:///") and Path(uri[len("sqlite:///") :]).is_file():
            from mlflow import MlflowClient

            from runner.tracking.record import store_init_lock

            with store_init_lock(uri):
                MlflowClient(uri).get_experiment_by_name("Default")
    with contextlib.suppress(Exception):
        from runner.backends.docker import client

        client()


def _hydra_main(project: Path, argv: list[str]) -> None:
    import hydra

    from runner.compose.schema import register_configs

    register_configs()
    from runner.compose.load import hydra_argv, primary

    sys.argv = [sys.argv[0], *hydra_argv(project, argv)]
    folder, name = primary(project)
    hydra.main(version_base="1.3", config_path=str(folder), config_name=name)(task)()


def owner_of_sweep_members(project: Path, parent_id: str) -> int:
    """How many of a sweep's members have not ended (a submitted sweep's jobs go on after its command)."""
    from runner.runs import owner

    live = project / LIVE
    markers = live.iterdir() if live.is_dir() else []
    states = [owner.read_json(RunDir(Path(m.read_text().strip())).state) or {} for m in markers]
    return sum(1 for s in states if s.get("sweep_parent") == parent_id)


def open_sweep(
    argv: list[str], cfg: Any, spec: Any, project: Path, resume: str | None, sweeper: str
) -> Sweep:
    """The sweep to run: a new one under a new MLflow parent run, or `resume`'s, reopened once none of its
    members is queued or running."""
    from runner.launch import sweep_owner, sweep_parent
    from runner.runs import owner
    from runner.runs.rundir import SweepDir

    if not resume:
        sweep_id, parent_id = sweep_parent.start_parent(
            spec.tracking_uri, spec.experiment, argv, sweeper, cfg
        )
        return sweep_parent.Sweep(sweep_id, parent_id, sweeper, cfg.sweep.objective)
    parent = sweep_parent.find_parent(spec.tracking_uri, resume)
    folder = SweepDir.of(project, resume)
    going = owner_of_sweep_members(project, parent.info.run_id)
    if going or (folder.root.is_dir() and owner.owned(folder)) or parent.info.status == "RUNNING":
        raise RunnerError(
            f"sweep {resume} is still going ({going} member(s) queued or running): follow it with "
            f"runner attach {resume}, or resume it once it has ended (runner ls)."
        )
    sweep_owner.reopen(folder)
    sweep_parent.reopen_parent(spec.tracking_uri, parent.info.run_id)
    return sweep_parent.Sweep(resume, parent.info.run_id, sweeper, cfg.sweep.objective)


def check_sweep(hydra: Any, cfg: Any, sweeper: str) -> None:
    """What the runner's own driver takes from Hydra: the basic and Optuna sweepers' syntax and settings."""
    from runner.launch import sweep_parent

    launcher = hydra.runtime.choices.get("hydra/launcher")
    if launcher not in (None, "basic"):
        raise ConfigError(
            f"hydra/launcher={launcher}: the runner starts a sweep's members itself, sweep.parallel at a time "
            "(each in its own CPU/GPU slot); leave hydra/launcher out."
        )
    sweep_parent.check_objective(cfg, sweeper)
    pruner = cfg.sweep.pruner
    if pruner is None:
        return
    if sweeper != "optuna":
        raise ConfigError(
            f"sweep.pruner={pruner} stops an Optuna sweep's poor trials early: add hydra/sweeper=optuna (a grid "
            "runs every member to its end)."
        )
    known = sweep_parent.known_metrics(cfg)
    if known is not None and str(cfg.sweep.objective).startswith("test_"):
        every = ", ".join(sorted(m for m in known if not m.startswith("test_") and m != "duration_s"))
        raise ConfigError(
            f"sweep.pruner needs an objective logged every epoch; '{cfg.sweep.objective}' is logged once, at the "
            f"end. Every epoch: {every}."
        )


def run_sweep(argv: list[str], cfg: Any, project: Path, resume: str | None) -> None:
    """A multirun under one MLflow parent run, driven by its own owner (runner.launch.sweep_owner) and followed
    here (detach=true: not followed); on a scheduler, a grid is submitted at once as one job array."""
    from runner.backends import backend_class
    from runner.compose.build import build_spec
    from runner.compose.load import check_hydra_args, experiment_of
    from runner.launch import sweep_owner
    from runner.runs.rundir import SweepDir

    hydra = check_hydra_args(project, argv).hydra
    sweeper = hydra.runtime.choices.get("hydra/sweeper") or "basic"
    check_sweep(hydra, cfg, sweeper)
    spec = build_spec(cfg, chosen=experiment_of(argv), project_dir=str(project), environ=os.environ)
    if sweeper == "optuna" and not any(a.startswith("hydra.sweeper.direction=") for a in argv):
        argv = [*argv, f"hydra.sweeper.direction={cfg.sweep.direction}"]
    sweep = open_sweep(argv, cfg, spec, project, resume, sweeper)
    print(
        f"[sweep {sweep.id}] parent run {sweep.parent}; resume with: runner sweep resume {sweep.id}",
        flush=True,
    )
    if backend_class(spec.backend).sweeps_at_once and sweeper == "basic":
        submit_sweep(sweep, hydra, project, spec, resume)
        return
    plan = {
        "argv": argv,
        "project": str(project),
        "sweeper": sweeper,
        "objective": cfg.sweep.objective,
        "pruner": cfg.sweep.pruner,
        "parallel": cfg.sweep.parallel,
        "fail_fast": bool(cfg.sweep.fail_fast),
        "backend": spec.backend,
        "overrides": _preflight_overrides(argv),
    }
    log = SweepDir.of(project, sweep.id).log
    offset = log.stat().st_size if log.exists() else 0  # resumed: from where its new round starts
    folder = sweep_owner.begin(project, sweep, spec.tracking_uri, plan)
    if cfg.detach:
        print(
            f"[sweep {sweep.id}] started in the background.\n  follow it: runner attach {sweep.id}   (or: runner "
            f"logs -f {sweep.id})\n  stop it:   runner stop {sweep.id}",
            flush=True,
        )
        sys.exit(0)
    sys.exit(follow_sweep(folder, offset))


def follow_sweep(folder: Any, offset: int = 0, interrupt_stops: bool = True) -> int:
    """Follow a sweep's log to its end (Ctrl-C stops it); the exit code its ending makes."""
    from runner.launch import sweep_owner

    try:
        ended = sweep_owner.follow(folder, sys.stdout, offset, interrupt_stops)
    except KeyboardInterrupt:
        return 130
    return 0 if ended.get("status") == "FINISHED" else 1


def submit_sweep(sweep: Sweep, hydra: Any, project: Path, spec: Any, resume: str | None) -> None:
    """A grid on a scheduler: every member submitted at once as one job array; the last member to end closes
    the parent, and the terminal may close."""
    from runner.launch import sweep_parent
    from runner.launch.sweep import compose_member, submit_members
    from runner.launch.trials import Grid, grid, task_overrides
    from runner.runs import owner

    driver = owner.hold_sweep(project, sweep.id, sweep.parent, spec.tracking_uri)
    try:
        source = Grid(grid(hydra.sweeper, task_overrides(hydra)), set())
        members = [compose_member(project, t, "basic") for t in source.trials]
        done = set()
        if resume:
            kids = sweep_parent.children(
                spec.tracking_uri, sweep_parent.find_parent(spec.tracking_uri, sweep.id)
            )
            done = {k.data.tags.get(sweep_parent.MEMBER, "") for k in kids if k.info.status == "FINISHED"}
        submit_members(sweep, members, done, lambda line: print(line, flush=True))
    except BaseException as exc:
        error = str(exc) if isinstance(exc, RunnerError) else f"the sweep stopped early: {exc}"
        status = sweep_parent.finish_parent(
            spec.tracking_uri, sweep.parent, isinstance(exc, KeyboardInterrupt), error
        )
        owner.release_sweep(project, sweep.id, driver)
        print(f"[sweep {sweep.id}] {status}", flush=True)
        raise
    owner.release_sweep(project, sweep.id, driver, submitted=True)
    owner.settle_sweeps(project)
    print(
        f"[sweep {sweep.id}] submitted: its parent run {sweep.parent} ends when its last member does. The "
        f"terminal may close.\n  follow: runner ls   compare: runner compare --sweep {sweep.id}",
        flush=True,
    )
    sys.exit(0)


def task(cfg: object) -> float | None:
    """Hydra's task function: one run (the config Hydra composed, where Hydra's own flags were given)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from runner.compose.validate import validate

    assert isinstance(cfg, DictConfig)
    hydra_cfg = HydraConfig.get()
    chosen = hydra_cfg.runtime.choices.get("experiment") or "default"
    try:
        validate(cfg)
    except RunnerError as exc:
        if os.environ.get("RUNNER_TRACEBACK"):
            raise
        print(f"runner: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    code = run_one(cfg, chosen, Path.cwd(), {}, list(hydra_cfg.overrides.task))
    if code:
        raise SystemExit(code)
    return None


def run_one(cfg: Any, chosen: str, project: Path, tags: dict[str, str], overrides: Sequence[str] = ()) -> int:
    """One run of a composed, validated config (`chosen`: its experiment config), attached or detached; its
    exit code. `overrides`: the user's, recorded as params whether the run reads them or not (compose.params)."""
    from runner.compose.build import build_spec
    from runner.launch.execute import execute

    try:
        spec = build_spec(
            cfg, chosen=chosen, project_dir=str(project), environ=os.environ, overrides=overrides
        )
        # Under `mlflow run`, record into the run it made (not for sweep members: each gets its own).
        given_run = None if tags else os.environ.get("MLFLOW_RUN_ID")
        result = execute(spec, extra_tags=tags, given_run=given_run)
    except RunnerError as exc:
        if os.environ.get("RUNNER_TRACEBACK"):
            raise
        print(f"runner: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    # Submitted: a job on the cluster owns it.
    if result.job is not None:
        print(
            f"[runner] run {result.run_id} submitted: SLURM job {result.job}. The terminal may close.\n"
            f"  follow it: runner logs -f {result.run_id}   (list: runner ls)\n"
            f"  stop it:   runner stop {result.run_id}",
            flush=True,
        )
        return 0
    # Detached: it goes on under its owner.
    if result.outcome is None:
        print(
            f"[runner] run {result.run_id} started in the background.\n"
            f"  follow it: runner attach {result.run_id}   (or: runner logs -f {result.run_id})\n"
            f"  stop it:   runner stop {result.run_id}",
            flush=True,
        )
        return 0
    return 0 if result.outcome.status == "FINISHED" else 1
