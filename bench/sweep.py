"""Sweep speed-up: wall time of an N-member sweep against N x the time of one member, same machine, same run.

    python bench/sweep.py [--quick] [--members 4] [--backend docker|local] [--work 300000000]

Each member burns a fixed amount of CPU in one process (the busy loop's size is --work). The goal is a
speed-up of at least 0.9 x the number of slots the sweep uses (one per CPU here).
"""

from __future__ import annotations

import argparse
import os
import time

from common import Figure, make_project, runner, spread, timed


def measure(quick: bool, members: int = 4, backend: str = "local", work: int | None = None) -> list[Figure]:
    work = work or (20_000_000 if quick else 300_000_000)
    members = 2 if quick else members
    proj = make_project()
    base = (f"backend={backend}", "env.requirements=[]", f'command="python -c \\"sum(range({work}))\\""')
    timed(runner(*base), proj)  # build or find the environment first
    ones = [timed(runner(*base), proj) for _ in range(1 if quick else 3)]
    seeds = ",".join(str(i) for i in range(members))
    t0 = time.perf_counter()
    timed(runner("-m", *base, f"train.seed={seeds}"), proj)
    sweep = time.perf_counter() - t0
    slots = min(members, len(os.sched_getaffinity(0)))
    one = min(ones)
    speedup = members * one / sweep
    return [
        Figure(
            f"sweep: {members} members, {slots} slots ({backend})",
            f"{members} x one member (its fastest of {len(ones)})",
            f"`runner -m ... train.seed={seeds}`",
            [members * one],
            [sweep],
            ratio=speedup / slots,
            goal=">= 0.90 x slots (ratio here: speed-up / slots)",
            met=speedup / slots >= 0.9,
            extra={"one member": f"{one:.2f} s", "speed-up": f"{speedup:.2f}"},
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--backend", default="local")
    ap.add_argument("--work", type=int)
    a = ap.parse_args()
    for f in measure(a.quick, a.members, a.backend, a.work):
        print(f"{f.name}: {spread(f.base)} -> {spread(f.times)}  ratio {f.ratio:.2f}  {f.extra}")


if __name__ == "__main__":
    main()
