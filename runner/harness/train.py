"""The in-run harness: `python -m runner.harness.train`, run inside the run's environment (container or venv).

Reads the resolved config, seeds everything, builds the model through an allowlisted instantiate, trains
with per-epoch metrics spooled for the run's owner to record live, evaluates, and saves to the output folder.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError, DataError
from runner.harness.targets import (
    ALLOWED_TARGET_PREFIXES,
    EVALUATE_PREFIXES,
    LOADER_PREFIXES,
    refused_target,
    with_project,
)
from runner.loaders import Data, Lookup

# In-run data loaders a config may name as `dataset._target_`.


def build(node: DictConfig, prefixes: tuple[str, ...], **kwargs: Any) -> Any:
    target = str(node.get("_target_", ""))
    refused = refused_target(OmegaConf.to_container(node, resolve=False), prefixes, "node")
    if not target.startswith(prefixes) or refused:
        raise SystemExit(
            f"{refused or repr(target)} is not allowed (allowed prefixes: {', '.join(prefixes)})"
        )
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        if isinstance(exc.__cause__, (DataError, ConfigError)):  # bad input: its own one-line message
            raise exc.__cause__ from None
        raise


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # python, numpy and the backend
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


# Metrics of how long training took, not of what it learned: they differ between two runs of one config.
TIMING = ("epoch_seconds", "steps_per_second", "train_seconds", "logging_seconds")


def spool_callback(spool: Any) -> Any:
    """Spools every epoch's metrics as they happen (the run's owner writes them into the record), with the
    epoch's own timing: `epoch_seconds`, and `steps_per_second` from its second step's begin (so that graph
    tracing is not counted); at the end, `train_seconds` and `logging_seconds` (what this logging took)."""
    import keras

    class SpoolMetrics(keras.callbacks.Callback):
        logging = trained = began = 0.0
        first: float | None = None
        steps = 0

        def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            self.began, self.first, self.steps = time.perf_counter(), None, 0

        # Counted as batches begin: a batch-end hook makes Keras on JAX wait for every step's results (as Python
        # numbers) before it queues the next.
        def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
            self.steps += 1
            if self.steps == 2:  # the first step, its tracing included, is done
                self.first = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            now = time.perf_counter()
            self.trained += now - self.began
            timing = {"epoch_seconds": now - self.began}
            if self.first is not None and self.steps > 1 and now > self.first:
                timing["steps_per_second"] = (self.steps - 1) / (now - self.first)
            spool.log_metrics({**{k: float(v) for k, v in (logs or {}).items()}, **timing}, step=epoch)
            self.logging += time.perf_counter() - now

        def log_totals(self) -> None:  # once training is done (which may take two Model.fit calls)
            spool.log_metrics({"train_seconds": self.trained, "logging_seconds": self.logging})

    return SpoolMetrics()


def holdout(data: Data, fraction: float, seed: int) -> tuple[Any, Any, Any]:
    """(x_train, y_train, validation_data): a random `fraction` of the training rows (rounded to whole rows)
    held out for per-epoch validation, drawn from `seed`."""
    if not fraction:
        return data.x_train, data.y_train, None
    n = len(data.y_train)
    order = np.random.RandomState(seed).permutation(n)
    held, kept = order[: round(n * fraction)], order[round(n * fraction) :]
    return take(data.x_train, kept), data.y_train[kept], (take(data.x_train, held), data.y_train[held])


def take(x: Any, rows: np.ndarray) -> Any:
    """Rows of one input array, of each array of a multi-input dict, or of a Lookup."""
    if isinstance(x, Lookup):
        return x.subset(rows)
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


def schedule_steps(rows: int, train: DictConfig) -> tuple[int, int, bool]:
    """(optimizer steps, Keras epochs, whether the last epoch stops early) for train.steps or train.epochs."""
    per_epoch = math.ceil(rows / train.batch_size)
    steps = train.steps or math.ceil(round(per_epoch * train.epochs, 6))  # 50 x 1.1 is 55, not 56
    epochs = math.ceil(steps / per_epoch)
    return steps, epochs, steps < epochs * per_epoch


def make_optimizer(train: DictConfig, total_steps: int) -> Any:
    import keras

    optimizer = keras.optimizers.get(train.optimizer)
    if train.schedule == "cosine":  # (validated before the run: constant or cosine)
        start = train.learning_rate or float(optimizer.learning_rate)
        schedule = keras.optimizers.schedules.CosineDecay(start, decay_steps=total_steps)
        return type(optimizer)(learning_rate=schedule)
    if train.learning_rate is not None:
        optimizer.learning_rate = train.learning_rate
    return optimizer


def stop_after(steps: int) -> Any:
    """Stops training after `steps` optimizer steps (those of earlier attempts too), mid-epoch if need be."""
    import keras

    class StopAfter(keras.callbacks.Callback):  # at a batch's begin: see spool_callback
        before: int | None = None  # the optimizer's steps before this fit's batches
        begun = 0

        def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
            self.before, self.begun = None, 0

        def on_train_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
            if self.before is None:  # read once, after a checkpoint was loaded
                self.before = int(self.model.optimizer.iterations)
            self.begun += 1
            if self.before + self.begun >= steps:  # this batch is the last: Keras stops after it
                self.model.stop_training = True

    return StopAfter()


def train(cfg: DictConfig, model: Any, data: Data, output: Path) -> int:
    from runner.harness import batches
    from runner.harness.checkpoint import Preempted

    x_train, y_train, validation = holdout(data, cfg.train.validation_split, cfg.train.seed)
    steps, epochs, partial = schedule_steps(len(y_train), cfg.train)
    model.compile(
        optimizer=make_optimizer(cfg.train, steps), loss=cfg.train.loss, metrics=list(cfg.train.metrics)
    )
    model.summary(print_fn=lambda line, **_: print(line))

    from runner.harness.spool import Spool

    spool = Spool()
    spool.log_params({"model.parameters": model.count_params(), **data.info})
    feed = batches.Batches(x_train, y_train, cfg.train.batch_size, seed=cfg.train.seed)
    timing = spool_callback(spool)
    callbacks = [batches.EpochOrder(feed), timing] + ([stop_after(steps)] if partial else [])
    try:
        fit(cfg, model, feed, validation, epochs, callbacks)
    except Preempted as stopped:
        print(f"[runner] checkpoint saved after {stopped}: stopping (SIGTERM)", flush=True)
        return 143
    timing.log_totals()
    output.mkdir(parents=True, exist_ok=True)
    if cfg.get("evaluate") is not None:
        report = build(cfg.evaluate, EVALUATE_PREFIXES, _partial_=True)
        scores = report(model=model, data=data, output=output, batch_size=cfg.train.batch_size)
    else:
        scores = model.evaluate(
            **batches.feed(data.x_test, data.y_test, cfg.train.batch_size), verbose=0, return_dict=True
        )
    spool.log_metrics({f"test_{name}": float(value) for name, value in scores.items()})
    print("test:", {k: round(float(v), 4) for k, v in scores.items()})
    model.save(output / "model.keras")
    return 0


def fit(cfg: DictConfig, model: Any, feed: Any, validation: Any, epochs: int, callbacks: list[Any]) -> None:
    """Model.fit on `feed` (ordered by epoch already); with `$RUNNER_CHECKPOINT_DIR`, checkpointed into its
    keras/ folder and resumed from there, and SIGTERM raises Preempted once a checkpoint is saved."""
    from runner.harness import batches
    from runner.harness.checkpoint import Checkpoint, ResumedSums, stop_on_sigterm

    def run(until: int, callbacks: list[Any]) -> None:
        val = batches.validation_data(validation, cfg.train.batch_size)
        model.fit(x=feed, epochs=until, shuffle=False, validation_data=val, callbacks=callbacks, verbose=2)

    folder = os.environ.get("RUNNER_CHECKPOINT_DIR")
    if not folder:
        return run(epochs, callbacks)
    checkpoint = Checkpoint(Path(folder) / "keras", feed, cfg.train.get("checkpoint_minutes", 10))
    restore = stop_on_sigterm(checkpoint)
    try:
        epoch, batch = checkpoint.start()
        # Mid-epoch, the rest of that epoch on its own: Keras counts an epoch's batches once, as fit begins, and
        # a short epoch would end on a failed step that still advances the optimizer's steps and Dropout seeds.
        if batch:
            feed.resume(epoch, batch)
            run(epoch + 1, [*callbacks, checkpoint, ResumedSums(checkpoint)])
            feed.resume(0, 0)
        run(epochs, [*callbacks, checkpoint])
    finally:
        restore()  # after training, SIGTERM has its default meaning


def main() -> int:
    cfg = OmegaConf.load(os.environ.get("RUNNER_CONFIG", "/opt/runner/config.yaml"))
    assert isinstance(cfg, DictConfig)
    output = Path(os.environ.get("RUNNER_OUTPUT", "/output"))
    seed_everything(cfg.train.seed, cfg.train.deterministic)
    try:
        allow = cfg.get("allow_targets")
        # The model before the data: a bad model value fails at once.
        model = build(cfg.model, with_project(ALLOWED_TARGET_PREFIXES, allow))
        data = build(cfg.dataset, with_project(LOADER_PREFIXES, allow), seed=cfg.train.seed)
        return train(cfg, model, data, output)
    except (DataError, ConfigError) as exc:
        print(f"runner.harness.train: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
