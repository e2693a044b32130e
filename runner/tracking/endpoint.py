"""The tracking endpoint a run's own MLflow calls reach: MLflow's own server app in the run's owner, behind a guard
that admits the run's calls about itself alone."""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any


def listen(host: str, port: int = 0) -> socket.socket:
    """A socket listening on `host` (a free port where `port` is 0): the endpoint's from the moment its port is
    chosen, so no other run's endpoint takes the port meanwhile, and the run's first calls wait in its queue
    until the endpoint serves them."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # an earlier owner's port, in TIME_WAIT
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


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
    "/api/2.0/mlflow/runs/outputs",
}


MODELS = "/api/2.0/mlflow/logged-models"  # a run's logged models (autolog.models=true): its own only
SPOOL_ARTIFACTS = "artifacts"  # in the run's spool: what its MLflow logs as the run's artifacts
SPOOL_MODELS = "models"  # in the run's spool: each logged model's files, in a folder named by its id


class Guard:
    """A WSGI wrapper that lets through only calls about run `run_id` that carry its token. Anyone else on
    the network (another run's container included) is refused, and cannot read any run either. A run may
    not end itself: the status and end time of an update are dropped (its owner records the ending). The
    Host header must be one of `hosts` (no DNS rebinding). A run may log models of its own (`owns_model` says
    which are). With `spool` (the run's spool folder, as the run sees it), the run is told to write its
    artifacts and its models' files there, for its owner to record: the store's own folders are not the run's."""

    def __init__(
        self,
        app: Any,
        run_id: str,
        token: str,
        hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
        spool: str | None = None,
        owns_model: Any = None,
        floor: Any = None,
    ):
        self.app, self.run_id, self.token, self.hosts, self.spool = app, run_id, token, hosts, spool
        self.owns_model = owns_model or (lambda model_id: False)
        # Per metric, the last step an earlier attempt of the run recorded: not recorded again (runner.runs.attempts).
        self.floor: Any = floor or dict

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        from io import BytesIO

        path = environ.get("PATH_INFO", "")
        if environ.get("HTTP_HOST", "").rsplit(":", 1)[0] not in self.hosts:
            return refuse(
                start_response, "403 Forbidden", "this endpoint answers to the run's own names only"
            )
        if environ.get("HTTP_AUTHORIZATION") != f"Bearer {self.token}":
            return refuse(start_response, "401 Unauthorized", "this endpoint serves one run, with its token")
        if path not in RUN_CALLS and not path.startswith(MODELS):
            return refuse(start_response, "403 Forbidden", f"{path} is not open to runs")
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        named = request_fields(environ, body)
        if named is None:
            return refuse(start_response, "400 Bad Request", "the body is not a JSON object")
        why = self.refusal(path, named)
        if why:
            return refuse(start_response, "403 Forbidden", why)
        if path.endswith("/runs/update"):
            body = json.dumps({k: v for k, v in named.items() if k not in ("status", "end_time")}).encode()
            environ["CONTENT_LENGTH"] = str(len(body))
        elif path.endswith(("/runs/log-metric", "/runs/log-batch")) and (steps := self.floor()):
            kept = above(named, steps)
            if kept is None:  # a point an earlier attempt recorded: taken, not recorded again
                start_response("200 OK", [("Content-Type", "application/json")])
                return [b"{}"]
            body = json.dumps(kept).encode()
            environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = BytesIO(body)
        if self.spool and (path.endswith("/runs/get") or path.startswith(MODELS)):
            return rewritten(self.app, environ, start_response, self.to_spool)
        return self.app(environ, start_response)

    def refusal(self, path: str, named: dict[str, Any]) -> str | None:
        """Why the call is refused; None where it is about the run's own record."""
        if path == MODELS:  # a new model, of this run's
            ok = named.get("source_run_id") == self.run_id
            return None if ok else "a run may log models of its own only"
        if path.startswith(MODELS + "/"):
            model_id = path[len(MODELS) + 1 :].split("/")[0]
            return None if self.owns_model(model_id) else "a run may read and change its own models only"
        ids = {named.get("run_id"), named.get("run_uuid")} - {None, ""}
        return None if ids == {self.run_id} else "a run may read and write its own record only"

    def to_spool(self, answer: dict[str, Any]) -> None:
        """The artifact addresses in `answer` (a run's or a model's) moved into the run's spool."""
        if "run" in answer:
            answer["run"]["info"]["artifact_uri"] = f"file://{self.spool}/{SPOOL_ARTIFACTS}"
        info = answer.get("model", {}).get("info", {})
        if info.get("model_id"):
            info["artifact_uri"] = f"file://{self.spool}/{SPOOL_MODELS}/{info['model_id']}"


def refuse(start_response: Any, code: str, why: str) -> list[bytes]:
    body = json.dumps({"error_code": "PERMISSION_DENIED", "message": why}).encode()
    start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def above(named: dict[str, Any], floor: dict[str, int]) -> dict[str, Any] | None:
    """A log-metric or log-batch call less its points at or below their metric's `floor` step; None where a
    log-metric call's point is."""

    def new(point: Any) -> bool:
        try:
            return int(point.get("step") or 0) > floor.get(str(point.get("key")), -1)
        except (AttributeError, TypeError, ValueError):
            return True  # not a point: the store says what is wrong with it

    if "metrics" in named and isinstance(named["metrics"], list):
        return {**named, "metrics": [m for m in named["metrics"] if new(m)]}
    if "key" in named:
        return named if new(named) else None
    return named


def request_fields(environ: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """A call's named fields: its query (GET) or JSON body; None where the body is not a JSON object."""
    from urllib.parse import parse_qs

    if environ.get("REQUEST_METHOD") == "GET":
        return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items() if v}
    try:
        named = json.loads(body or b"{}")
    except ValueError:
        return None
    return named if isinstance(named, dict) else None


def rewritten(app: Any, environ: dict[str, Any], start_response: Any, change: Any) -> list[bytes]:
    """`app`'s JSON answer, as `change` makes it (a successful one: an error goes as it is)."""
    said: list[Any] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: said.extend((status, headers))))
    status, headers = said
    if status.startswith("200"):
        answer = json.loads(body)
        change(answer)
        body = json.dumps(answer).encode()
    headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]


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
    of ten, and behind `Guard`: only the run, with its token, reaches its own record.
    """

    def __init__(
        self,
        store_uri: str,
        listener: socket.socket,
        run_id: str,
        token: str,
        names: tuple[str, ...],
        spool: str | None = None,
        floor: Any = None,
    ):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per metric is noise
                pass

        bind, port = listener.getsockname()[:2]
        server_environment(store_uri, bind, "", names)
        from mlflow.server import app

        self.port = port
        self.run_id = run_id
        self.store_uri = store_uri
        hosts = tuple(sorted({bind, "localhost", "127.0.0.1", *names} - {""}))
        with listener:  # the server serves a copy of it (werkzeug binds none of its own: see listen)
            self._server = make_server(
                bind,
                port,
                Guard(app, run_id, token, hosts, spool, self.owns_model, floor),
                threaded=True,
                request_handler=QuietHandler,
                fd=listener.fileno(),
            )
        self._thread = threading.Thread(  # a short poll: stopping it is on the path to the run's ending
            target=self._server.serve_forever, args=(0.05,), name="mlflow-server", daemon=True
        )
        self._thread.start()

    def owns_model(self, model_id: str) -> bool:
        """Whether `model_id` names a model the run logged (a model of another run, or none, is not its)."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return MlflowClient(self.store_uri).get_logged_model(model_id).source_run_id == self.run_id
        except MlflowException:
            return False

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
