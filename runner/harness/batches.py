"""Feeding Keras: arrays as they are; a Lookup as batches built on demand, reshuffled each epoch from a seed."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np

from runner.loaders import Lookup


class Batches(keras.utils.PyDataset):
    def __init__(
        self, x: Lookup, y: np.ndarray | None, batch_size: int, shuffle: bool = False, seed: int | None = None
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.order = np.arange(len(x))
        self.rng = np.random.RandomState(seed) if shuffle else None
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    def __getitem__(self, i: int) -> Any:
        rows = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        x = self.x.rows(rows)
        return x if self.y is None else (x, self.y[rows])

    def on_epoch_end(self) -> None:
        if self.rng is not None:
            self.rng.shuffle(self.order)


def feed(x: Any, y: Any, batch_size: int, shuffle: bool = False, seed: int | None = None) -> dict[str, Any]:
    """Keyword arguments for Model.fit / evaluate / predict (y None): a Lookup as batches (shuffled each epoch
    when asked), or arrays and a batch size (Model.fit shuffles those itself)."""
    if isinstance(x, Lookup):
        return {"x": Batches(x, y, batch_size, shuffle=shuffle, seed=seed)}
    return {"x": x, "batch_size": batch_size} | ({} if y is None else {"y": y})


def validation_data(validation: tuple[Any, Any] | None, batch_size: int) -> Any:
    if validation is None or not isinstance(validation[0], Lookup):
        return validation
    return Batches(*validation, batch_size)
