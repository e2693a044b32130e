"""A finished run's `/output`, as a folder: the run directory if it is still here, else its MLflow artifacts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from runner.datasets.errors import DatasetError
from runner.runs.rundir import RunDir
from runner.tracking.record import get_run
from runner.tracking.store import store_uri


@contextmanager
def run_output(project: Path, run_id: str) -> Iterator[Path]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = store_uri(project)
    client = MlflowClient(uri)
    run = get_run(uri, run_id)
    if run.info.status != "FINISHED":
        raise DatasetError(
            f"Run {run_id} is {run.info.status}: only a FINISHED run's output becomes a dataset."
        )
    local = RunDir.of(project, run_id).output
    if local.is_dir() and any(local.iterdir()):
        yield local
        return
    (project / ".runner").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=project / ".runner", prefix="fromrun-") as tmp:
        try:
            path = Path(client.download_artifacts(run_id, "output", tmp))
        except (MlflowException, OSError) as exc:
            raise DatasetError(f"Run {run_id} kept no output (no output/ artifacts).") from exc
        yield path
