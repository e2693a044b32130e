"""GPU: mnist_cnn's epoch time on a GPU through the local backend, against the same training without the runner.

    python bench/gpu.py --mnist DIR [--epochs 4] [--rounds 2] [--wheels DIR]

For a machine with an NVIDIA GPU (CI has none): it writes bench/GPU.md, which bench/all.py puts into
RESULTS.md where the full run finds no GPU. Both sides train mnist_cnn (models/mnist_cnn.py) on MNIST's 60,000
training images from DIR's archives, batch 64, Adam with a cosine decay, seed 0, Keras 3 on JAX: the runner's
side is `python -m runner +experiment=mnist_cnn backend=local env.gpu=true` (its epoch times read from the
run's record), the baseline a plain Keras script (`model.fit` on the arrays, its epochs timed by a callback the
same way). The first epoch of each compiles; the later ones are compared. Rounds alternate.

`--wheels DIR` is for a GPU machine that reaches no package index: the runner's commands install from DIR alone
(uv's UV_FIND_LINKS and UV_OFFLINE), the run's environment is built from no requirements, and its env.setup
adds this interpreter's own packages (where the machine's CUDA build of JAX is) and the folders on this
process's PYTHONPATH (keras, from DIR) through a .pth file. The in-run pieces' lock pins this interpreter's
pandas, of which DIR holds no wheel: it is resolved from DIR without pandas (this interpreter's is used) and
stored where the runner looks for that lock, the one step this script takes in the runner's place. DIR holds
wheels for that machine's Python (here 3.12) of the runner's own requirements less TensorFlow, DVC and Optuna,
and keras, less what that Python has (numpy, pandas, h5py, ml-dtypes): `pip download --only-binary=:all:
--python-version 3.12 -d DIR mlflow-skinny==V hydra-core==V omegaconf==V sqlalchemy alembic uv docker flask
flask-cors keras` with their dependencies (antlr4-python3-runtime 4.9.3 has no wheel: `pip wheel` makes one), V
as installed here; run it with `PYTHONPATH=SITE:.` where SITE holds them installed (`pip install --no-deps
--target SITE DIR/*.whl`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import time
from datetime import UTC, datetime
from pathlib import Path

from common import ROOT, Figure, clean_env, last_run, machine, make_project, runner, spread

HERE = Path(__file__).resolve().parent
BATCH = 64


def idx(folder: Path, name: str, offset: int) -> object:
    import numpy as np

    path = next(p for p in (folder / f"{name}.gz", folder / name) if p.is_file())
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()  # type: ignore[operator]
    return np.frombuffer(raw, np.uint8, offset=offset)


def plain(mnist: Path, epochs: int) -> list[float]:
    """The same training as a researcher writes it without the runner: arrays into `model.fit`."""
    import keras
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from models.mnist_cnn import build

    x = (idx(mnist, "train-images-idx3-ubyte", 16).reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)  # type: ignore[attr-defined]
    y = idx(mnist, "train-labels-idx1-ubyte", 8)
    import jax

    print(f"[gpu] plain: JAX {jax.__version__} on {jax.devices()}", flush=True)
    keras.utils.set_random_seed(0)
    model = build()
    steps = -(-len(y) // BATCH) * epochs
    schedule = keras.optimizers.schedules.CosineDecay(0.001, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )

    seconds: list[float] = []

    class Times(keras.callbacks.Callback):  # as the harness times an epoch
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            seconds.append(time.perf_counter() - self.began)

    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=2, callbacks=[Times()])
    return seconds


def offline(proj: Path, wheels: Path, env: dict[str, str]) -> None:
    """No package index: uv installs from `wheels`; the run's env is this interpreter's packages (see above)."""
    uv = {"UV_FIND_LINKS": str(wheels), "UV_OFFLINE": "1"}  # uv reads no UV_NO_INDEX
    env.update(uv)
    os.environ.update(uv)  # the lock below resolves in this process
    folders = [
        p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p, "keras").is_dir()
    ]
    folders.append(sysconfig.get_paths()["purelib"])
    line = "import site; " + "; ".join(f"site.addsitedir({f!r})" for f in folders)
    script = f"import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()['purelib'], 'machine.pth').write_text({line!r})"
    (proj / "conf" / "env" / "keras_models.yaml").write_text(
        "image: runner-base:bookworm\nrequirements: []\n"
        f"setup:\n  - {json.dumps('python -c ' + json.dumps(script))}\n"
        "variables:\n  KERAS_BACKEND: jax\n  MPLBACKEND: Agg\n"
    )
    subprocess.run(["git", "commit", "-qam", "offline env"], cwd=proj, check=True)
    from runner.environment import harness, lock

    target = lock.Target(f"{sys.version_info.major}.{sys.version_info.minor}")
    pinned = harness.requirements()
    without = [r for r in pinned if not r.startswith("pandas==")]
    saved = lock.lock_file(pinned, target, env)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(lock.resolve_lock(without, target, None, env, fresh=True))


def epoch_times(proj: Path) -> list[float]:
    run_id = last_run(proj)[0]
    rows = (
        sqlite3.connect(proj / "mlflow.db")
        .execute(
            "select value from metrics where run_uuid=? and key='epoch_seconds' order by step", (run_id,)
        )
        .fetchall()
    )
    return [v for (v,) in rows]


def measure(
    mnist: Path, epochs: int, rounds: int, wheels: Path | None, gpu: bool = True
) -> tuple[Figure, dict[str, str]]:
    proj = make_project()
    (proj / "mnist").mkdir()
    for f in mnist.iterdir():
        if f.name.endswith((".gz", "ubyte")):
            (proj / "mnist" / f.name).write_bytes(f.read_bytes())
    subprocess.run(["git", "add", "mnist"], cwd=proj, check=True)
    subprocess.run(["git", "commit", "-qm", "mnist"], cwd=proj, check=True)
    env = {**clean_env(), "KERAS_BACKEND": "jax"}
    if wheels:
        offline(proj, wheels, env)
    else:  # JAX's CUDA build in place of TensorFlow's CPU build
        (proj / "conf" / "env" / "keras_models.yaml").write_text(
            "image: runner-base:bookworm\nrequirements: ['keras>=3,<4', 'jax[cuda12]']\n"
            "variables:\n  KERAS_BACKEND: jax\n  MPLBACKEND: Agg\n"
        )
        subprocess.run(["git", "commit", "-qam", "jax env"], cwd=proj, check=True)
    args = [
        "+experiment=mnist_cnn", "backend=local", f"env.gpu={str(gpu).lower()}", "data=[]", "dataset.path=mnist",
        f"train.epochs={epochs}", "evaluate=null",
    ]  # fmt: skip
    base: list[list[float]] = []
    ran: list[list[float]] = []
    for _ in range(rounds):
        out = subprocess.run(
            [sys.executable, __file__, "--plain", "--mnist", str(mnist), "--epochs", str(epochs)],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"the plain training failed: {out.stderr[-1500:]}")
        print(out.stdout.strip().splitlines()[0], flush=True)
        base.append(json.loads(out.stdout.strip().splitlines()[-1]))
        out = subprocess.run(runner(*args), cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"the runner's run failed: {out.stdout[-1500:]} {out.stderr[-1500:]}")
        ran.append(epoch_times(proj))
        print(f"[gpu] plain {base[-1]}  runner {ran[-1]}", flush=True)
    run_id = last_run(proj)[0]
    print(subprocess.run(runner("logs", run_id), cwd=proj, env=env, capture_output=True, text=True).stdout)
    later = lambda runs: [t for r in runs for t in r[1:]]  # noqa: E731
    images = int.from_bytes(idx(mnist, "train-labels-idx1-ubyte", 0)[4:8].tobytes(), "big")  # type: ignore[index]
    figure = Figure(
        f"{'GPU' if gpu else 'CPU (no GPU)'}: mnist_cnn's epoch time ({images:,} images, batch {BATCH}, "
        "Keras 3 on JAX)",
        "the same training without the runner (`model.fit` on the arrays)",
        f"`backend=local env.gpu={str(gpu).lower()}`",
        later(base),
        later(ran),
        goal="",
        note=f"{rounds} rounds of {epochs} epochs, alternating; the first epoch of each (compilation) apart.",
        extra={
            "first epoch (compiles)": f"without the runner {spread([r[0] for r in base])}, "
            f"with it {spread([r[0] for r in ran])}",
        },
    )
    return figure, machine()


def write(figure: Figure, facts: dict[str, str], took: float, keep: bool) -> str:
    ratio = "-" if figure.ratio is None else f"{figure.ratio:.3g}"
    text = (
        f"**GPU** (`python bench/gpu.py`, {datetime.now(UTC):%Y-%m-%d}, {took / 60:.0f} minutes; "
        + "; ".join(f"{k}: {v}" for k, v in facts.items())
        + ")\n\n| figure | baseline | runner | ratio |\n|---|---|---|---|\n"
        f"| {figure.name} | {figure.baseline}: {spread(figure.base)} | {figure.subject}: {spread(figure.times)} "
        f"| {ratio} |\n\n"
        + "\n".join(f"- {k}: {v}" for k, v in figure.extra.items())
        + f"\n- {figure.note}\n"
    )
    if keep:  # a figure taken on a GPU
        (HERE / "GPU.md").write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", required=True, type=Path, help="a folder holding MNIST's training archives")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wheels", type=Path, help="no package index here: install from these wheels")
    ap.add_argument(
        "--cpu", action="store_true", help="no GPU here: try this script on the CPU (GPU.md untouched)"
    )
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plain:
        print(json.dumps(plain(args.mnist, args.epochs)))
        return 0
    t0 = time.perf_counter()
    figure, facts = measure(
        args.mnist.resolve(), args.epochs, args.rounds, args.wheels and args.wheels.resolve(), not args.cpu
    )
    print(write(figure, facts, time.perf_counter() - t0, keep=not args.cpu))
    print(
        f"[gpu] median later epoch: plain {statistics.median(figure.base):.3f} s, runner {statistics.median(figure.times):.3f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
