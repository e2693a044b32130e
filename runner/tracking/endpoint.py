"""The tracking endpoint a run's own MLflow calls reach: MLflow's own server app in the run's owner, behind a guard
that admits the run's calls about itself alone."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any


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


def guard(
    app: Any,
    run_id: str,
    token: str,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    artifacts: str | None = None,
) -> Any:
    """A WSGI wrapper that lets through only calls about run `run_id` that carry its token. Anyone else on
    the network (another run's container included) is refused, and cannot read any run either. A run may
    not end itself: the status and end time of an update are dropped (its owner records the ending). The
    Host header must be one of `hosts` (no DNS rebinding). With `artifacts` (a folder as the run sees it), the
    run is told to write its artifacts there (its owner records them): the store's own folder is not the run's."""
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
        if artifacts and path.endswith("/runs/get"):
            return with_artifact_uri(app, environ, start_response, "file://" + artifacts)
        return app(environ, start_response)

    return wsgi


def with_artifact_uri(app: Any, environ: dict[str, Any], start_response: Any, uri: str) -> list[bytes]:
    """`app`'s answer to runs/get, its artifact_uri replaced by `uri`."""
    import json

    said: list[Any] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: said.extend((status, headers))))
    status, headers = said
    if status.startswith("200"):
        answer = json.loads(body)
        answer["run"]["info"]["artifact_uri"] = uri
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
    of ten, and behind `guard`: only the run, with its token, reaches its own record.
    """

    def __init__(
        self,
        store_uri: str,
        bind: str,
        port: int,
        run_id: str,
        token: str,
        names: tuple[str, ...],
        artifacts: str | None = None,
    ):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:  # one line per metric is noise
                pass

        server_environment(store_uri, bind, "", names)
        from mlflow.server import app

        self.port = port
        hosts = tuple(sorted({bind, "localhost", "127.0.0.1", *names} - {""}))
        self._server = make_server(
            bind,
            port,
            guard(app, run_id, token, hosts, artifacts),
            threaded=True,
            request_handler=QuietHandler,
        )
        self._thread = threading.Thread(  # a short poll: stopping it is on the path to the run's ending
            target=self._server.serve_forever, args=(0.05,), name="mlflow-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
