"""Shared bench helpers: a throw-away runner project, timing of whole commands, a figure, the machine."""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Figure:
    """One measured figure: the runner (`times`) against its baseline (`base`), measured in the same run."""

    name: str
    baseline: str  # what the baseline is, as typed
    subject: str  # what the runner's side is
    base: list[float]
    times: list[float]
    unit: str = "s"
    ratio: float | None = None  # subject / baseline (medians) unless given
    goal: str = ""  # as written in the issue, e.g. "<= 0.30 s added"
    met: bool | None = None
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.base and self.times:
            self.ratio = statistics.median(self.times) / statistics.median(self.base)


def spread(values: list[float], unit: str = "s") -> str:
    if not values:
        return "-"
    fmt = (lambda v: f"{v:.3g}") if unit != "s" else (lambda v: f"{v:.2f}")
    if len(values) == 1:
        return f"{fmt(values[0])} {unit} (1 run)"
    return f"{fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))} {unit}"


def make_project() -> Path:
    proj = Path(tempfile.mkdtemp(prefix="runner-bench-")) / "proj"
    proj.mkdir()
    shutil.copy(ROOT / ".gitignore", proj / ".gitignore")
    # The examples' configs and model builders, as a project holds its own.
    for folder in ("conf", "models"):
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
    ):
        subprocess.run(["git", *args], cwd=proj, check=True)
    return proj


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env or clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        # A sweep tells its members' endings on stdout.
        said = (proc.stderr.strip() or proc.stdout.strip())[-500:]
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {said}")
    return time.perf_counter() - t0


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


def last_run(project: Path) -> tuple[str, dict[str, str], dict[str, float]]:
    """The newest run of the project's store: (id, tags, latest metrics)."""
    db = sqlite3.connect(project / "mlflow.db")
    (run_id,) = db.execute("select run_uuid from runs order by start_time desc limit 1").fetchone()
    tags = dict(db.execute("select key, value from tags where run_uuid=?", (run_id,)).fetchall())
    metrics = dict(db.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())
    return run_id, tags, metrics


def machine() -> dict[str, str]:
    """What the figures were taken on."""
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in ln
        ),
        platform.processor() or "unknown",
    )
    mem = next(
        ln.split()[1] for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")
    )
    docker = shutil.which("docker") and subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True
    )
    gpu = (
        shutil.which("nvidia-smi")
        and subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    )
    return {
        "CPU": f"{cpu}, {len(os.sched_getaffinity(0))} cores",
        "memory": f"{int(mem) / 1024**2:.1f} GiB",
        "Docker engine": (docker and docker.stdout.strip()) or "none",
        "GPU": gpu or "none",
        "Python": platform.python_version(),
    }
