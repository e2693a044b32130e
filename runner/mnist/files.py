"""MNIST files: the IDX archives (gzip or not) and Kaggle's digit-recognizer CSVs. Pure reading and writing."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.errors import DataError

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
PIXELS = 28 * 28
EXPECTED = (
    "the MNIST IDX archives (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte; .gz or not) or Kaggle's CSV layout (train.csv with a 'label' column and 784 "
    "pixel columns; test.csv optional)"
)


@dataclass
class Digits:
    """Images as uint8 (N, 28, 28); labels as int64 (N,), or None where the layout has none (Kaggle's test)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    layout: str  # "idx" or "csv"


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def detect(folder: Path) -> str:
    """'idx' or 'csv' from what the folder holds; DataError naming what was found otherwise."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such dataset folder. Expected {EXPECTED}.")
    if all(_find(folder, stem) for stem in IDX_FILES.values()):
        return "idx"
    if (folder / "train.csv").is_file():
        return "csv"
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
    raise DataError(f"{folder}: found {found}; expected {EXPECTED}.")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file of unsigned bytes, gzip-compressed or not (told apart by its first bytes)."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}).") from None
    if len(raw) < 8 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (magic {raw[:4].hex() or 'missing'}).")
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but the file holds {body.size} values.")
    return body.reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes; gzip-compressed when the name ends in .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)


def check_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise DataError(
            f"{path}: labels must be digits 0-9; found {labels[bad[0]]} at row {bad[0] + 1} "
            f"({bad.size} bad in all)."
        )
    return labels.astype(np.int64)


def check_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{path}: images of shape {images.shape[1:]}, expected 28x28.")
    return images


def read_idx_layout(folder: Path) -> Digits:
    paths = {key: _find(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path) for key, path in paths.items() if path is not None}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        check_images(paths[f"x_{split}"], x)  # type: ignore[arg-type]
        arrays[f"y_{split}"] = check_labels(paths[f"y_{split}"], y)  # type: ignore[arg-type]
        if len(x) != len(y):
            raise DataError(f"{paths[f'y_{split}']}: {len(y)} labels for {len(x)} images.")
    return Digits(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], "idx")


def read_csv(path: Path, *, labelled: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Kaggle's layout: a header row, then one image per row (`label` first in train.csv), pixels 0-255."""
    with path.open() as f:
        header = f.readline().strip().split(",")
    if labelled and "label" not in header:
        raise DataError(f"{path}: no 'label' column in the header; expected label,pixel0,...,pixel783.")
    if len(header) != PIXELS + labelled:
        raise DataError(
            f"{path}: {len(header)} columns, expected {PIXELS + labelled} ('label' and 784 pixels)."
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    except ValueError as exc:
        raise DataError(f"{path}: not a table of whole numbers ({exc}).") from None
    if labelled:
        at = header.index("label")
        labels = check_labels(path, table[:, at])
        table = np.delete(table, at, axis=1)
    if table.size and (table.min() < 0 or table.max() > 255):
        raise DataError(f"{path}: pixel values must be 0-255, found {table.min()}..{table.max()}.")
    images = table.astype(np.uint8).reshape(-1, 28, 28)
    return images, (labels if labelled else None)


def read_test_labels(path: Path, count: int) -> np.ndarray:
    """Answers for test.csv in the submission format (ImageId,Label): the converter writes them."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    if table.shape != (count, 2) or not np.array_equal(table[:, 0], np.arange(1, count + 1)):
        raise DataError(f"{path}: expected ImageId,Label rows for ImageId 1..{count}.")
    return check_labels(path, table[:, 1])


def read_csv_layout(folder: Path) -> Digits:
    x_train, y_train = read_csv(folder / "train.csv", labelled=True)
    x_test = y_test = None
    if (folder / "test.csv").is_file():
        x_test, _ = read_csv(folder / "test.csv", labelled=False)
        if (folder / "test_labels.csv").is_file():
            y_test = read_test_labels(folder / "test_labels.csv", len(x_test))
    assert y_train is not None
    return Digits(x_train, y_train, x_test, y_test, "csv")


def read(folder: Path) -> Digits:
    return read_idx_layout(folder) if detect(folder) == "idx" else read_csv_layout(folder)


def write_csv(path: Path, images: np.ndarray, labels: np.ndarray | None) -> None:
    """Kaggle's layout; `labels` None writes test.csv (pixels only)."""
    flat = images.reshape(len(images), PIXELS).astype(np.int64)
    columns = [f"pixel{i}" for i in range(PIXELS)]
    if labels is not None:
        flat = np.column_stack([labels, flat])
        columns = ["label", *columns]
    np.savetxt(path, flat, fmt="%d", delimiter=",", header=",".join(columns), comments="")


def write_submission(path: Path, labels: np.ndarray) -> None:
    """Kaggle's submission format: ImageId (from 1),Label."""
    rows = np.column_stack([np.arange(1, len(labels) + 1), labels])
    np.savetxt(path, rows, fmt="%d", delimiter=",", header="ImageId,Label", comments="")
