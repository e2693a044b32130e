"""`runner data import NAME --from DIR_OR_URL`: MNIST (IDX archives, checked against the published SHA-256
sums) or Kaggle's digit-recognizer CSVs, made into the next version of NAME."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from runner.datasets.add import Added, add
from runner.datasets.errors import ChecksumMismatch, DatasetError

# The original archives' SHA-256 sums, as published with them.
MNIST = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
PUBLIC_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"  # a public mirror of the original files
KAGGLE_HEADERS = {
    "train.csv": ["label", *(f"pixel{i}" for i in range(784))],
    "test.csv": [f"pixel{i}" for i in range(784)],
}
KAGGLE_OPTIONAL = ("sample_submission.csv",)


def import_dataset(project: Path, name: str, source: str, message: str | None = None) -> Added:
    (project / ".runner").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project / ".runner", prefix="import-") as tmp:
        staged = Path(tmp) / "staged"
        staged.mkdir()
        layout = _stage(source, Path(tmp), staged)
        return add(project, name, staged, message or f"{layout} from {source}")


def _stage(source: str, tmp: Path, staged: Path) -> str:
    """Copy the source's files into `staged`, checked; returns the layout's name."""
    if source.startswith(("http://", "https://", "file://")):
        _download_mnist(source, staged)
        return "MNIST"
    path = Path(source)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp / "unzipped")
        path = tmp / "unzipped"
    if not path.is_dir():
        raise DatasetError(f"--from {source}: not a folder, a .zip, or an http(s) URL.")
    if all((path / f).is_file() for f in MNIST):
        for f in MNIST:
            shutil.copyfile(path / f, staged / f)
        _check_mnist(staged, _published_sums(path))
        return "MNIST"
    if all((path / f).is_file() for f in KAGGLE_HEADERS):
        for f in (*KAGGLE_HEADERS, *KAGGLE_OPTIONAL):
            if (path / f).is_file():
                shutil.copyfile(path / f, staged / f)
        _check_kaggle(staged)
        return "Kaggle digit-recognizer"
    raise DatasetError(
        f"--from {source}: found neither MNIST's archives ({', '.join(MNIST)}) nor Kaggle's digit-recognizer "
        "files (train.csv, test.csv)."
    )


def _download_mnist(url: str, staged: Path) -> None:
    base = url if url.endswith("/") else url + "/"
    for f in MNIST:
        try:
            with urllib.request.urlopen(base + f, timeout=60) as resp, open(staged / f, "wb") as out:
                shutil.copyfileobj(resp, out)
        except (urllib.error.URLError, OSError) as exc:
            raise DatasetError(
                f"Could not download {base + f} ({exc}). Import from a folder that holds the four files instead: "
                "runner data import mnist --from DIR"
            ) from exc
    _check_mnist(staged, {})


def _published_sums(folder: Path) -> dict[str, str]:
    """A mirror's own SHA256SUMS (`sum  name` lines), if it has one."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return {}
    pairs = (line.split() for line in sums.read_text().splitlines() if line.strip())
    return {p[1].lstrip("*"): p[0].lower() for p in pairs if len(p) == 2}


def _check_mnist(staged: Path, mirror_sums: dict[str, str]) -> None:
    for f, expected in MNIST.items():
        if mirror_sums.get(f, expected) != expected:
            raise ChecksumMismatch(
                f"The mirror's SHA256SUMS lists {f} as {mirror_sums[f]}, not the published {expected}. Nothing was imported."
            )
        actual = _sha256(staged / f)
        if actual != expected:
            raise ChecksumMismatch(
                f"{f}: SHA-256 {actual}, but the published sum is {expected}: the file is damaged or not MNIST's. "
                "Nothing was imported; fetch it again from the public source."
            )


def _check_kaggle(staged: Path) -> None:
    for f, header in KAGGLE_HEADERS.items():
        with open(staged / f, encoding="utf-8", errors="replace") as fh:
            first = fh.readline().strip().split(",")
        if first != header:
            raise DatasetError(
                f"{f}: the header is not Kaggle's digit-recognizer layout ({','.join(header[:3])},...,"
                f"{header[-1]}; {len(header)} columns). Nothing was imported."
            )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
