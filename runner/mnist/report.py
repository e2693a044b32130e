"""MNIST evaluation, named by the config's `evaluate._target_`: Kaggle's prediction.csv, test accuracy and a
confusion-matrix picture in the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runner.loaders import Data
from runner.mnist.files import write_submission


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def plot_confusion(counts: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(np.log1p(counts), cmap="Blues")  # log scale: the off-diagonal errors stay visible
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color="white" if i == j else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(*, model: Any, data: Data, output: Path, batch_size: int) -> dict[str, float]:
    """Predict the test images; score them where labels exist. Returns metrics (logged as test_<name>)."""
    if data.x_test is None:
        print("[evaluate] no test images: nothing to predict")
        return {}
    predicted = np.argmax(model.predict(data.x_test, batch_size=batch_size, verbose=0), axis=1)
    write_submission(output / "prediction.csv", predicted)
    if data.y_test is None:
        print(f"[evaluate] {len(predicted)} predictions written to prediction.csv (no test labels)")
        return {}
    accuracy = float(np.mean(predicted == data.y_test))
    counts = confusion(data.y_test, predicted)
    np.savetxt(output / "confusion_matrix.csv", counts, fmt="%d", delimiter=",")
    plot_confusion(counts, output / "confusion_matrix.png", f"test accuracy {accuracy:.4f}")
    return {"accuracy": accuracy}
