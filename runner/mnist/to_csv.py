"""Convert the MNIST IDX archives to Kaggle's CSV layout (FloydHub's two-step workflow, step one).

    python -m runner.mnist.to_csv --from /input/mnist --to /output

writes train.csv (label + 784 pixels), test.csv (784 pixels, no label, as Kaggle's) and test_labels.csv
(ImageId,Label: the answers for test.csv, so runs on the CSV layout can still report test accuracy).
Container paths (/input, /output) map into the run directory on the local backend.
"""

from __future__ import annotations

import argparse
import sys

from runner.errors import DataError
from runner.loaders import in_run_path
from runner.mnist import files


def convert(source: str, dest: str) -> None:
    folder, out = in_run_path(source), in_run_path(dest)
    if files.detect(folder) != "idx":
        raise DataError(f"{folder}: holds the CSV layout already; expected the IDX archives.")
    digits = files.read_idx_layout(folder)
    out.mkdir(parents=True, exist_ok=True)
    assert digits.x_test is not None and digits.y_test is not None
    files.write_csv(out / "train.csv", digits.x_train, digits.y_train)
    files.write_csv(out / "test.csv", digits.x_test, None)
    files.write_submission(out / "test_labels.csv", digits.y_test)
    print(
        f"wrote {out}/train.csv ({len(digits.x_train)} rows), test.csv ({len(digits.x_test)} rows), test_labels.csv"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.mnist.to_csv", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="folder with the IDX archives")
    parser.add_argument("--to", dest="dest", required=True, help="folder for train.csv and test.csv")
    args = parser.parse_args(argv)
    try:
        convert(args.source, args.dest)
    except DataError as exc:
        print(f"mnist.to_csv: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
