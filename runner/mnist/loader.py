"""The MNIST loader named by `dataset._target_`: a folder in either layout -> Data scaled to [0, 1]."""

from __future__ import annotations

import numpy as np

from runner.loaders import Data, in_run_path
from runner.mnist import files


def _scale(images: np.ndarray | None) -> np.ndarray | None:
    return None if images is None else (images.astype(np.float32) / 255.0)[..., None]


def load(*, seed: int, path: str, name: str = "mnist") -> Data:
    """Train and test images (N, 28, 28, 1) in [0, 1] with integer labels. `seed` is unused: no sampling."""
    folder = in_run_path(path)
    digits = files.read(folder)
    print(
        f"[data] {name}: {folder} ({digits.layout} layout), {len(digits.x_train)} train images, "
        f"{0 if digits.x_test is None else len(digits.x_test)} test images"
        + ("" if digits.y_test is not None or digits.x_test is None else " (unlabelled)")
    )
    return Data(
        _scale(digits.x_train),
        digits.y_train,
        _scale(digits.x_test),
        digits.y_test,
        info={"data_info.layout": digits.layout, "data_info.train_images": len(digits.x_train)},
    )
