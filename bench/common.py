"""Shared bench helpers: a throw-away runner project, and timing of whole commands."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_project() -> Path:
    proj = Path(tempfile.mkdtemp(prefix="runner-bench-")) / "proj"
    proj.mkdir()
    shutil.copy(ROOT / ".gitignore", proj / ".gitignore")  # the configs and models come with the package
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "b"],
    ):
        subprocess.run(["git", *args], cwd=proj, check=True)
    return proj


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def median(argv: list[str], cwd: Path, n: int) -> float:
    return statistics.median(timed(argv, cwd) for _ in range(n))


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]
