"""Docker backend: warm-run overhead of `runner` over a bare `docker run`, and cold build vs warm start.

    python bench/docker_run.py [--repeat N]

Both sides of each ratio are measured in this same run (absolute times drift on shared machines).
"""

from __future__ import annotations

import argparse
import sqlite3
import time

from common import make_project, median, runner, timed

TINY = ("backend=docker", "env.requirements=[]")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    n = ap.parse_args().repeat
    proj = make_project()
    cmd = "command=python -c pass"
    timed(runner(*TINY, cmd), proj)  # make sure the env image exists
    image = (
        sqlite3.connect(proj / "mlflow.db")
        .execute("select value from tags where key='runner.image' order by rowid desc limit 1")
        .fetchone()[0]
    )

    bare = median(["docker", "run", "--rm", image, "python", "-c", "pass"], proj, n)
    warm = median(runner(*TINY, cmd), proj, n)
    colds = [
        timed(runner(*TINY, f"env.setup=['echo {time.time_ns()}']", cmd), proj) for _ in range(max(1, n // 2))
    ]
    cold = sorted(colds)[len(colds) // 2]

    print(f"bare docker run          {bare:7.2f} s   (median of {n})")
    print(f"runner warm run          {warm:7.2f} s   ratio to bare docker run: {warm / bare:5.1f}x")
    print(f"runner cold build + run  {cold:7.2f} s   ratio cold / warm: {cold / warm:5.1f}x")


if __name__ == "__main__":
    main()
