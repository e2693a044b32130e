"""Trials of uneven length on 2 slots: the runner's sweep (a trial asked for as a slot frees) against Hydra's own
Optuna sweeper (a batch of `n_jobs` trials, then the next batch once the slowest is done), on the same trials.

    python bench/sweep_async.py [--quick]

Both sweep the same values of `epochs` with Optuna's grid sampler, 2 at a time; a trial sleeps epochs / SCALE
seconds. Hydra's side runs in a virtual environment of its own (its Optuna plugin pins Optuna below 3), with its
joblib launcher for the 2 at a time. The figure is how busy the slots were: the sum of member durations over
(2 x the sweep's span), 1.0 when no slot ever waits.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import Figure, clean_env, make_project, runner, timed

HYDRA_SIDE = ("optuna==2.10.1", "hydra-optuna-sweeper==1.3.0", "hydra-joblib-launcher==1.2.0")
VENV = Path.home() / ".cache" / "runner-bench" / "hydra-optuna"

APP = """
import json, os, time
from dataclasses import dataclass
import hydra
from hydra.core.config_store import ConfigStore

@dataclass
class Conf:
    epochs: int = 20

ConfigStore.instance().store(name="conf", node=Conf)

@hydra.main(version_base=None, config_name="conf")
def main(cfg):
    start = time.time()
    time.sleep(cfg.epochs / float(os.environ["SCALE"]))
    with open(os.environ["TIMES"], "a") as out:
        out.write(json.dumps([start, time.time()]) + "\\n")
    return float(cfg.epochs)

main()
"""


def busy(spans: list[tuple[float, float]], slots: int = 2) -> float:
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    return sum(e - s for s, e in spans) / (slots * (end - start))


def hydra_venv() -> Path:
    """Hydra's Optuna sweeper and joblib launcher beside this machine's packages (made once, then kept)."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *HYDRA_SIDE], capture_output=True, text=True
        )
        if pip.returncode != 0:
            raise RuntimeError(f"pip could not install {' '.join(HYDRA_SIDE)}: {pip.stderr.strip()[-500:]}")
    return python


def hydra_side(values: str, trials: int, scale: float) -> list[tuple[float, float]]:
    work = Path(tempfile.mkdtemp(prefix="runner-bench-hydra-"))
    (work / "app.py").write_text(APP)
    times = work / "times.jsonl"
    argv = [
        str(hydra_venv()), "app.py", "-m", "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.n_jobs=2", "hydra.sweeper.direction=maximize",
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"epochs=choice({values})",
    ]  # fmt: skip
    timed(argv, work, {**clean_env(), "SCALE": str(scale), "TIMES": str(times)})
    return [tuple(json.loads(line)) for line in times.read_text().splitlines()]  # type: ignore[misc]


def runner_side(values: str, trials: int, scale: float) -> list[tuple[float, float]]:
    proj = make_project()
    # Each trial sleeps, then prints its objective as a metric line.
    sleep = (
        f'command="python -c \\"import time, json; time.sleep(${{train.epochs}} / {scale}); '
        "print(json.dumps(dict(metric='score', value=${train.epochs})))\\\"\""
    )
    argv = runner(
        "-m", "backend=local", "env.requirements=[]", sleep, "hydra/sweeper=optuna", "hydra/sweeper/sampler=grid",
        f"hydra.sweeper.n_trials={trials}", f"train.epochs=choice({values})", "sweep.parallel=2",
        "sweep.objective=score",
    )  # fmt: skip
    timed(argv, proj)
    db = sqlite3.connect(proj / "mlflow.db")
    rows = db.execute(
        "select start_time, end_time from runs where run_uuid in "
        "(select run_uuid from tags where key = 'mlflow.parentRunId')"
    ).fetchall()
    return [(s / 1000, e / 1000) for s, e in rows]


def measure(quick: bool) -> list[Figure]:
    epochs = [20, 380, 60, 340, 100, 300, 140, 260] if not quick else [20, 200, 60, 160]
    scale = 50.0 if not quick else 100.0
    values = ",".join(str(e) for e in epochs)
    theirs = hydra_side(values, len(epochs), scale)
    ours = runner_side(values, len(epochs), scale)
    span = lambda spans: max(e for _, e in spans) - min(s for s, _ in spans)  # noqa: E731
    return [
        Figure(
            f"sweep: {len(epochs)} Optuna trials of uneven length, 2 slots",
            "Hydra's Optuna sweeper (batches of n_jobs=2, joblib launcher), slots busy",
            "`runner -m hydra/sweeper=optuna ... sweep.parallel=2`, slots busy",
            [busy(theirs)],
            [busy(ours)],
            unit="busy",
            goal=">= 0.90 busy (ratio: runner / Hydra's)",
            met=busy(ours) >= 0.9,
            extra={
                "trials": f"train.epochs in {values}, each sleeping epochs / {scale:g} s",
                "span": f"Hydra's sweeper {span(theirs):.1f} s, the runner {span(ours):.1f} s",
                "members": f"the runner's from each member run's start to its end (its overhead counted busy); "
                f"Hydra's from its task function's start to its end; {os.cpu_count()} CPUs",
            },
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    for f in measure(ap.parse_args().quick):
        print(f"{f.name}: Hydra {f.base[0]:.2f} busy, runner {f.times[0]:.2f} busy; {f.extra}")


if __name__ == "__main__":
    main()
