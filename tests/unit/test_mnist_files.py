"""MNIST files: both layouts detected and read, Kaggle's formats written, bad input named."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from runner.errors import DataError
from runner.mnist import files, to_csv
from runner.mnist.loader import load
from runner.mnist.report import confusion
from tests.helpers import tiny_idx


@pytest.mark.parametrize("gz", [True, False])
def test_idx_layout_read_gzip_or_not(tmp_path: Path, gz: bool) -> None:
    tiny_idx(tmp_path, gz=gz)
    assert files.detect(tmp_path) == "idx"
    digits = files.read(tmp_path)
    assert digits.x_train.shape == (20, 28, 28) and digits.x_train.dtype == np.uint8
    assert digits.y_test is not None and digits.y_test.tolist() == list(range(10))


def test_real_idx_header_bytes(tmp_path: Path) -> None:
    files.write_idx(tmp_path / "a.gz", np.zeros((3, 28, 28)))
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw[:16] == bytes.fromhex("00000803 00000003 0000001c 0000001c".replace(" ", ""))


def test_converter_writes_kaggle_layout_that_loads_back(tmp_path: Path) -> None:
    tiny_idx(tmp_path / "idx")
    assert to_csv.main(["--from", str(tmp_path / "idx"), "--to", str(tmp_path / "csv")]) == 0
    train = (tmp_path / "csv" / "train.csv").read_text().splitlines()
    assert train[0].startswith("label,pixel0,pixel1,") and train[0].endswith(",pixel783")
    assert len(train) == 21 and len(train[1].split(",")) == 785
    test = (tmp_path / "csv" / "test.csv").read_text().splitlines()
    assert test[0].startswith("pixel0,") and len(test) == 11 and len(test[1].split(",")) == 784
    assert files.detect(tmp_path / "csv") == "csv"
    idx, csv = files.read(tmp_path / "idx"), files.read(tmp_path / "csv")
    assert np.array_equal(idx.x_train, csv.x_train) and np.array_equal(idx.y_train, csv.y_train)
    assert np.array_equal(idx.x_test, csv.x_test) and np.array_equal(idx.y_test, csv.y_test)


def test_kaggle_test_csv_has_no_labels(tmp_path: Path) -> None:
    tiny_idx(tmp_path / "idx")
    to_csv.convert(str(tmp_path / "idx"), str(tmp_path / "csv"))
    (tmp_path / "csv" / "test_labels.csv").unlink()
    data = load(seed=0, path=str(tmp_path / "csv"))
    assert data.x_test.shape == (10, 28, 28, 1) and data.y_test is None
    assert data.x_train.dtype == np.float32 and data.x_train.min() >= 0 and data.x_train.max() <= 1


def test_prediction_csv_is_kaggle_format(tmp_path: Path) -> None:
    files.write_submission(tmp_path / "prediction.csv", np.array([7, 2, 1]))
    assert (tmp_path / "prediction.csv").read_text() == "ImageId,Label\n1,7\n2,2\n3,1\n"


def test_confusion_counts_true_by_predicted() -> None:
    counts = confusion(np.array([1, 1, 2]), np.array([1, 2, 2]))
    assert counts[1, 1] == 1 and counts[1, 2] == 1 and counts[2, 2] == 1 and counts.sum() == 3


def test_neither_layout_says_what_was_found_and_expected(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "train-images-idx3-ubyte.gz").write_text("x")
    with pytest.raises(DataError) as err:
        files.detect(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "found notes.txt, train-images-idx3-ubyte.gz" in message
    assert "t10k-labels-idx1-ubyte" in message and "train.csv" in message


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset folder"):
        files.detect(tmp_path / "nope")


def test_label_outside_0_9_names_the_file(tmp_path: Path) -> None:
    tiny_idx(tmp_path)
    files.write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 12, 3, 4, 5, 6, 7, 8, 9]))
    with pytest.raises(DataError) as err:
        files.read(tmp_path)
    assert "t10k-labels-idx1-ubyte.gz: labels must be digits 0-9; found 12 at row 3" in str(err.value)


def test_csv_label_outside_0_9(tmp_path: Path) -> None:
    tiny_idx(tmp_path / "idx")
    to_csv.convert(str(tmp_path / "idx"), str(tmp_path / "csv"))
    path = tmp_path / "csv" / "train.csv"
    lines = path.read_text().splitlines()
    lines[2] = "-1" + lines[2][1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"train\.csv: labels must be digits 0-9; found -1 at row 2"):
        files.read(tmp_path / "csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("a,b\n1,2\n", "no 'label' column"),
        ("label," + ",".join(f"p{i}" for i in range(10)) + "\n", "11 columns, expected 785"),
    ],
)
def test_csv_bad_header(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(DataError, match=message):
        files.read(tmp_path)


def test_not_idx(tmp_path: Path) -> None:
    tiny_idx(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"hello world, not idx"))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: not an IDX file"):
        files.read(tmp_path)
