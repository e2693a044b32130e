"""The MLflow side: the host's record of a run, and the tracking endpoint that runs log into."""

from __future__ import annotations

import fcntl
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.spec import RunSpec

# MLflow's limits: 100 params per batch call, 6000 characters per value.
_BATCH = 100
_MAX_VALUE = 6000
STOP_TAG = "runner.stop_requested"  # set by `runner stop`; the run then ends KILLED


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
    from runner.environment import cache_dir, content_hash

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
        with store_init_lock(spec.tracking_uri):
            self.client = MlflowClient(spec.tracking_uri)  # creates or migrates the store, once

    def start(self, tags: dict[str, str], adopt: str | None = None) -> str:
        """Create the run; or adopt `adopt`, a RUNNING run made for us (`mlflow run` hands one over)."""
        if adopt and self.client.get_run(adopt).info.status == "RUNNING":
            self.run_id = adopt
            self.set_tags(tags)
        else:
            exp = self.client.get_experiment_by_name(self.spec.mlflow_experiment)
            exp_id = exp.experiment_id if exp else self._create_experiment()
            self.run_id = self.client.create_run(exp_id, tags=tags).info.run_id
        self.log_params(dict(self.spec.params))
        return self.run_id

    def _create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.spec.mlflow_experiment)
        except MlflowException:  # created by a parallel run meanwhile
            exp = self.client.get_experiment_by_name(self.spec.mlflow_experiment)
            assert exp is not None
            return exp.experiment_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:_MAX_VALUE]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + _BATCH])

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

    def stop_requested(self) -> bool:
        return self.client.get_run(self.run_id).data.tags.get(STOP_TAG) == "true"

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class TrackingServer:
    """MLflow's tracking REST API served from this process against the project's store.

    In-process (a werkzeug thread) rather than `mlflow server`: the same API, but ready in about a second
    instead of ten. One per runner process; parallel runs share it.
    """

    _lock = threading.Lock()
    _instance: TrackingServer | None = None

    def __init__(self, store_uri: str, bind: str, names: tuple[str, ...]):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per metric is noise
                pass

        os.environ["_MLFLOW_SERVER_FILE_STORE"] = store_uri
        os.environ["_MLFLOW_SERVER_REGISTRY_STORE"] = store_uri
        os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "false"
        # MLflow's own Host-header check (DNS-rebinding protection), told the names runs use to reach us.
        hosts = sorted({bind, "localhost", "127.0.0.1", *names})
        os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = ",".join([*hosts, *(f"{h}:*" for h in hosts)])
        from mlflow.server import app

        self.port = _free_port(bind)
        self._server = make_server(bind, self.port, app, threaded=True, request_handler=QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="mlflow-server", daemon=True)
        self._thread.start()
        self.bind = bind

    def uri_for(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    @classmethod
    def shared(cls, store_uri: str, bind: str, names: tuple[str, ...] = ()) -> TrackingServer:
        """The process's server for (store, bind address), started on first use."""
        with cls._lock:
            inst = cls._instance
            if inst is None or inst.bind != bind or os.environ.get("_MLFLOW_SERVER_FILE_STORE") != store_uri:
                if inst is not None:
                    inst.stop()
                inst = cls._instance = cls(store_uri, bind, names)  # listening once constructed
            return inst


def job_tracking_uri(spec: RunSpec, bind: str, reach_as: str, names: tuple[str, ...] = ()) -> str:
    """The URI a run logs to: the configured server if remote, else our in-process server."""
    if spec.tracking_uri.startswith(("http://", "https://", "databricks")):
        return spec.tracking_uri
    return TrackingServer.shared(spec.tracking_uri, bind, names).uri_for(reach_as)
