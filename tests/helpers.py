"""What the tests share besides fixtures (those are in conftest.py): running the runner as a user would, reading
its record, the engines and servers the tests start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from runner.mnist import files

ROOT = Path(__file__).resolve().parents[1]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


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


def only_run(project: Path):
    runs = all_runs(project)
    assert len(runs) == 1, [r.info.status for r in runs]
    return runs[0]


def artifacts(project: Path, run_id: str, path: str = "") -> set[str]:
    client = MlflowClient(store(project))
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifacts(project, run_id, f.path) if f.is_dir else {f.path}
    return out


def read_artifact(project: Path, run_id: str, path: str) -> str:
    # Bytes decoded: reading text would turn each carriage return into a newline on the way.
    return Path(MlflowClient(store(project)).download_artifacts(run_id, path)).read_bytes().decode()


# Reads every file under each mount point given; tries to write into the first one.
READER = """import json, os, pathlib, sys
root = os.environ.get("RUNNER_ROOT")
def host(p): return pathlib.Path(root, p.lstrip("/")) if root else pathlib.Path(p)
out = {}
for mount in sys.argv[1:]:
    base = host(mount)
    out[mount] = {str(p.relative_to(base)): p.read_text() for p in sorted(base.rglob("*")) if p.is_file()}
if os.environ.get("TRY_WRITE"):
    try:
        (host(sys.argv[1]) / "w.txt").write_text("x")
        out["write"] = "ok"
    except OSError as exc:
        out["write"] = exc.strerror
pathlib.Path(os.environ["RUNNER_OUTPUT"], "seen.json").write_text(json.dumps(out, sort_keys=True))
"""


def dvc(cwd: Path, *args: str) -> str:
    return subprocess.run(["dvc", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def data(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli(project, "data", *args, timeout=120)
    print(proc.stderr)  # shown when a test fails
    return proc


CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1000",
)


def wait_for_text(driver, text: str, timeout: float = 60) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = driver.find_element("tag name", "body").text
        if text in body:
            return body
        time.sleep(0.5)
    raise AssertionError(f"'{text}' never appeared on {driver.current_url}")


def sbatch(env: dict[str, str], cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["sbatch", "--parsable", *args], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().split(";")[0]


def ended(env: dict[str, str], job: str, timeout: float = 120, tasks: int = 1) -> list[tuple[str, str, str]]:
    """(job id, state, exit code) of the job (or its `tasks` array tasks) from SLURM's accounting, once all ended
    (an array task still queued may not be listed yet)."""
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-j", job, "-X", "-n", "-P", "-o", "JobID,State,ExitCode"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [tuple(line.split("|")) for line in out.splitlines() if line]
        done = len(rows) >= tasks and all(
            r[1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING") for r in rows
        )
        if done or time.time() > deadline:
            return rows  # type: ignore[return-value]
        time.sleep(0.5)


def tiny_idx(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, seed: int = 0) -> None:
    """A tiny MNIST in the IDX layout: random pixels, labels 0-9."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        files.write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", rng.randint(0, 256, (n, 28, 28)))
        files.write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", np.arange(n) % 10)


def build_wheel(where: Path) -> Path:
    """The runner's wheel, built from this checkout into `where` (no dependencies, no build isolation)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(where),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return next(where.glob("runner-*.whl"))


def run_dir(project: Path, run_id: str) -> Path:
    return project / ".runner" / "runs" / run_id


def when_logged(project: Path, run_id: str, text: str, timeout: float = 180) -> None:
    """Until the run's log shows `text`."""
    log = run_dir(project, run_id) / "run.log"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never showed in {log}")


# A user's own training loop, as the README's contract asks: it loads its checkpoint where there is one, saves one
# (atomically) every third epoch and on SIGTERM, and logs each epoch with the epoch as its step, as a FloydHub
# metric line and through MLflow. A new attempt replays the epochs after the checkpoint: their points are logged
# again, and must not be recorded twice.
RESUMABLE = """\
import json, os, signal, sys, time
import mlflow
n, pause = int(sys.argv[1]), float(sys.argv[2])
folder = os.environ["RUNNER_CHECKPOINT_DIR"] if len(sys.argv) < 4 else sys.argv[3]
path = os.path.join(folder, "state.json")
first = json.load(open(path))["epoch"] + 1 if os.path.exists(path) else 0
asked = []
signal.signal(signal.SIGTERM, lambda *_: asked.append(1))
print(f"attempt {os.environ['RUNNER_ATTEMPT']} from epoch {first}", flush=True)
for epoch in range(first, n):
    time.sleep(pause)
    print(json.dumps({"metric": "loss", "value": 1.0 / (epoch + 1), "step": epoch}), flush=True)
    mlflow.log_metric("score", float(epoch), step=epoch)
    if epoch % 3 == 2 or asked:
        with open(path + ".tmp", "w") as fh:
            json.dump({"epoch": epoch}, fh)
        os.replace(path + ".tmp", path)
    if asked:
        print("checkpoint saved: stopping", flush=True)
        sys.exit(143)
"""


def cluster_account(name: str) -> dict[str, str]:
    """A user's account on scripts/cluster.sh's tracking server: MLFLOW_TRACKING_USERNAME and PASSWORD."""
    folder = Path(os.environ.get("RUNNER_CLUSTER_DIR", "/tmp/runner-cluster"))
    lines = (folder / "users" / f"{name}.env").read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if line.strip())  # type: ignore[misc]
