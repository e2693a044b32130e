"""Training: mnist_cnn's steps per second in a container against the same training on the host; the share of an
epoch spent logging its metrics; and the headline, `python -m runner +experiment=mnist_cnn`.

    python bench/training.py [--quick] [--mnist DIR]

The harness records, for every epoch, `steps_per_second` (from the begin of the epoch's second step, so graph
tracing is not counted) and `epoch_seconds`, and at the end `train_seconds` and `logging_seconds` (the time its
metric logging took): the figures are read from the runs' own records. `--mnist DIR` imports MNIST from a folder
holding the four archives (else `runner data import mnist` downloads them). `--quick` trains keras_mlp on random
data instead (no MNIST needed).
"""

from __future__ import annotations

import argparse
import time

from common import Figure, last_run, make_project, runner, spread, timed

QUICK = ("+experiment=keras_mlp", "dataset.n_train=20000", "train.epochs=2")


def training(quick: bool, mnist: str | None, steps: int) -> tuple[list[str], object]:
    proj = make_project()
    if quick:
        return list(QUICK), proj
    timed(runner("data", "import", "mnist", *(["--from", mnist] if mnist else [])), proj)
    return ["+experiment=mnist_cnn", f"train.steps={steps}"], proj


def measure(quick: bool, mnist: str | None = None, steps: int = 300, rounds: int = 2) -> list[Figure]:
    args, proj = training(quick, mnist, steps)
    host, container, logging_share = [], [], []
    for backend in ("local", "docker"):  # environments built first, so that neither round pays for it
        timed(
            runner(f"backend={backend}", *args, "train.steps=1" if not quick else "train.epochs=0.01"), proj
        )
    for _ in range(1 if quick else rounds):
        for backend, into in (("local", host), ("docker", container)):
            timed(runner(f"backend={backend}", *args), proj)
            metrics = last_run(proj)[2]
            into.append(metrics["steps_per_second"])
            if backend == "docker":
                logging_share.append(100 * metrics["logging_seconds"] / metrics["train_seconds"])
    what = "keras_mlp on 20,000 random rows, 2 epochs" if quick else f"mnist_cnn, {steps} steps of 64"
    figures = [
        Figure(
            f"throughput: {what}",
            "the same training on the host (`backend=local`)",
            "in a container (`backend=docker`)",
            host,
            container,
            unit="steps/s",
            goal=">= 0.97",
            note="Rounds alternate host and container.",
        )
    ]
    figures[-1].met = figures[-1].ratio is not None and figures[-1].ratio >= 0.97
    figures.append(
        Figure(
            "logging: share of an epoch spent logging its metrics",
            "the epoch's time",
            "the harness's metric logging in it (a spool append)",
            [],
            logging_share,
            unit="%",
            ratio=max(logging_share) / 100,
            goal="< 1 %",
            met=max(logging_share) < 1,
            extra={"largest share": f"{max(logging_share):.4f} %"},
        )
    )
    t0 = time.perf_counter()
    headline = ["+experiment=keras_mlp"] if quick else ["+experiment=mnist_cnn"]
    timed(runner(*headline), proj)
    wall = time.perf_counter() - t0
    metrics = last_run(proj)[2]
    figures.append(
        Figure(
            f"headline: `python -m runner {headline[0]}`"
            + (" (quick stand-in for mnist_cnn)" if quick else ""),
            "",
            "test accuracy and wall time",
            [],
            [wall],
            ratio=metrics.get("test_accuracy"),
            extra={
                "test accuracy": f"{metrics.get('test_accuracy', float('nan')):.4f}",
                "wall": f"{wall:.0f} s",
            },
        )
    )
    return figures


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mnist")
    a = ap.parse_args()
    for f in measure(a.quick, a.mnist):
        print(f"{f.name}: {spread(f.base, f.unit)} -> {spread(f.times, f.unit)}  ratio {f.ratio}  {f.extra}")


if __name__ == "__main__":
    main()
