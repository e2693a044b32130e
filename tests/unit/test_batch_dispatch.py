"""The built-in trainer's callbacks never make Keras wait for a step before queuing the next.

Keras on JAX calls batch-end hooks apart from the training loop unless a callback has one it must call in order
(with the step's results as Python numbers: a wait for the device after every step). The probe below is
called apart where nothing waits, and on the loop's own thread where something does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys, threading
from pathlib import Path

import keras
import numpy as np

from runner.harness import batches, train
from runner.harness.checkpoint import Checkpoint
from runner.harness.spool import Spool


class Probe(keras.callbacks.Callback):
    async_safe = True  # Keras may call it apart from the training loop

    def __init__(self):
        super().__init__()
        self.on_loop = []

    def on_train_batch_end(self, batch, logs=None):
        self.on_loop.append(threading.current_thread() is threading.main_thread())


class Waiting(keras.callbacks.Callback):  # a batch-end hook as the harness's callbacks had
    def on_train_batch_end(self, batch, logs=None):
        pass


x = np.random.default_rng(0).random((640, 8), dtype=np.float32)
y = (x.sum(axis=1) > 4).astype("int32")
feed = batches.Batches(x, y, 64, seed=0)  # 10 batches an epoch
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
probe = Probe()
callbacks = [
    batches.EpochOrder(feed),
    train.spool_callback(Spool(sys.argv[2])),
    train.stop_after(25),  # mid-epoch: the third epoch's fifth batch is the last
    Checkpoint(Path(sys.argv[2]) / "keras", feed, minutes=0),  # its clock checked at every batch
    *([Waiting()] if sys.argv[1] == "waiting" else []),
    probe,
]
model.fit(x=feed, epochs=3, shuffle=False, callbacks=callbacks, verbose=0)
print(json.dumps({"steps": int(model.optimizer.iterations), "on_loop": probe.on_loop}))
"""


def fit(tmp_path: Path, variant: str) -> dict[str, object]:
    folder = tmp_path / variant
    folder.mkdir()
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, variant, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["records"] = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    return result


def test_the_harness_callbacks_let_keras_queue_steps_and_stop_exactly(tmp_path: Path) -> None:
    got = fit(tmp_path, "harness")
    assert got["steps"] == 25  # stopped after exactly train.steps
    assert got["on_loop"] == [False] * 25  # every batch-end hook apart from the loop: no step waited for
    timed = [r for r in got["records"] if r.get("m") == "steps_per_second"]  # type: ignore[union-attr]
    assert [r["s"] for r in timed] == [0, 1, 2]  # each epoch's own rate, the short last one too


def test_a_batch_end_hook_makes_keras_wait_for_every_step(tmp_path: Path) -> None:
    got = fit(tmp_path, "waiting")  # the probe sees the difference
    assert got["steps"] == 25
    assert got["on_loop"] == [True] * 25
