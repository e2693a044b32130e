"""Shared fixtures: a real project in a temp dir (git repo, the conf tree, the models), run as a user would."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project: a git repository of one commit, outside this one; the configs and models it runs are the
    installed package's."""
    proj = tmp_path / "proj a'b"  # hostile characters: spaces and quotes must survive every path
    proj.mkdir()
    shutil.copy(ROOT / ".gitignore", proj / ".gitignore")
    git(proj, "init", "-q")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return proj


def run_cli(
    project: Path, *args: str, timeout: float = 600, check: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m runner ARGS` in `project`, as a user would type it (`env`: variables added to the shell's)."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"runner {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def store(project: Path) -> str:
    return f"sqlite:///{project / 'mlflow.db'}"


def all_runs(project: Path) -> list:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    if not (project / "mlflow.db").exists():
        return []
    client = MlflowClient(store(project))
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return list(client.search_runs(ids)) if ids else []


def ctrl_c_as_in_a_terminal() -> None:
    """A script's background job (`pytest &`) starts with SIGINT ignored, and children inherit that; a user's
    runner in a terminal has it at its default. Give the child the terminal's."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_when_started(
    project: Path, *args: str, marker: str = "started", runs: int = 1
) -> tuple[int, str, float]:
    """Start `python -m runner ARGS`, wait until `runs` run logs show `marker`, send SIGINT (Ctrl-C).
    Returns (exit code, output, seconds from the signal to the exit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=ctrl_c_as_in_a_terminal,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = (project / ".runner" / "runs").glob("*/run.log")
        if sum(marker in p.read_text(errors="replace") for p in logs) >= runs:
            break
        time.sleep(0.3)
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out, time.time() - t0


def docker_engine():
    """The Docker engine with the base image; a skip where neither exists (never in CI: RUNNER_REQUIRE_ALL)."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(version="auto")
        client.ping()
        client.images.get("runner-base:bookworm")
    except DockerException as exc:
        if os.environ.get("RUNNER_REQUIRE_ALL"):
            raise
        pytest.skip(f"no Docker engine or base image here ({exc}); ./setup.sh provides both")
    return client


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_ui(ui: subprocess.Popen, port: int, timeout: float = 120) -> str:
    """The base URL of `runner ui` once its server answers."""
    import urllib.request

    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            return base
        except OSError:
            assert time.time() < deadline and ui.poll() is None, "runner ui did not come up"
            time.sleep(0.5)
