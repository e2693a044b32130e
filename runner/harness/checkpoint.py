"""Resumable training: a checkpoint in `$RUNNER_CHECKPOINT_DIR` (kept with the run across its attempts) at
every epoch's end and, in long epochs, every `train.checkpoint_minutes`; SIGTERM means "save and stop".

A checkpoint is Keras's BackupAndRestore's (the model's and the optimizer's weights) with what that callback
leaves out: the Dropout layers' seed generators and, mid-epoch, the epoch's metric sums. Keras writes its
weights file, then its epoch number, in place: a kill mid-save leaves a file that fails to load, or weights
with the epoch number of the checkpoint before. Here each save writes a new weights file, then the state that
names it (atomically). Keras's own mid-epoch resume (`save_freq=int`) restarts the epoch from its first batch on
weights that have trained on part of it already; here the epoch continues at the batch after the checkpoint,
in the same order, and reports the whole epoch's metrics (Keras's metrics keep sums and counts, which add up).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from runner.harness.batches import Batches
from runner.harness.shim import write_json

STATE = "state.json"  # written last, atomically: it names the weights file of the checkpoint it describes


class Preempted(Exception):
    """Training stopped on SIGTERM, after a checkpoint was saved."""


def _seed_states(model: Any) -> list[Any]:
    return [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]


def _values(variables: list[Any]) -> list[Any]:
    return [np.asarray(v).tolist() for v in variables]


class Checkpoint(keras.callbacks.BackupAndRestore):
    """Goes after the callbacks that log an epoch: its metrics are spooled, then the epoch is checkpointed."""

    def __init__(self, folder: Path, batches: Batches, minutes: float) -> None:
        super().__init__(str(folder), save_freq="epoch", delete_checkpoint=False)
        self.folder, self.batches, self.seconds = folder, batches, minutes * 60
        self.stop = False  # set on SIGTERM
        self.weights = ""  # the file of the checkpoint the model is at (loaded or saved)
        self.metric_sums: list[Any] | None = None  # of a resumed epoch's batches trained before
        self.saved_at, self.skipped = time.monotonic(), 0

    def state(self) -> dict[str, Any] | None:
        path = self.folder / STATE
        return json.loads(path.read_text()) if path.exists() else None

    def start(self) -> tuple[int, int]:
        """(epoch, batches of it trained) where the checkpoint is; (0, 0) without one."""
        state = self.state()
        return (state["epoch"], state["batch"]) if state else (0, 0)

    def _load_model(self) -> None:  # Keras's hook, at the start of Model.fit
        state = self.state()
        if state is None:
            return
        self.model._initial_epoch = state["epoch"]
        if state["weights"] == self.weights:  # the model is there already
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self.folder / state["weights"])
        for variable, value in zip(_seed_states(self.model), state["seeds"], strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
        self.weights, self.metric_sums = state["weights"], state["metrics"] or None
        batch = f", batch {state['batch']} of {self.batches.per_epoch}" if state["batch"] else ""
        print(f"[runner] resuming from the checkpoint at epoch {state['epoch']}{batch}", flush=True)

    def save(self, epoch: int, batch: int) -> None:
        """The state at `batch` batches into `epoch` (0: its start): the weights under a new name, then the
        state that names them (atomically), then older weights files go."""
        self.folder.mkdir(parents=True, exist_ok=True)
        weights = f"{time.time_ns()}.weights.h5"
        self.model.save_weights(self.folder / weights)
        state = {
            "epoch": epoch,
            "batch": batch,
            "weights": weights,
            "seeds": _values(_seed_states(self.model)),
            "metrics": _values(self.model.metrics_variables) if batch else [],
        }
        write_json(self.folder / STATE, state)
        for old in self.folder.glob("*.weights.h5"):
            if old.name != weights:
                old.unlink()
        self.weights, self.saved_at = weights, time.monotonic()

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self._current_epoch, self.skipped = epoch, self.batches.skip

    # Checked as the next batch begins, with the batch before it trained: a batch-end hook makes Keras wait for
    # every step's results before it queues the next (BackupAndRestore's, which does nothing here, is left out).
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        if not batch:  # nothing of this epoch trained in this fit yet
            return
        done = self.skipped + batch
        if self.stop or time.monotonic() - self.saved_at >= self.seconds:
            self.save(self._current_epoch, done)
        if self.stop:
            raise Preempted(f"{self._current_epoch} epochs and {done} of {self.batches.per_epoch} batches")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.save(epoch + 1, 0)
        if self.stop:
            raise Preempted(f"{epoch + 1} epochs")


class ResumedSums(keras.callbacks.Callback):
    """In the fit of a resumed epoch's rest: once its first batch is in (Keras builds some metrics only then),
    the sums of the batches trained before the checkpoint are added to the epoch's metrics."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.checkpoint = checkpoint

    def on_train_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        sums = self.checkpoint.metric_sums
        if sums is not None:
            for variable, value in zip(self.model.metrics_variables, sums, strict=True):
                variable.assign_add(np.asarray(value, dtype=variable.dtype))
            self.checkpoint.metric_sums = None


def stop_on_sigterm(checkpoint: Checkpoint) -> Any:
    """SIGTERM sets `checkpoint.stop` (training then saves and stops as the next batch begins); returns what
    restores the previous handler."""

    def handler(signum: int, frame: Any) -> None:
        checkpoint.stop = True

    previous = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, previous)
