"""Logging into the embedded store: metric points per second from 8 parallel runs, with none lost, against
MLflow's own bulk logging of the same points into a fresh SQLite store from one process.

    python bench/store.py [--quick] [--runs 8] [--points 5000]

Each run (local backend, started detached, all at once) appends its points to its spool as the harness does, one
record per point; the runs' owners write them into the project's SQLite store. The time is from the first start
to the last run's recorded ending; every point is then counted in the store.
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import tempfile
import time

from common import Figure, clean_env, make_project, runner, spread, timed

WRITER = """import sys
from runner.harness.spool import Spool
spool = Spool()
for i in range(int(sys.argv[1])):
    spool.log_metrics({"x": float(i)}, step=i)
"""


def baseline(runs: int, points: int) -> float:
    """MLflow's log_batch of the same points, 1,000 a call, into a fresh SQLite store."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/b.db")
        exp = client.create_experiment("b", artifact_location=f"file://{tmp}/a")
        ids = [client.create_run(exp).info.run_id for _ in range(runs)]
        now = int(time.time() * 1000)
        t0 = time.perf_counter()
        for run_id in ids:
            for start in range(0, points, 1000):
                batch = [Metric("x", float(i), now, i) for i in range(start, min(points, start + 1000))]
                client.log_batch(run_id, metrics=batch)
        return runs * points / (time.perf_counter() - t0)


def measure(quick: bool, runs: int = 8, points: int | None = None) -> list[Figure]:
    points = points or (500 if quick else 5000)
    proj = make_project()
    (proj / "writer.py").write_text(WRITER)
    args = ("backend=local", "env.requirements=[]", f"command=python writer.py {points}")
    timed(runner(*args), proj)  # the environment built, the store created
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(runner(*args, "detach=true"), cwd=proj, env=clean_env(), stdout=subprocess.DEVNULL)
        for _ in range(runs)
    ]
    if any(p.wait() != 0 for p in procs):
        raise RuntimeError("a run did not start")
    db = proj / "mlflow.db"
    deadline = time.time() + 600
    while True:
        with sqlite3.connect(db, timeout=30) as con:
            newest = con.execute(
                "select run_uuid, status from runs order by start_time desc limit ?", (runs,)
            )
            ids, statuses = zip(*newest.fetchall(), strict=True)
        if all(s != "RUNNING" for s in statuses):
            break
        if time.time() > deadline:
            raise RuntimeError(f"runs still RUNNING after 10 minutes: {statuses}")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    with sqlite3.connect(db, timeout=30) as con:
        counts = [
            con.execute(
                "select count(*) from metrics where run_uuid = ? and key = 'x'", (run_id,)
            ).fetchone()[0]
            for run_id in ids
        ]
    lost = runs * points - sum(counts)
    if lost:
        raise RuntimeError(f"{lost} metric points lost")
    if list(statuses).count("FINISHED") != runs:
        raise RuntimeError(f"runs ended {statuses}")
    rate = runs * points / wall
    return [
        Figure(
            f"logging: {runs} parallel runs x {points:,} metric points into the embedded store",
            "MLflow's `log_batch` of the same points from one process (1,000 a call)",
            f"{runs} detached local runs at once, points spooled and written by their owners",
            [baseline(runs, points)],
            [rate],
            unit="points/s",
            goal="none lost",
            met=True,
            extra={"points lost": "0", "wall, first start to last ending": f"{wall:.1f} s"},
            note="The runner's rate includes starting and ending 8 runs; the baseline only writes.",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--points", type=int)
    a = ap.parse_args()
    for f in measure(a.quick, a.runs, a.points):
        print(
            f"{f.name}: {spread(f.base, f.unit)} -> {spread(f.times, f.unit)}  ratio {f.ratio:.2f}  {f.extra}"
        )


if __name__ == "__main__":
    sys.exit(main())
