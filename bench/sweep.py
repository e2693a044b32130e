"""Sweep speed-up: wall time of an N-member sweep against N x the time of one member, same machine, same run.

    python bench/sweep.py [--members 4] [--backend docker|local] [--work 300000000]

Each member burns a fixed amount of CPU in one process (the busy loop's size is --work). The goal is a
speed-up of at least 0.9 x the number of slots the sweep uses (one per CPU here).
"""

from __future__ import annotations

import argparse
import os
import time

from common import make_project, runner, timed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--backend", default="docker")
    ap.add_argument("--work", type=int, default=300_000_000)
    args = ap.parse_args()
    proj = make_project()
    base = (
        f"backend={args.backend}",
        "env.requirements=[]",
        f'command="python -c \\"sum(range({args.work}))\\""',
    )
    timed(runner(*base), proj)  # build or find the environment first
    one = min(timed(runner(*base), proj) for _ in range(2))
    seeds = ",".join(str(i) for i in range(args.members))
    t0 = time.perf_counter()
    timed(runner("-m", *base, f"train.seed={seeds}"), proj)
    sweep = time.perf_counter() - t0
    slots = min(args.members, len(os.sched_getaffinity(0)))
    speedup = args.members * one / sweep
    print(f"one member               {one:7.2f} s")
    print(f"sweep of {args.members} members        {sweep:7.2f} s   ({slots} slots)")
    print(f"speed-up {speedup:4.2f} = {speedup / slots:4.2f} x slots   (goal >= 0.90 x slots)")


if __name__ == "__main__":
    main()
