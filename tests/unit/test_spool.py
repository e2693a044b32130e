"""The spool: what the harness appends reaches the store once, whole lines only, whatever else is in the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.harness import spool


@pytest.fixture
def run(tmp_path: Path) -> tuple[MlflowClient, str, Path, Path]:
    """(client, run id, the spool folder the run writes, the owner's offset file beside it)."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    (tmp_path / "spool").mkdir()
    return client, run_id, tmp_path / "spool", tmp_path / "spool.ingested"


def test_ingest_takes_whole_records_once_and_skips_junk(run) -> None:
    client, run_id, folder, offset = run
    writer = spool.Spool(folder)
    writer.log_metrics({"loss": 0.5, "accuracy": 0.8}, step=0)
    writer.log_params({"model.parameters": 5569})
    with open(folder / spool.RECORDS, "a") as fh:
        fh.write("not json\n[1, 2]\n")  # a run may write anything into its spool
        fh.write('{"m": "loss", "v": 0.25, "t": 1, "s": 1}\n')
        fh.write('{"m": "loss", "v": 0.1')  # a line still being written
    assert spool.ingest(folder, offset, client, run_id) == 4
    assert spool.ingest(folder, offset, client, run_id) == 0  # nothing new: nothing logged twice
    with open(folder / spool.RECORDS, "a") as fh:
        fh.write(', "t": 2, "s": 2}\n')  # the line is complete now
    assert spool.ingest(folder, offset, client, run_id) == 1
    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.5),
        (1, 0.25),
        (2, 0.1),
    ]
    assert client.get_run(run_id).data.params == {"model.parameters": "5569"}


def test_a_refused_record_does_not_hold_up_the_rest(run) -> None:
    client, run_id, folder, offset = run
    writer = spool.Spool(folder)
    writer.log_params({"a": 1})
    writer.log_params({"a": 2, "b": 3})  # MLflow refuses a second value for a param: the first stands
    writer.log_metrics({"loss": 1.0})
    spool.ingest(folder, offset, client, run_id)
    recorded = client.get_run(run_id)
    assert recorded.data.params == {"a": "1", "b": "3"}
    assert recorded.data.metrics == {"loss": 1.0}


def test_links_in_the_spool_are_not_followed(run, tmp_path: Path) -> None:
    client, run_id, folder, offset = run
    host_file = tmp_path / "host-secret.jsonl"  # a file of the host the run was not given
    host_file.write_text('{"p": "secret", "v": "hunter2"}\n')
    (folder / spool.RECORDS).symlink_to(host_file)
    (folder / ".spool.ingested.tmp").symlink_to(host_file)  # where a careless owner would write
    assert spool.ingest(folder, offset, client, run_id) == 0
    assert client.get_run(run_id).data.params == {}
    assert host_file.read_text() == '{"p": "secret", "v": "hunter2"}\n'
    assert offset.parent != folder  # the offset is kept out of the run's reach
