"""The spool: how the in-run harness logs, without ever waiting on a tracking endpoint.

The harness appends one JSON line per record to `$RUNNER_SPOOL/records.jsonl` (a folder of the run's own,
mounted writable into its container); the run's owner reads it from where it left off and writes the records
into MLflow. Training never stalls on logging, and what was spooled while no owner was there reaches the record
when the next owner takes over. Writing a record twice is harmless: the store keeps one copy of a metric
point with the same key, value, time and step, and a param or tag of the same value.
"""

from __future__ import annotations

import json
import math
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
    data = _read_from(folder / RECORDS, offset)
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


def _read_from(path: Path, offset: int) -> bytes:
    """What `path` holds from `offset` on; b"" for a link or anything but a regular file (the run's to write)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return b""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return b""
        fh.seek(offset)
        return fh.read(64 * 1024 * 1024)


def metric_line(line: bytes) -> dict[str, Any] | None:
    """FloydHub's metric line, in any language: `{"metric": "accuracy", "value": 0.98}` alone on a line of
    the run's output (an optional integer "step"); None for any other line."""
    text = line.rsplit(b"\r", 1)[-1].strip()
    if not text.startswith(b'{"metric"') or len(text) > 1000:
        return None
    try:
        found = json.loads(text)
        name, value = found["metric"], float(found["value"])
        step = found.get("step")
    except (ValueError, KeyError, TypeError):
        return None
    if (
        not isinstance(name, str)
        or not name
        or not math.isfinite(value)
        or set(found) - {"metric", "value", "step"}
    ):
        return None
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        return None
    return {"m": name, "v": value, "s": step}


def read_metric_lines(log: Path, offset_file: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The metric lines the run printed since the last read, as records; and what to keep in `offset_file` once
    they are stored. A line without a step gets the next for its metric (0, 1, 2 ...)."""
    try:
        kept = json.loads(offset_file.read_text())
        offset, counts = int(kept["offset"]), dict(kept["counts"])
    except (OSError, ValueError, KeyError, TypeError):
        offset, counts = 0, {}
    data = _read_from(log, offset)
    end = data.rfind(b"\n") + 1
    now = int(time.time() * 1000)
    records = []
    for line in data[:end].split(b"\n"):
        record = metric_line(line)
        if record is None:
            continue
        if record["s"] is None:
            record["s"] = int(counts.get(record["m"], 0))
        counts[record["m"]] = max(int(counts.get(record["m"], 0)), record["s"] + 1)
        records.append({**record, "t": now})
    return records, {"offset": offset + end, "counts": counts}


def ingest(
    folder: Path, offset_file: Path, client: Any, run_id: str, floor: dict[str, int] | None = None
) -> int:
    """Write the new records of the spool `folder` into run `run_id` (whatever a record says, it lands on
    this run only); `offset_file` keeps how far the store has them. `floor`: see `store`."""
    records, offset = read_new(folder, offset_file)
    store(records, client, run_id, floor)
    write_json(offset_file, offset)
    return len(records)


def ingest_log(
    log: Path, offset_file: Path, client: Any, run_id: str, floor: dict[str, int] | None = None
) -> int:
    """Write the metric lines the run printed (metric_line) into run `run_id`."""
    records, kept = read_metric_lines(log, offset_file)
    store(records, client, run_id, floor)
    write_json(offset_file, kept)
    return len(records)


def store(
    records: list[dict[str, Any]], client: Any, run_id: str, floor: dict[str, int] | None = None
) -> None:
    """Records into run `run_id`, whatever they say; a metric point at or below its `floor` step (what an
    earlier attempt of the run recorded: runner.runs.attempts) is not recorded again."""
    from mlflow.entities import Metric, Param

    metrics: list[Any] = []
    params: dict[str, Any] = {}
    floor = floor or {}
    for r in records:
        try:
            if "m" in r:
                key, step = str(r["m"])[:250], int(r.get("s", 0))
                if step > floor.get(key, -1):
                    metrics.append(Metric(key, float(r["v"]), int(r["t"]), step))
            elif "p" in r:
                params.setdefault(str(r["p"])[:250], str(r["v"])[:6000])  # a param keeps its first value
        except (TypeError, ValueError, KeyError):
            continue
    for i in range(0, len(metrics), 1000):
        _log(client, run_id, "metrics", metrics[i : i + 1000])
    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), 100):
        _log(client, run_id, "params", items[i : i + 100])


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
