"""`runner ui`: MLflow's UI on the project's store, opening on model training (runner.tracking.uiapp), ended with
its whole process group."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runner.compose.load import find_project_dir
from runner.tracking import uiapp
from runner.tracking.store import store_uri


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    ui = sub.add_parser("ui", help="the MLflow UI on the project's store")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(fn=cmd_ui)


def cmd_ui(args: argparse.Namespace) -> int:
    project = find_project_dir()
    print("runner: MLflow UI at", f"http://{args.host}:{args.port}", flush=True)
    with tempfile.TemporaryDirectory(prefix="runner-ui-") as folder:
        argv = [
            sys.executable,
            "-P",  # in the project's folder, whose own modules are not MLflow's
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            store_uri(project),
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--app-name",
            uiapp.NAME,
            "--uvicorn-opts",  # uvicorn puts its app folder (the working folder unless told) first on its path
            f"--app-dir {shlex.quote(folder)}",
        ]
        # PYTHONSAFEPATH: the project's folder stays off the path of MLflow's server processes too (python -m
        # uvicorn), so a project's own `runner` or `mlflow` never shadows them.
        return run_process_group(argv, cwd=project, env={**os.environ, "PYTHONSAFEPATH": "1"})


def run_process_group(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
    """Run `argv` in a process group of its own and wait; SIGINT, SIGTERM or SIGHUP to this process end the
    whole group (the MLflow UI is a server process with workers of its own, which a plain exec would leave
    running), and the group is also told to go if this process is killed outright."""

    child = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, preexec_fn=_die_with_parent)

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
