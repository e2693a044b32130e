"""`runner reproduce`: a run again from its record alone, its drift said first."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from runner.compose.load import find_project_dir
from runner.errors import RunnerError
from runner.launch.reproduce import reproduce
from runner.runs import owner
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    rep = sub.add_parser("reproduce", help="run again from the record alone; report drift first")
    rep.add_argument("run_id")
    rep.add_argument("--check", action="store_true", help="only say what drifted; exit 1 if anything did")
    rep.set_defaults(fn=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:

    project = find_project_dir()
    os.chdir(project)
    return reproduce(store_uri(project), project, _full_id(project, args.run_id), check=args.check)


def _full_id(project: Path, run_id: str) -> str:
    """A run id from any unique start of it, where the run has a directory here; else as given."""

    try:
        return owner.find_run_dir(project, run_id).root.name
    except RunnerError:
        return run_id
