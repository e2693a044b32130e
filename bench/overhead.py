"""Overhead: what a warm run adds to a bare `docker run` of the same image and command, against MLflow Projects'
`mlflow run .` (docker_env) on the same image, per sweep member; and the local backend against the command run
directly.

    python bench/overhead.py [--quick]

Every figure is measured in this same run, side by side (absolute times drift on shared machines): the repeats of
each command alternate with those of its baseline. Times are of the whole command as typed, process start to exit.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from common import Figure, clean_env, last_run, make_project, runner, spread, timed

TINY = ("backend=docker", "env.requirements=[]")
COMMAND = "command=python -c pass"

MLPROJECT = """name: bench
docker_env:
  image: {image}
entry_points:
  main:
    command: "python3 -c pass"
"""


def alternate(a: list[str], b: list[str], cwd, n: int, env=None) -> tuple[list[float], list[float]]:
    ta, tb = [], []
    for _ in range(n):
        ta.append(timed(a, cwd, env))
        tb.append(timed(b, cwd, env))
    return ta, tb


def measure(quick: bool) -> list[Figure]:
    n = 2 if quick else 11
    proj = make_project()
    timed(runner(*TINY, COMMAND), proj)  # the env image exists, and the agent is up: runs after this are warm
    tags = last_run(proj)[1]
    image = tags["runner.image"]
    # The same image, with the run's environment folder mounted where the run sees it.
    bare_cmd = ["docker", "run", "--rm", "-v", f"{tags['runner.env.folder']}:/opt/env:ro", image]
    bare_cmd += ["/opt/env/bin/python", "-c", "pass"]
    bare, warm = alternate(bare_cmd, runner(*TINY, COMMAND), proj, n)
    added = [w - b for w, b in zip(warm, bare, strict=True)]
    figures = [
        Figure(
            "overhead: a warm Docker run",
            "`docker run --rm -v ENV:/opt/env:ro IMAGE /opt/env/bin/python -c pass`",
            "`runner backend=docker command='python -c pass'`",
            bare,
            warm,
            goal="<= 0.15 s added",
            met=statistics.median(added) <= 0.15,
            extra={"added (median)": f"{statistics.median(added):+.2f} s"},
        )
    ]

    mlproj = make_project()
    (mlproj / "MLproject").write_text(MLPROJECT.format(image=image))
    env = {**clean_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{mlproj / 'mlflow.db'}"}
    mlflow_cmd = [sys.executable, "-m", "mlflow", "run", ".", "--experiment-name", "bench"]
    timed(mlflow_cmd, mlproj, env)  # its store created once
    mlflow_times, warm2 = [], []
    for _ in range(1 if quick else 5):
        mlflow_times.append(timed(mlflow_cmd, mlproj, env))
        warm2.append(timed(runner(*TINY, COMMAND), proj))
    figures.append(
        Figure(
            "overhead: against MLflow Projects",
            "`mlflow run .` with `docker_env` on the same image",
            "the same warm runner run, alternated",
            mlflow_times,
            warm2,
            note="`mlflow run` builds an image of its own on top of the given one for every run.",
        )
    )

    members = 2 if quick else 6
    seeds = ",".join(str(i) for i in range(members))
    sweeps, bares = [], []
    for _ in range(1 if quick else 3):
        sweeps.append(timed(runner("-m", *TINY, COMMAND, "sweep.parallel=1", f"train.seed={seeds}"), proj))
        bares.append(sum(timed(bare_cmd, proj) for _ in range(members)))
    per_member = [(s - b) / members for s, b in zip(sweeps, bares, strict=True)]
    figures.append(
        Figure(
            f"overhead: a sweep member ({members} members, one at a time)",
            f"{members} bare `docker run --rm`",
            f"`runner -m ... train.seed={seeds} sweep.parallel=1`",
            bares,
            sweeps,
            goal="<= 0.20 s added per member",
            met=statistics.median(per_member) <= 0.20,
            extra={"added per member (median)": f"{statistics.median(per_member):+.2f} s"},
        )
    )

    direct_cmd = [sys.executable, "-c", "pass"]
    local_cmd = runner("backend=local", "env.requirements=[]", COMMAND)
    timed(local_cmd, proj)  # its environment built once
    direct, local = alternate(direct_cmd, local_cmd, proj, n)
    figures.append(
        Figure(
            "overhead: a warm local run",
            "`python -c pass` run directly",
            "`runner backend=local command='python -c pass'`",
            direct,
            local,
            extra={"added (median)": f"{statistics.median(local) - statistics.median(direct):+.2f} s"},
        )
    )
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)  # mlflow run's own images
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    for f in measure(ap.parse_args().quick):
        print(f"{f.name}: {spread(f.base)} -> {spread(f.times)}  ratio {f.ratio:.2f}  {f.extra}")


if __name__ == "__main__":
    main()
