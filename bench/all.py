"""Every benchmark, in one run, into bench/RESULTS.md.

    python bench/all.py            # the full run (about half an hour; --mnist DIR imports MNIST from a folder)
    python bench/all.py --quick    # small sizes, one repeat, a couple of minutes: checks every benchmark still runs
    python bench/gpu.py --mnist DIR # on a machine with an NVIDIA GPU: the GPU figure, kept in bench/GPU.md

Each figure is the runner against a baseline measured in the same run, on the same machine (absolute times drift
on shared machines; ratios are what is compared). `--quick` writes its table to stdout (and `--out FILE` if given)
and exits 1 when a benchmark could not run; the full run rewrites bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import cache
import cluster
import dataset
import overhead
import store
import sweep
import sweep_async
import training
from common import Figure, machine, spread

HERE = Path(__file__).resolve().parent


def table(figures: list[Figure]) -> str:
    rows = [
        "| figure | baseline | runner | ratio | goal |",
        "|---|---|---|---|---|",
    ]
    for f in figures:
        verdict = "" if f.met is None else (" **met**" if f.met else " **missed**")
        ratio = "-" if f.ratio is None else f"{f.ratio:.3g}"
        base = f"{f.baseline}: {spread(f.base, f.unit)}" if f.base else f.baseline or "-"
        rows.append(
            f"| {f.name} | {base} | {f.subject}: {spread(f.times, f.unit)} | {ratio} | {f.goal}{verdict} |"
        )
    return "\n".join(rows)


def details(figures: list[Figure]) -> str:
    out = []
    for f in figures:
        lines = [f"- {k}: {v}" for k, v in f.extra.items()] + ([f"- {f.note}"] if f.note else [])
        if lines:
            out.append(f"**{f.name}**\n\n" + "\n".join(lines))
    return "\n\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mnist", help="a folder holding MNIST's four archives (else they are downloaded)")
    ap.add_argument("--out", help="where the results go (full run: bench/RESULTS.md)")
    args = ap.parse_args()
    benches = [
        ("overhead", lambda: overhead.measure(args.quick)),
        ("cache", lambda: cache.measure(args.quick)),
        ("dataset", lambda: dataset.measure(args.quick)),
        ("training", lambda: training.measure(args.quick, args.mnist)),
        ("store", lambda: store.measure(args.quick)),
        ("sweep", lambda: sweep.measure(args.quick)),
        ("sweep_async", lambda: sweep_async.measure(args.quick)),
        ("cluster", lambda: cluster.measure(args.quick)),
    ]
    started = time.perf_counter()
    figures: list[Figure] = []
    failed = []
    for name, measure in benches:
        t0 = time.perf_counter()
        try:
            got = measure()
        except Exception as exc:  # the others still run; the run fails at the end
            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        figures += got
        print(f"[bench] {name}: {len(got)} figure(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    took = time.perf_counter() - started
    facts = machine()
    head = (
        f"# Benchmarks\n\nOne command: `python bench/all.py{' --quick' if args.quick else ''}`, "
        f"{datetime.now(UTC):%Y-%m-%d}, {took / 60:.0f} minutes. "
        + "; ".join(f"{k}: {v}" for k, v in facts.items())
        + ".\n\nEach figure is the runner against a baseline measured in the same run (min / median / max where "
        "repeated; ratio: runner / baseline of the medians unless said otherwise).\n"
    )
    text = f"{head}\n{table(figures)}\n\n{details(figures)}\n"
    gpu = HERE / "GPU.md"  # `python bench/gpu.py` on a machine with a GPU writes it
    if facts["GPU"] == "none":
        text += "\n" + (
            f"No GPU on this machine; the GPU figure as `bench/gpu.py` last measured it on one:\n\n{gpu.read_text()}"
            if gpu.is_file()
            else "**GPU**: no GPU on this machine, and `bench/gpu.py` has not measured the GPU figure "
            "(mnist_cnn's epoch time on a GPU) on one yet.\n"
        )
    if failed:
        text += "\n**Could not run**: " + "; ".join(failed) + "\n"
    out = Path(args.out) if args.out else (None if args.quick else HERE / "RESULTS.md")
    if out is not None:
        notes = HERE / "NOTES.md"  # what limits the figures that miss their goal: written by hand, kept
        out.write_text(text + (f"\n{notes.read_text()}" if notes.is_file() and not args.quick else ""))
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
