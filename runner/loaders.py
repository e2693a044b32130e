"""In-run data loaders, named by the `dataset` config's `_target_`. They run inside the run's environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Data:
    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any  # None where the test split has no labels (Kaggle's test.csv)
    info: dict[str, Any] = field(default_factory=dict)  # facts about the data: run params (data_info.*)


@dataclass(frozen=True)
class Lookup:
    """Inputs built row by row on demand: name -> (table, per-row indices into it), so row i of an input is
    table[indices[i]]. Large inputs (VQA: 30 word vectors of 300 per question, one of 123,287 fc7 columns per
    image) are then never held densely; training feeds them batch by batch (runner/batches.py)."""

    inputs: dict[str, tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values()))[1])

    def rows(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        return {name: table[index[rows]] for name, (table, index) in self.inputs.items()}

    def subset(self, rows: np.ndarray) -> Lookup:
        return Lookup({name: (table, index[rows]) for name, (table, index) in self.inputs.items()})


def in_run_path(path: str | os.PathLike[str]) -> Path:
    """A path as the run sees it. Absolute paths (/input/mnist, /output) are the container's; the local
    backend has no container and sets RUNNER_ROOT to the run directory, which holds the same layout.
    Relative paths are relative to the working directory (the code snapshot)."""
    p = Path(path)
    root = os.environ.get("RUNNER_ROOT")
    return Path(root, *p.parts[1:]) if p.is_absolute() and root else p


def random_binary(
    *, seed: int, n_train: int = 1000, n_test: int = 100, features: int = 20, name: str = ""
) -> Data:
    """The seed's test.py: uniform [0, 1) features, labels in {0, 1}, drawn in that order from `seed`."""
    rng = np.random.RandomState(seed)
    x_train = rng.random_sample((n_train, features))
    y_train = rng.randint(2, size=(n_train, 1))
    x_test = rng.random_sample((n_test, features))
    y_test = rng.randint(2, size=(n_test, 1))
    return Data(x_train, y_train, x_test, y_test)
