"""`runner resume RUN_ID`: a KILLED or FAILED run continues from its last checkpoint, in the same MLflow run."""

from __future__ import annotations

import argparse

from runner.compose.load import find_project_dir
from runner.launch.resume import resume
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "resume", help="continue a KILLED or FAILED run from its last checkpoint, in the same run"
    )
    p.add_argument("run_id")
    p.add_argument(
        "--from-scratch", action="store_true", help="start its training over (no checkpoint needed)"
    )
    p.add_argument("--detach", action="store_true", help="return once it has started")
    p.set_defaults(fn=cmd_resume)


def cmd_resume(args: argparse.Namespace) -> int:
    project = find_project_dir()
    return resume(
        store_uri(project), project, args.run_id, from_scratch=args.from_scratch, detach=args.detach
    )
