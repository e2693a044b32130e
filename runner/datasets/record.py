"""What a run used, on its MLflow record: tags per dataset, and MLflow dataset inputs for the UI."""

from __future__ import annotations

import json
from typing import Any

from runner.datasets.entry import DataMount


def tags(mounts: tuple[DataMount, ...]) -> dict[str, str]:
    out = {"runner.data": ", ".join(f"{m.name}@{m.version}:{m.target}" for m in mounts)} if mounts else {}
    for m in mounts:
        key = f"runner.data.{m.name}"
        out |= {
            f"{key}.version": m.version,
            f"{key}.rev": m.rev,
            f"{key}.md5": m.md5,
            f"{key}.files": str(m.files),
            f"{key}.size": str(m.size),
            f"{key}.mount": m.target,
        }
    return out


def log_inputs(client: Any, run_id: str, project: str, mounts: tuple[DataMount, ...]) -> None:
    """One MLflow dataset input per mount: name, DVC checksum as digest, where it lives, its size."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    if not mounts:
        return
    inputs = [
        DatasetInput(
            Dataset(
                name=m.name,
                digest=m.md5,
                source_type="dvc",
                source=json.dumps({"repo": project, "path": f"data/{m.name}", "rev": m.rev}),
                profile=json.dumps({"version": m.version, "files": m.files, "size": m.size}),
            ),
            tags=[InputTag("mlflow.data.context", "input"), InputTag("runner.mount", m.target)],
        )
        for m in mounts
    ]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except MlflowException:  # another run added the same dataset between MLflow's look and its insert
        client.log_inputs(run_id, datasets=inputs)
