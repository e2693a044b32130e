"""The spool: how the in-run harness logs, without ever waiting on a tracking endpoint.

The harness appends one JSON line per record to `$RUNNER_SPOOL/records.jsonl` (a folder of the run's own,
mounted writable into its container); the run's owner reads it from where it left off and writes the records
into MLflow. Training never stalls on logging, and what was spooled while no owner was there reaches the record
when the next owner takes over. Writing a record twice is harmless: the store keeps one copy of a metric
point with the same key, value, time and step, and a param or tag of the same value.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from runner.harness.shim import write_json

RECORDS = "records.jsonl"
_MAX_LINE = 64 * 1024


class Spool:
    """The harness's side: append-only, one write per batch of records."""

    def __init__(self, folder: str | os.PathLike[str] | None = None):
        folder = folder or os.environ.get("RUNNER_SPOOL")
        if not folder:
            raise RuntimeError("RUNNER_SPOOL is not set: the harness runs only inside a runner run")
        self.path = Path(folder) / RECORDS

    def _append(self, records: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self._append([{"m": k, "v": float(v), "t": now, "s": int(step)} for k, v in metrics.items()])

    def log_params(self, params: dict[str, Any]) -> None:
        self._append([{"p": k, "v": str(v)} for k, v in params.items()])


def read_new(folder: Path, offset_file: Path) -> tuple[list[dict[str, Any]], int]:
    """The whole records not yet ingested, and the offset to commit once they are in the store. A line
    still being written (no newline yet) waits for the next read; a line that is not a record is skipped.
    The spool is the run's to write: a link in place of the records file is not followed (it could name
    any file the owner can read), and the offset lives outside the spool, where the run cannot reach."""
    try:
        offset = int(offset_file.read_text() or 0)
    except (OSError, ValueError):
        offset = 0
    try:
        fd = os.open(folder / RECORDS, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return [], offset
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return [], offset
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        if len(line) > _MAX_LINE:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end


def ingest(folder: Path, offset_file: Path, client: Any, run_id: str) -> int:
    """Write the new records of the spool `folder` into run `run_id` (whatever a record says, it lands on
    this run only); `offset_file` keeps how far the store has them."""
    from mlflow.entities import Metric, Param

    records, offset = read_new(folder, offset_file)
    metrics: list[Any] = []
    params: dict[str, Any] = {}
    for r in records:
        try:
            if "m" in r:
                metrics.append(Metric(str(r["m"])[:250], float(r["v"]), int(r["t"]), int(r.get("s", 0))))
            elif "p" in r:
                params.setdefault(str(r["p"])[:250], str(r["v"])[:6000])  # a param keeps its first value
        except (TypeError, ValueError, KeyError):
            continue
    for i in range(0, len(metrics), 1000):
        _log(client, run_id, "metrics", metrics[i : i + 1000])
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        _log(client, run_id, "params", items[i : i + 100])
    write_json(offset_file, offset)
    return len(records)


def _log(client: Any, run_id: str, kind: str, items: list[Any]) -> None:
    """A batch; where the store refuses it (a param given two values, a bad key), each record alone, and
    the ones it refuses are dropped rather than holding up every record after them."""
    from mlflow.exceptions import MlflowException

    try:
        client.log_batch(run_id, **{kind: items})
    except MlflowException:
        for item in items:
            try:
                client.log_batch(run_id, **{kind: [item]})
            except MlflowException:
                continue
