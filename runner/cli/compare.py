"""`runner compare` and `runner sweep resume`: runs side by side, a sweep taken up again."""

from __future__ import annotations

import argparse
import json

from runner.cli.run import run_with_hydra
from runner.compose.load import find_project_dir
from runner.errors import RunnerError
from runner.launch import sweep_parent as sweep
from runner.tracking import compare
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmp = sub.add_parser("compare", help="params that differ and final metrics, best first")
    cmp.add_argument("run_ids", nargs="*")
    cmp.add_argument("--sweep", help="compare the members of a sweep")
    cmp.add_argument("--sort", help="metric to sort by (default: the sweep's objective, else test_accuracy)")
    cmp.add_argument("--direction", choices=("maximize", "minimize"))
    cmp.add_argument("--json", action="store_true")
    cmp.set_defaults(fn=cmd_compare)
    sweep_ = sub.add_parser("sweep", help="sweeps")
    sweep_sub = sweep_.add_subparsers(dest="what", required=True)
    resume = sweep_sub.add_parser("resume", help="run the members of a sweep that did not finish")
    resume.add_argument("sweep_id")
    resume.set_defaults(fn=cmd_sweep_resume)


def cmd_compare(args: argparse.Namespace) -> int:

    uri = store_uri(find_project_dir())
    if args.sweep:
        parent = sweep.find_parent(uri, args.sweep)
        runs = sweep.children(uri, parent)
        objective = (
            args.sort or parent.data.tags.get("runner.sweep.objective") or compare.default_objective(runs)
        )
        direction = args.direction or parent.data.tags.get("runner.sweep.direction", "maximize")
    elif args.run_ids:
        runs = compare.load_runs(uri, args.run_ids)
        objective = args.sort or compare.default_objective(runs)
        direction = args.direction or ("minimize" if objective and "loss" in objective else "maximize")
    else:
        raise RunnerError("Give run ids or --sweep SWEEP_ID, e.g. runner compare RUN_A RUN_B")
    result = compare.compare(runs, objective, direction)
    print(json.dumps(result, indent=2) if args.json else compare.render(result))
    return 0


def cmd_sweep_resume(args: argparse.Namespace) -> int:

    parent = sweep.find_parent(store_uri(find_project_dir()), args.sweep_id)
    run_with_hydra(json.loads(parent.data.tags["runner.sweep.argv"]), resume=args.sweep_id)
    return 0
