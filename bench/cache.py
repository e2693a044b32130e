"""Environment cache: a run whose environment was built before against the run that builds it (the second must
build nothing); uv against pip installing the same lock into a fresh environment; and what an environment with one
small package more adds to the env store, on disk and in build time.

    python bench/cache.py [--quick] [--requirements "tensorflow-cpu>=2.16,<3" "keras>=3,<4"]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure, clean_env, last_run, make_project, runner, spread, timed

sys.path.insert(0, str(ROOT))

from runner.environment.lock import Target, resolve_lock, uv_bin

FULL = ["tensorflow-cpu>=2.16,<3", "keras>=3,<4"]
QUICK = ["six", "idna"]
ONE_MORE = "tabulate"  # a small pure-Python package


def disk(folder: Path) -> int:
    """Bytes on disk under `folder`, a file linked from several names counted once."""
    out = subprocess.run(
        ["du", "-s", "--block-size=1", str(folder)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[0])


def one_more(quick: bool) -> list[Figure]:
    """The default environment (the Keras one; two small packages with --quick) built into an empty env store, then
    the same with one small package more: the disk each adds and the time each takes to build (a run that builds
    it against the same run again, which builds nothing)."""
    proj = make_project()
    with tempfile.TemporaryDirectory(prefix="runner-bench-cache-") as cache:
        env = {**clean_env(), "RUNNER_CACHE": cache}
        store = Path(cache) / "store"
        added, builds, extra = [], [], []
        for reqs in (QUICK if quick else FULL, [*(QUICK if quick else FULL), ONE_MORE]):
            listed = ",".join(f'"{r}"' for r in reqs)
            args = ("backend=docker", f"env.requirements=[{listed}]", "command=python -c pass")
            before = disk(store) if store.is_dir() else 0
            cold = timed(runner(*args), proj, env)
            tags = last_run(proj)[1]
            if tags["runner.env.reused"] != "false":
                raise RuntimeError("the environment was not built")
            added.append((disk(store) - before) / 1e6)
            builds.append(float(tags["runner.env.build_s"]))
            extra.append(cold - timed(runner(*args), proj, env))  # the run that builds against the same again
    what = "the default Keras environment" if not quick else " + ".join(QUICK)
    return [
        Figure(
            f"environments: disk added by one small package more ({ONE_MORE})",
            f"{what}, built first into an empty env store",
            f"the same with `{ONE_MORE}` added: what it adds to the store",
            [added[0]],
            [added[1]],
            unit="MB",
            goal="<= 60 MB",
            met=added[1] <= 60,
        ),
        Figure(
            f"environments: building one with one small package more ({ONE_MORE})",
            f"building {what} into an empty env store",
            f"building it with `{ONE_MORE}` added, its other packages stored",
            [builds[0]],
            [builds[1]],
            goal="a second or two",
            met=builds[1] <= 2.0,
            note="A build's time: as the run records it (`runner.env.build_s`: the build container's start to the "
            "environment in place), one round each. The whole run that builds it took "
            f"{extra[0]:.1f} s and {extra[1]:.1f} s more than the same run again (which builds nothing): that "
            "adds the new requirements' resolution against the package index.",
        ),
    ]


def steps_time(steps: list[list[str]], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    for argv in steps:
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def measure(quick: bool, requirements: list[str] | None = None) -> list[Figure]:
    proj = make_project()
    colds, warms = [], []
    for _ in range(1 if quick else 5):
        setup = f"env.setup=['echo {time.time_ns()}']"  # a new environment each round: built, then reused
        args = ("backend=docker", "env.requirements=[]", setup, "command=python -c pass")
        colds.append(timed(runner(*args), proj))
        assert last_run(proj)[1]["runner.env.reused"] == "false"
        warms.append(timed(runner(*args), proj))
        if last_run(proj)[1]["runner.env.reused"] != "true":
            raise RuntimeError("the second run of an unchanged environment built it again")
    figures = [
        Figure(
            "cache: an environment built before",
            "the run that builds its environment (one `env.setup` step)",
            "the same run again (builds nothing: `runner.env.reused=true`)",
            colds,
            warms,
        )
    ]
    reqs = requirements or (QUICK if quick else FULL)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lock = root / "lock.txt"
        lock.write_text(resolve_lock(reqs, Target(py), None, os.environ))
        env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache"), "PIP_CACHE_DIR": str(root / "pip-cache")}
        pip = steps_time(
            [
                [sys.executable, "-m", "venv", str(root / "p")],
                [str(root / "p/bin/pip"), "install", "-q", "--require-hashes", "-r", str(lock)],
            ],
            env,
        )

        def sync(name: str) -> list[list[str]]:
            return [
                [uv_bin(), "venv", "-q", "--python", sys.executable, str(root / name)],
                [uv_bin(), "pip", "sync", "-q", "--python", str(root / name / "bin/python"), str(lock)],
            ]

        cold = steps_time(sync("u1"), env)
        warm = steps_time(sync("u2"), env)
    what = " + ".join(reqs)
    figures.append(
        Figure(
            f"cache: uv against pip ({what}, one lock)",
            "`python -m venv` + `pip install --require-hashes -r lock`",
            "`uv venv` + `uv pip sync lock`, empty uv cache (pip's empty too)",
            [pip],
            [cold],
            extra={
                "uv, a second environment linked from uv's cache": f"{warm:.1f} s ({warm / pip:.2f} of pip)"
            },
            note="One round each: a round takes minutes with TensorFlow.",
        )
    )
    return figures + one_more(quick)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--requirements", nargs="+")
    args = ap.parse_args()
    for f in measure(args.quick, args.requirements):
        print(f"{f.name}: {spread(f.base)} -> {spread(f.times)}  ratio {f.ratio:.2f}  {f.extra}")


if __name__ == "__main__":
    main()
