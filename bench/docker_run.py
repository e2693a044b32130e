"""Docker backend: what a warm run adds to a bare `docker run`, to MLflow Projects' `mlflow run .` (docker_env)
on the same image, per sweep member, and what a cold environment build costs.

    python bench/docker_run.py [--repeat N]

Every figure is measured in this same run, side by side (absolute times drift on shared machines): the
repeats of each command alternate with those of its baseline. Times are of the whole command as typed, from
this script's start of the process to its exit.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import make_project, runner, timed

TINY = ("backend=docker", "env.requirements=[]")
COMMAND = "command=python -c pass"

MLPROJECT = """name: bench
docker_env:
  image: {image}
entry_points:
  main:
    command: "python -c pass"
"""


def spread(times: list[float]) -> str:
    return f"{min(times):6.2f} / {statistics.median(times):6.2f} / {max(times):6.2f} s"


def side_by_side(a: list[str], b: list[str], cwd: Path, n: int, env: dict[str, str] | None = None) -> tuple:
    ta, tb = [], []
    for _ in range(n):
        ta.append(timed(a, cwd, env))
        tb.append(timed(b, cwd, env))
    return ta, tb


def mlflow_project(image: str) -> Path:
    """A project MLflow Projects runs in `image` (it builds an image of its own on top, each run)."""
    folder = make_project()
    (folder / "MLproject").write_text(MLPROJECT.format(image=image))
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True)
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "mlproject"],
        cwd=folder,
        check=True,
    )
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--members", type=int, default=6)
    n = ap.parse_args().repeat
    members = ap.parse_args().members
    proj = make_project()
    timed(runner(*TINY, COMMAND), proj)  # the env image exists, and the agent is up: runs after this are warm
    image = (
        sqlite3.connect(proj / "mlflow.db")
        .execute("select value from tags where key='runner.image' order by rowid desc limit 1")
        .fetchone()[0]
    )
    bare_cmd = ["docker", "run", "--rm", image, "python", "-c", "pass"]
    bare, warm = side_by_side(bare_cmd, runner(*TINY, COMMAND), proj, n)
    added = [w - b for w, b in zip(warm, bare, strict=True)]

    mlproj = mlflow_project(image)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{mlproj / 'mlflow.db'}"
    mlflow_cmd = [sys.executable, "-m", "mlflow", "run", ".", "--experiment-name", "bench"]
    timed(mlflow_cmd, mlproj, env)  # its store created once
    mlflow_times, warm2 = [], []
    for _ in range(max(3, n // 2)):
        mlflow_times.append(timed(mlflow_cmd, mlproj, env))
        warm2.append(timed(runner(*TINY, COMMAND), proj))

    seeds = ",".join(str(i) for i in range(members))
    sweep_times, bares = [], []
    for _ in range(max(1, n // 3)):
        sweep_times.append(
            timed(runner("-m", *TINY, COMMAND, "sweep.parallel=1", f"train.seed={seeds}"), proj)
        )
        bares.append(sum(timed(bare_cmd, proj) for _ in range(members)))
    per_member = [(s - b) / members for s, b in zip(sweep_times, bares, strict=True)]

    colds = [timed(runner(*TINY, f"env.setup=['echo {time.time_ns()}']", COMMAND), proj) for _ in range(2)]

    print(f"min / median / max over {n} alternating repeats")
    print(f"bare docker run --rm              {spread(bare)}")
    print(
        f"runner, warm                      {spread(warm)}   ratio {statistics.median(warm) / statistics.median(bare):4.1f}x"
    )
    print(f"  added to bare docker run        {spread(added)}   (goal <= 0.30 s)")
    print(f"mlflow run . (docker_env)         {spread(mlflow_times)}")
    print(
        f"runner, warm, alongside it        {spread(warm2)}   ratio runner / mlflow run {statistics.median(warm2) / statistics.median(mlflow_times):4.2f}"
    )
    print(f"sweep of {members}, 1 slot              {spread(sweep_times)}")
    print(f"  added per member to bare        {spread(per_member)}   (goal <= 0.30 s)")
    print(
        f"runner, cold env build + run      {spread(colds)}   ratio cold / warm {statistics.median(colds) / statistics.median(warm):4.1f}x"
    )


if __name__ == "__main__":
    main()
