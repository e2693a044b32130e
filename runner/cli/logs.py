"""`runner logs` and `runner attach`: a run's output, as it comes or from its record."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.cli.run import follow_sweep
from runner.compose.load import find_project_dir
from runner.errors import RunnerError
from runner.launch import sweep_owner
from runner.runs import owner
from runner.tracking.logtext import raw_log
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    logs = sub.add_parser("logs", help="a run's stdout/stderr (a sweep's: its members started and ended)")
    logs.add_argument("run_id", help="a run's id, or a sweep's")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(fn=cmd_logs)
    attach = sub.add_parser(
        "attach", help="follow a run (or a sweep) from the start of its log; Ctrl-C stops it"
    )
    attach.add_argument("run_id", help="a run's id, or a sweep's")
    attach.set_defaults(fn=cmd_attach)


def cmd_logs(args: argparse.Namespace) -> int:

    project = find_project_dir()
    folder = sweep_owner.find(project, args.run_id)
    if folder is not None:
        if args.follow:
            return follow_sweep(folder, interrupt_stops=False)
        sys.stdout.write(folder.log.read_text(errors="replace") if folder.log.exists() else "")
        return 0
    try:
        run_dir = owner.find_run_dir(project, args.run_id)
    except RunnerError:
        return _logs_from_store(store_uri(project), args.run_id)  # a run made elsewhere: its log artifact
    if args.follow and (run_dir.state).is_file():
        try:
            owner.follow(run_dir, sys.stdout, interrupt_stops=False)
        except KeyboardInterrupt:
            return 130
        return 0
    # As it came: a progress bar's carriage returns redraw it on the terminal, as they did while it ran.
    sys.stdout.write(raw_log(run_dir.log))
    return 0


def _logs_from_store(uri: str, run_id: str) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        sys.stdout.write(raw_log(Path(MlflowClient(uri).download_artifacts(run_id, "run.log"))))
        return 0
    except MlflowException as exc:
        raise RunnerError(f"No run {run_id} with a log in {uri}. List runs with: runner ls") from exc


def cmd_attach(args: argparse.Namespace) -> int:
    """Follow a run from the start of its log, as if it had been started here: Ctrl-C stops it (KILLED)."""

    project = find_project_dir()
    folder = sweep_owner.find(project, args.run_id)
    if folder is not None:
        return follow_sweep(folder)
    run_dir = owner.find_run_dir(project, args.run_id)
    if not (run_dir.state).is_file():
        raise RunnerError(f"Run {args.run_id} was not started by this runner here: see it with runner logs")
    try:
        outcome = owner.follow(run_dir, sys.stdout)
    except KeyboardInterrupt:
        return 130
    return 0 if outcome.status == "FINISHED" else 1
