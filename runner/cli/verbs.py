"""The management verbs: init, ls, logs, ui, stop, compare, sweep, reproduce, data, gc, image."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.tracking.compare import KEY_METRICS
from runner.tracking.store import store_uri


def _project() -> Path:
    from runner.compose.load import find_project_dir

    return find_project_dir()


def _runs(uri: str, experiment: str | None, limit: int) -> list[Any]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exps = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    ids = [e.experiment_id for e in exps if experiment is None or e.name == experiment]
    if not ids:
        return []
    return list(
        client.search_runs(
            ids,
            filter_string="tags.`runner.experiment` != ''",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
    )


def _row(run: Any) -> dict[str, Any]:
    info, data = run.info, run.data
    end = info.end_time or int(time.time() * 1000)
    return {
        "id": info.run_id,
        "experiment": data.tags.get("runner.experiment", ""),
        "status": info.status,
        "metrics": {k: data.metrics[k] for k in KEY_METRICS if k in data.metrics},
        "start": datetime.fromtimestamp(info.start_time / 1000).isoformat(timespec="seconds"),
        "duration_s": round((end - info.start_time) / 1000, 1),
        "reason": data.tags.get("runner.reason") or None,
    }


def _session_url(project: Path, run: Any) -> str | None:
    """A session's address with its token, from this project's own (owner-only) file; else as recorded."""
    from runner.runs import session

    access = session.read(project / ".runner" / "runs" / run.info.run_id)
    return session.url(access) if access else run.data.tags.get("runner.session.url")


def cmd_ls(args: argparse.Namespace) -> int:
    project = _project()
    rows = []
    for run in _runs(store_uri(project), args.experiment, args.limit):
        row = _row(run)
        row["url"] = _session_url(project, run)
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
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from runner.runs import owner

    project = _project()
    try:
        run_dir = owner.find_run_dir(project, args.run_id)
    except RunnerError:
        return _logs_from_store(store_uri(project), args.run_id)  # a run made elsewhere: its log artifact
    if args.follow and (run_dir / owner.STATE).is_file():
        try:
            owner.follow(run_dir, sys.stdout, interrupt_stops=False)
        except KeyboardInterrupt:
            return 130
        return 0
    with open(run_dir.log, encoding="utf-8", errors="replace") as fh:
        sys.stdout.write(fh.read())
    return 0


def _logs_from_store(uri: str, run_id: str) -> int:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        sys.stdout.write(Path(MlflowClient(uri).download_artifacts(run_id, "run.log")).read_text())
        return 0
    except MlflowException as exc:
        raise RunnerError(f"No run {run_id} with a log in {uri}. List runs with: runner ls") from exc


def cmd_attach(args: argparse.Namespace) -> int:
    """Follow a run from the start of its log, as if it had been started here: Ctrl-C stops it (KILLED)."""
    from runner.runs import owner

    run_dir = owner.find_run_dir(_project(), args.run_id)
    if not (run_dir / owner.STATE).is_file():
        raise RunnerError(f"Run {args.run_id} was not started by this runner here: see it with runner logs")
    try:
        outcome = owner.follow(run_dir, sys.stdout)
    except KeyboardInterrupt:
        return 130
    return 0 if outcome.status == "FINISHED" else 1


def cmd_notebook_pull(args: argparse.Namespace) -> int:
    """Copy what a session (or any run) wrote in its working directory back into the project; a project file
    changed since the session started is left alone, and named."""
    from runner.harness.shim import write_json
    from runner.runs import owner, session
    from runner.tracking.record import CODE_MANIFEST

    project = _project()
    run_dir = owner.find_run_dir(project, args.run_id)
    manifest = owner.read_json(run_dir / CODE_MANIFEST)
    state = owner.read_json(run_dir / owner.STATE) or {}
    if not run_dir.code.is_dir() or not isinstance(manifest, dict):
        raise RunnerError(
            f"Run {run_dir.root.name} has no working directory here any more: its files are the run's workdir/ "
            f"artifacts (runner ui, or mlflow artifacts download -r {run_dir.root.name} -a workdir)."
        )
    ledger_path = (
        run_dir / "pulled.json"
    )  # what earlier pulls copied: theirs to replace, not the user's edits
    ledger = owner.read_json(ledger_path) or {}
    copied, refused = session.pull(run_dir.code, manifest, project, float(state.get("created", 0)), ledger)
    write_json(ledger_path, ledger)
    for rel in copied:
        print(f"pulled {printable(rel)}")
    for rel in refused:
        print(
            f"kept   {printable(rel)}: the project's copy changed after the session started, or the file is not one "
            "to copy (a link on the way, over the size limit): copy it by hand to replace it"
        )
    if not copied and not refused:
        print(f"Nothing to pull: run {run_dir.root.name} wrote nothing in its working directory.")
    return 1 if refused else 0


def printable(name: str) -> str:
    """A name a run chose, safe to print on a terminal (no escape sequences)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def cmd_ui(args: argparse.Namespace) -> int:
    project = _project()
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        store_uri(project),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print("runner: MLflow UI at", f"http://{args.host}:{args.port}", flush=True)
    return run_process_group(argv, cwd=project)


def run_process_group(argv: list[str], cwd: Path) -> int:
    """Run `argv` in a process group of its own and wait; SIGINT, SIGTERM or SIGHUP to this process end the
    whole group (the MLflow UI is a server process with workers of its own, which a plain exec would leave
    running), and the group is also told to go if this process is killed outright."""
    import signal
    import subprocess

    child = subprocess.Popen(argv, cwd=cwd, start_new_session=True, preexec_fn=_die_with_parent)

    def end(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, end)
    try:
        return child.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _end_group(child)


def _die_with_parent() -> None:
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _end_group(child: Any, grace: float = 10) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        child.poll()
        try:
            os.killpg(child.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()


def cmd_gc(args: argparse.Namespace) -> int:
    """Each backend removes what it keeps that no run needs; a backend that is not here (no engine) is said."""
    from runner.backends import NAMES, get_backend

    for name in NAMES:
        try:
            said = get_backend(name).gc()
        except RunnerError as exc:
            said = f"skipped: {exc}"
        if said:
            print(f"{name}: {said}")
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from runner.environment.base_image import build_base

    build_base(args.tag, args.suite, args.mirror, force=args.force)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from runner.launch import sweep_parent as sweep
    from runner.tracking import compare

    uri = store_uri(_project())
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
    from runner.cli.run import run_with_hydra
    from runner.launch import sweep_parent as sweep

    parent = sweep.find_parent(store_uri(_project()), args.sweep_id)
    run_with_hydra(json.loads(parent.data.tags["runner.sweep.argv"]), resume=args.sweep_id)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from runner.runs.stop import stop

    project = _project()
    print(stop(store_uri(project), project, args.run_id))
    return 0


def _full_id(project: Path, run_id: str) -> str:
    """A run id from any unique start of it, where the run has a directory here; else as given."""
    from runner.runs import owner

    try:
        return owner.find_run_dir(project, run_id).root.name
    except RunnerError:
        return run_id


def cmd_reproduce(args: argparse.Namespace) -> int:
    from runner.launch.reproduce import reproduce

    project = _project()
    os.chdir(project)
    return reproduce(store_uri(project), project, _full_id(project, args.run_id), check=args.check)


def cmd_init(args: argparse.Namespace) -> int:
    from runner.cli.init import init

    for line in init(Path.cwd()):
        print(f"[runner] {line}")
    print("[runner] next: runner run -- python train.py   (or: runner +experiment=example)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner", description="Manage runs. Run a config with: runner +experiment=NAME"
    )
    sub = p.add_subparsers(dest="verb", required=True)
    init = sub.add_parser("init", help="make this git repository a runner project (a starter conf/)")
    init.set_defaults(fn=cmd_init)
    ls = sub.add_parser("ls", help="recent runs")
    ls.add_argument("--experiment")
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_ls)
    logs = sub.add_parser("logs", help="a run's stdout/stderr")
    logs.add_argument("run_id")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(fn=cmd_logs)
    attach = sub.add_parser("attach", help="follow a run from the start of its log; Ctrl-C stops it")
    attach.add_argument("run_id")
    attach.set_defaults(fn=cmd_attach)
    ui = sub.add_parser("ui", help="the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_ui)
    stop = sub.add_parser("stop", help="stop a running run; it ends KILLED, outputs kept")
    stop.add_argument("run_id")
    stop.set_defaults(fn=cmd_stop)
    reproduce = sub.add_parser("reproduce", help="run again from the record alone; report drift first")
    reproduce.add_argument("run_id")
    reproduce.add_argument(
        "--check", action="store_true", help="only say what drifted; exit 1 if anything did"
    )
    reproduce.set_defaults(fn=cmd_reproduce)
    compare = sub.add_parser("compare", help="params that differ and final metrics, best first")
    compare.add_argument("run_ids", nargs="*")
    compare.add_argument("--sweep", help="compare the members of a sweep")
    compare.add_argument(
        "--sort", help="metric to sort by (default: the sweep's objective, else test_accuracy)"
    )
    compare.add_argument("--direction", choices=("maximize", "minimize"))
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(fn=cmd_compare)
    sweep = sub.add_parser("sweep", help="sweeps")
    sweep_sub = sweep.add_subparsers(dest="what", required=True)
    resume = sweep_sub.add_parser("resume", help="run the members of a sweep that did not finish")
    resume.add_argument("sweep_id")
    resume.set_defaults(fn=cmd_sweep_resume)
    notebook = sub.add_parser("notebook", help="sessions (mode=jupyter)")
    notebook_sub = notebook.add_subparsers(dest="what", required=True)
    pull = notebook_sub.add_parser(
        "pull",
        help="copy the notebooks and files a session wrote back into the project (never over newer ones)",
    )
    pull.add_argument("run_id")
    pull.set_defaults(fn=cmd_notebook_pull)
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
    from runner.datasets.cli import add_parser as add_data_parser

    add_data_parser(sub)
    return p


def dispatch(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args))
