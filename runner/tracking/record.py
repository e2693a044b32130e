"""The MLflow side: the host's record of a run, and the guarded endpoint a run's own MLflow calls reach."""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.compose.spec import RunSpec
from runner.runs.rundir import RunDir

# MLflow's limits: 100 params per batch call, 6000 characters per value.
_BATCH = 100
_MAX_VALUE = 6000


def get_run(uri: str, run_id: str) -> Any:
    """The run, or a RunnerError that says how to find run ids."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from runner.errors import RunnerError

    try:
        return MlflowClient(uri).get_run(run_id)
    except MlflowException as exc:
        raise RunnerError(f"No run {run_id} in {uri}. List runs with: runner ls") from exc


@contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first touch of a SQLite store: parallel runs would race to create its tables."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from runner.environment.lock import cache_dir, content_hash

    path = (
        cache_dir() / "locks" / f"store-{content_hash(os.path.abspath(uri[len('sqlite:///') :]))[:16]}.lock"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


class Recorder:
    """Creates the MLflow run before anything starts, and always closes it."""

    def __init__(self, spec: RunSpec):
        from mlflow import MlflowClient

        self.spec = spec
        self.run_id = ""
        self.experiment_id = ""
        with store_init_lock(spec.tracking_uri):
            self.client = MlflowClient(spec.tracking_uri)  # creates or migrates the store, once

    def start(self, tags: dict[str, str], given_run: str | None = None) -> str:
        """Create the run; or record into `given_run`, a RUNNING run made for us (`mlflow run` hands one over).
        Its params are staged with its other inputs (stage_record), and written while it starts."""
        given = self.client.get_run(given_run) if given_run else None
        if given is not None and given.info.status == "RUNNING":
            self.run_id, self.experiment_id = given_run or "", given.info.experiment_id
            self.set_tags(tags)
        else:
            exp = self.client.get_experiment_by_name(self.spec.mlflow_experiment)
            self.experiment_id = exp.experiment_id if exp else self._create_experiment()
            self.run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        return self.run_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.spec.mlflow_experiment)
        except MlflowException:  # created by a parallel run meanwhile
            exp = self.client.get_experiment_by_name(self.spec.mlflow_experiment)
            assert exp is not None
            return exp.experiment_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:_MAX_VALUE]) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, tags=items[i : i + _BATCH])

    def log_metric(self, key: str, value: float) -> None:
        self.client.log_metric(self.run_id, key, value)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_artifacts(self, path: Path, artifact_path: str | None = None) -> None:
        if path.is_dir() and any(path.iterdir()):
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def stage_record(run_dir: RunDir, params: dict[str, str], tags: dict[str, str]) -> None:
    """Stage the run's params and (more) tags for `record_inputs`."""
    staged = _read_staged(run_dir)
    staged["params"].update(params)
    staged["tags"].update(tags)
    run_dir.record_staged.write_text(json.dumps(staged))


def _read_staged(run_dir: RunDir) -> dict[str, dict[str, str]]:
    try:
        staged = json.loads(run_dir.record_staged.read_text())
    except (OSError, ValueError):
        staged = {}
    return {"params": dict(staged.get("params", {})), "tags": dict(staged.get("tags", {}))}


def record_inputs(client: Any, run_id: str, run_dir: RunDir) -> None:
    """Write the run's staged inputs (params, tags, and the files in record/) into its record, once: whoever
    owns the run does it as the run starts, an owner that takes over if the last one could not."""
    from mlflow.entities import Param, RunTag

    done = run_dir.recorded
    if done.exists():
        return
    staged = _read_staged(run_dir)
    params = [Param(k, str(v)[:_MAX_VALUE]) for k, v in staged["params"].items()]
    tags = [RunTag(k, str(v)[:_MAX_VALUE]) for k, v in staged["tags"].items()]
    for i in range(0, max(len(params), len(tags)), _BATCH):
        client.log_batch(run_id, params=params[i : i + _BATCH], tags=tags[i : i + _BATCH])
    folder = run_dir.record
    if folder.is_dir() and any(folder.iterdir()):
        client.log_artifacts(run_id, str(folder))
    done.touch()


WORKDIR = "workdir"  # artifacts: what a run wrote in its working directory (its copy of the code)
# Files, bytes: a script that downloads its data there keeps it out of the record.
WORKDIR_LIMIT = (1000, 1_000_000_000)


def log_outputs(
    client: Any,
    run_id: str,
    folder: Path,
    where: str = "output",
    unchanged: dict[str, list[int]] | None = None,
    limit: tuple[int, int] | None = None,
) -> list[str]:
    """The regular files a run wrote under `folder`, as artifacts under `where`/; links (to a host file, say)
    and other special files are never followed nor copied. With `unchanged` (a manifest: name -> [size,
    mtime_ns]), files still as the manifest has them are not kept; with `limit` (files, bytes), no more than that
    is kept. Returns what was left out, one line each for the log. (The run has ended: nothing changes the folder
    meanwhile.)"""
    import stat

    said: list[str] = []
    unchanged = unchanged or {}
    files, size, over, over_size = 0, 0, 0, 0
    if not folder.is_dir():
        return said
    for dirpath, dirnames, filenames in os.walk(folder):  # a linked folder is listed, never entered
        dirnames.sort()
        here = Path(dirpath)
        into = "/".join((where, *here.relative_to(folder).parts))
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                if str((here / name).relative_to(folder)) not in unchanged:
                    said.append(
                        f"{where}/{(here / name).relative_to(folder)}: a link, not kept (only regular files are)"
                    )
                dirnames.remove(name)
        for name in sorted(filenames):
            path = here / name
            info = os.lstat(path)
            rel = str(path.relative_to(folder))
            if unchanged.get(rel) == [info.st_size, info.st_mtime_ns]:
                continue
            if not stat.S_ISREG(info.st_mode):
                said.append(f"{where}/{rel}: a link or special file, not kept (only regular files are)")
                continue
            if limit and (files + 1 > limit[0] or size + info.st_size > limit[1]):
                over, over_size = over + 1, over_size + info.st_size
                continue
            client.log_artifact(run_id, str(path), into)
            files, size = files + 1, size + info.st_size
    if over and limit:
        said.append(
            f"{where}/: {over} more file(s) ({over_size / 1e6:.1f} MB) not kept, past {limit[0]} files or "
            f"{limit[1] / 1e9:g} GB: write what matters to /output"
        )
    return said


def manifest(folder: Path) -> dict[str, list[int]]:
    """Every entry under `folder` (links included, not followed) -> [size, mtime_ns]: what log_outputs leaves out."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*filenames, *(d for d in dirnames if os.path.islink(os.path.join(dirpath, d)))]:
            info = os.lstat(os.path.join(dirpath, name))
            found[os.path.relpath(os.path.join(dirpath, name), folder)] = [info.st_size, info.st_mtime_ns]
    return found


# An escape sequence (CSI such as colours and "erase line", OSC such as titles, or a two-byte one), a carriage
# return or a backspace: what a terminal acts on instead of printing.
TERMINAL = re.compile(r"(\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|\r|\x08)")


def log_the_log(client: Any, run_id: str, logfile: Path) -> None:
    """The run's log as an artifact (run.log), as a person would read it (readable_log); the file in the run's
    folder stays as it came, for `runner logs`."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="runner-log-") as tmp:
        readable = Path(tmp) / "run.log"
        readable.write_text(
            readable_log(logfile.read_text(encoding="utf-8", errors="replace")), encoding="utf-8"
        )
        client.log_artifact(run_id, str(readable))


def readable_log(text: str) -> str:
    """What a terminal would finally show of `text`: ANSI codes gone, carriage-return redraws (progress bars)
    and backspaces applied, each line at its last state."""
    lines = []
    for raw in text.split("\n"):
        if "\r" not in raw and "\b" not in raw and "\x1b" not in raw:
            lines.append(raw)
            continue
        line: list[str] = []
        col = 0
        for piece in TERMINAL.split(raw):
            if not piece:
                continue
            if piece == "\r":
                col = 0
            elif piece == "\x08":
                col = max(0, col - 1)
            elif piece.startswith("\x1b"):
                if piece.startswith("\x1b[") and piece.endswith("K"):  # erase to the end of the line
                    del line[col:]
            else:
                for ch in piece:
                    if col < len(line):
                        line[col] = ch
                    else:
                        line.append(ch)
                    col += 1
        lines.append("".join(line).rstrip())
    return "\n".join(lines)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# The REST calls a run may make, each about one run: the one named in the request, which must be its own.
RUN_CALLS = {
    "/api/2.0/mlflow/runs/get",
    "/api/2.0/mlflow/runs/log-metric",
    "/api/2.0/mlflow/runs/log-parameter",
    "/api/2.0/mlflow/runs/set-tag",
    "/api/2.0/mlflow/runs/delete-tag",
    "/api/2.0/mlflow/runs/log-batch",
    "/api/2.0/mlflow/runs/log-inputs",
    "/api/2.0/mlflow/runs/update",
    "/api/2.0/mlflow/metrics/get-history",
}


def guard(app: Any, run_id: str, token: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Any:
    """A WSGI wrapper that lets through only calls about run `run_id` that carry its token. Anyone else on
    the network (another run's container included) is refused, and cannot read any run either. A run may
    not end itself: the status and end time of an update are dropped (its owner records the ending). The
    Host header must be one of `hosts` (no DNS rebinding)."""
    import json
    from io import BytesIO
    from urllib.parse import parse_qs

    def refuse(start_response: Any, code: str, why: str) -> list[bytes]:
        body = json.dumps({"error_code": "PERMISSION_DENIED", "message": why}).encode()
        start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("HTTP_HOST", "").rsplit(":", 1)[0] not in hosts:
            return refuse(
                start_response, "403 Forbidden", "this endpoint answers to the run's own names only"
            )
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {token}":
            return refuse(start_response, "401 Unauthorized", "this endpoint serves one run, with its token")
        path = environ.get("PATH_INFO", "")
        if path not in RUN_CALLS:
            return refuse(start_response, "403 Forbidden", f"{path} is not open to runs")
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if environ.get("REQUEST_METHOD") == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            named = {k: v[0] for k, v in query.items() if v}
        else:
            try:
                named = json.loads(body or b"{}")
            except ValueError:
                return refuse(start_response, "400 Bad Request", "the body is not JSON")
            if not isinstance(named, dict):
                return refuse(start_response, "400 Bad Request", "the body is not a JSON object")
        ids = {named.get("run_id"), named.get("run_uuid")} - {None, ""}
        if ids != {run_id}:
            return refuse(start_response, "403 Forbidden", "a run may read and write its own record only")
        if path.endswith("/runs/update"):
            named = {k: v for k, v in named.items() if k not in ("status", "end_time")}
            body = json.dumps(named).encode()
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = BytesIO(body)
        return app(environ, start_response)

    return wsgi


def server_environment(store_uri: str, bind: str, reach_as: str, names: tuple[str, ...]) -> None:
    """What MLflow's server reads from the environment, some of it when first imported: set it before."""
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = store_uri
    os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = store_uri
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "false"
    # MLflow's own Host-header check (DNS-rebinding protection), told the names runs use to reach us.
    hosts = sorted({bind, "localhost", "127.0.0.1", *names} - {""})
    os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = ",".join([*hosts, *(f"{h}:*" for h in hosts)])


class Endpoint:
    """MLflow's tracking REST API for one run, served from its owner against the project's store.

    In-process (a werkzeug thread) rather than `mlflow server`: the same API, ready in about a second instead
    of ten, and behind `guard`: only the run, with its token, reaches its own record.
    """

    def __init__(self, store_uri: str, bind: str, port: int, run_id: str, token: str, names: tuple[str, ...]):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per metric is noise
                pass

        server_environment(store_uri, bind, "", names)
        from mlflow.server import app

        self.port = port
        hosts = tuple(sorted({bind, "localhost", "127.0.0.1", *names} - {""}))
        self._server = make_server(
            bind, port, guard(app, run_id, token, hosts), threaded=True, request_handler=QuietHandler
        )
        self._thread = threading.Thread(  # a short poll: stopping it is on the path to the run's ending
            target=self._server.serve_forever, args=(0.05,), name="mlflow-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def is_remote(uri: str) -> bool:
    """A tracking server the run can reach by itself (a team's), rather than a store on this host."""
    return uri.startswith(("http://", "https://", "databricks"))
