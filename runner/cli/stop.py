"""`runner stop`: a running run ends KILLED, its outputs kept."""

from __future__ import annotations

import argparse

from runner.compose.load import find_project_dir
from runner.launch import sweep_owner
from runner.runs.stop import REASON, stop
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "stop", help="stop a running run (or a sweep, every member); it ends KILLED, outputs kept"
    )
    p.add_argument("run_id", help="a run's id, or a sweep's")
    p.set_defaults(fn=cmd_stop)


def cmd_stop(args: argparse.Namespace) -> int:

    project = find_project_dir()
    folder = sweep_owner.find(project, args.run_id)
    if folder is not None:
        print(sweep_owner.stop(folder, REASON))
        return 0
    print(stop(store_uri(project), project, args.run_id))
    return 0
