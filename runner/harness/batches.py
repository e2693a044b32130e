"""Feeding Keras: training rows as batches in an order drawn from (seed, epoch); arrays as they are otherwise."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from runner.loaders import Lookup


def take(x: Any, rows: np.ndarray | slice) -> Any:
    """Rows of one input array, of each array of a multi-input dict, or of a Lookup (as arrays)."""
    if isinstance(x, Lookup):
        return x.rows(rows)
    return {k: v[rows] for k, v in x.items()} if isinstance(x, dict) else x[rows]


class Batches(keras.utils.PyDataset):
    """Rows in batches. With a seed, epoch k's order is a function of (seed, k) alone, so that a run resumed at
    epoch k feeds it as an uninterrupted run does; `resume(epoch, skip)` leaves out that epoch's first `skip`
    batches (trained before the interruption). `EpochOrder` tells it the epoch."""

    def __init__(self, x: Any, y: np.ndarray | None, batch_size: int, seed: int | None = None) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.rows = (
            len(x) if isinstance(x, Lookup) else len(next(iter(x.values())) if isinstance(x, dict) else x)
        )
        self.resumed: tuple[int, int] = (0, 0)
        self.set_epoch(0)

    @property
    def per_epoch(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.skip = self.resumed[1] if epoch == self.resumed[0] else 0
        if self.seed is None:
            self.order = np.arange(self.rows)
        else:
            self.order = np.random.default_rng((self.seed, epoch)).permutation(self.rows)

    def resume(self, epoch: int, skip: int) -> None:
        self.resumed = (epoch, skip)
        self.set_epoch(epoch)

    def __len__(self) -> int:
        return self.per_epoch - self.skip

    def __getitem__(self, i: int) -> Any:
        start = (self.skip + i) * self.batch_size
        rows = self.order[start : start + self.batch_size]
        x = take(self.x, rows)
        return x if self.y is None else (x, self.y[rows])


class EpochOrder(keras.callbacks.Callback):
    """Sets the training batches' epoch before Keras starts reading it (first among the callbacks)."""

    def __init__(self, batches: Batches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.batches.set_epoch(epoch)


def feed(x: Any, y: Any, batch_size: int) -> dict[str, Any]:
    """Keyword arguments for Model.evaluate / predict (y None): a Lookup as batches, or arrays and a batch
    size."""
    if isinstance(x, Lookup):
        return {"x": Batches(x, y, batch_size)}
    return {"x": x, "batch_size": batch_size} | ({} if y is None else {"y": y})


def validation_data(validation: tuple[Any, Any] | None, batch_size: int) -> Any:
    if validation is None or not isinstance(validation[0], Lookup):
        return validation
    return Batches(*validation, batch_size)
