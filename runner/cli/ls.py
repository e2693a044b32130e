"""`runner ls`: the project's recent runs, with their key metrics (and a session's address)."""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.compose.load import find_project_dir
from runner.runs import session
from runner.runs.rundir import RunDir
from runner.tracking.compare import KEY_METRICS
from runner.tracking.record import EXPERIMENT
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ls = sub.add_parser("ls", help="recent runs")
    ls.add_argument("--experiment")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_ls)


def cmd_ls(args: argparse.Namespace) -> int:
    project = find_project_dir()
    rows = []
    runs, names = _runs(store_uri(project), args.experiment, args.limit)
    for run in runs:
        row = _row(run, names[run.info.experiment_id])
        row["url"] = _session_url(project, run)
        row["attempt"] = _attempt(project, run)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = f"{'ID':32}  {'EXPERIMENT':16}  {'STATUS':9}  {'START':19}  {'DURATION':>9}  METRICS"
    print(header)
    for r in rows:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in r["metrics"].items())
        print(
            f"{r['id']:32}  {r['experiment'][:16]:16}  {r['status']:9}  {r['start']:19}  "
            f"{r['duration_s']:>8}s  {metrics}"
        )
        if r["status"] == "RUNNING" and r["url"]:
            print(f"{'':34}JupyterLab: {r['url']}")
        if r["status"] == "RUNNING" and r["attempt"]:
            print(f"{'':34}{r['attempt']}")
    return 0


def _runs(uri: str, experiment: str | None, limit: int) -> tuple[list[Any], dict[str, str]]:
    """The runner's latest runs (in `experiment` only, where named), and their experiments' names by id."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exps = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    names = {e.experiment_id: e.name for e in exps if experiment is None or e.name == experiment}
    if not names:
        return [], names
    return list(
        client.search_runs(
            list(names),
            filter_string=f"tags.`{EXPERIMENT}` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    ), names


def _row(run: Any, experiment: str) -> dict[str, Any]:
    info, data = run.info, run.data
    # A resumed run keeps its last attempt's end time while it runs again.
    end = (info.status != "RUNNING" and info.end_time) or int(time.time() * 1000)
    return {
        "id": info.run_id,
        "experiment": experiment,  # as MLflow files it
        "status": info.status,
        "metrics": {k: data.metrics[k] for k in KEY_METRICS if k in data.metrics},
        "start": datetime.fromtimestamp(info.start_time / 1000).isoformat(timespec="seconds"),
        "duration_s": round((end - info.start_time) / 1000, 1),
        "reason": data.tags.get("runner.reason") or None,
    }


def _attempt(project: Path, run: Any) -> str | None:
    """ "attempt 2 of 6" (and the SLURM job it is, or waits, in) for a run of this project on a later attempt or
    allowed more than one."""
    from runner.runs import attempts
    from runner.runs.owner import read_json

    run_dir = RunDir.of(project, run.info.run_id)
    said = attempts.said(run_dir, read_json(run_dir.state) or {}) if run_dir.state.is_file() else ""
    job = (read_json(run_dir.slurm_job) or {}).get("job")
    return (said + (f", SLURM job {job}" if job else "")) or None


def _session_url(project: Path, run: Any) -> str | None:
    """A session's address with its token, from this project's own (owner-only) file; else as recorded."""

    access = session.read(RunDir.of(project, run.info.run_id))
    return session.url(access) if access else run.data.tags.get("runner.session.url")
