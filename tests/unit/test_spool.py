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


def test_metric_lines_of_any_language_become_metrics_once(run, tmp_path: Path) -> None:
    """FloydHub's convention: `{"metric": NAME, "value": NUMBER}` alone on a line of the run's output."""
    client, run_id, _, _ = run
    log, offset = tmp_path / "run.log", tmp_path / "metric-lines.ingested"
    log.write_bytes(
        b"Epoch 1/2\n"
        b'{"metric": "accuracy", "value": 0.5}\n'
        b'12/12 [====]\r{"metric": "loss", "value": 1.5}\n'  # after a progress bar's last redraw
        b'  {"metric": "accuracy", "value": 0.75}  \n'
        b'{"metric": "loss", "value": "nan"}\n{"metric": "x", "value": 1, "extra": 2}\n{"metric": 3, "value": 1}\n'
        b'{"metric": "loss", "value": 1.0, "step": 7}\n'
        b'{"metric": "loss", "value": 0.5'  # still being written
    )
    assert spool.ingest_log(log, offset, client, run_id) == 4
    assert spool.ingest_log(log, offset, client, run_id) == 0  # nothing twice
    with open(log, "ab") as fh:
        fh.write(b"}\n")
    assert spool.ingest_log(log, offset, client, run_id) == 1

    def points(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))

    assert points("accuracy") == [(0, 0.5), (1, 0.75)]  # no step given: the next one for its metric
    assert points("loss") == [(0, 1.5), (7, 1.0), (8, 0.5)]
    assert set(client.get_run(run_id).data.metrics) == {"accuracy", "loss"}


def test_metric_lines_are_not_read_through_a_link(run, tmp_path: Path) -> None:
    client, run_id, _, _ = run
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text('{"metric": "secret", "value": 1}\n')
    (tmp_path / "run.log").symlink_to(elsewhere)
    assert spool.ingest_log(tmp_path / "run.log", tmp_path / "offset", client, run_id) == 0
