"""`runner gc` and `runner image base`: what the engines keep that no run needs, and the base image."""

from __future__ import annotations

import argparse

from runner.backends import NAMES, get_backend
from runner.compose.load import find_project_dir
from runner.environment.base_image import build_base
from runner.errors import RunnerError
from runner.runs import attempts, space
from runner.runs.rundir import RUNS
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    gc = sub.add_parser("gc", help="remove stopped containers and unused images the runner made")
    gc.set_defaults(fn=cmd_gc)
    image = sub.add_parser("image", help="base images")
    image_sub = image.add_subparsers(dest="what", required=True)
    base = image_sub.add_parser(
        "base",
        help="build a Python base image from Debian's packages (no registry needed); kept when its recipe is current",
    )
    base.add_argument("--tag", default="runner-base:bookworm")
    base.add_argument("--suite", default="bookworm")
    base.add_argument("--mirror", default="http://deb.debian.org/debian")
    base.add_argument("--force", action="store_true", help="build even when the image's recipe is current")
    base.set_defaults(fn=cmd_image)


def cmd_gc(args: argparse.Namespace) -> int:
    """Each backend removes what it keeps that no run needs; a backend that is not here (no engine) is said."""

    for name in NAMES:
        try:
            said = get_backend(name).gc()
        except RunnerError as exc:
            said = f"skipped: {exc}"
        if said:
            print(f"{name}: {said}")
    try:  # the checkpoints of this project's runs, when run in one
        project = find_project_dir()
    except RunnerError:
        return 0
    said = attempts.gc(project, store_uri(project)) if (project / RUNS).is_dir() else None
    if said:
        print(f"checkpoints: {said}")
    said = space.free_deleted_runs(project, store_uri(project))
    if said:
        print(f"runs: {said}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:

    build_base(args.tag, args.suite, args.mirror, force=args.force)
    return 0
