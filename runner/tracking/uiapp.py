"""MLflow's tracking server for `runner ui`, its UI opening on model training.

MLflow's UI (3.x) shows every experiment in its GenAI view (overview, traces, judges) unless the browser remembers
the other choice of its sidebar switch, "Model training" (localStorage `mlflow.workflowType_v1`); a
`?workflowType=` address is not remembered and is lost on the way from the home page to an experiment, and the
experiment's `mlflow.experimentKind` tag is not consulted. The page this server sends makes model training the
browser's choice where it has none, so the runs table shows, and a switch the user flips stays flipped.

`create_app` is an app of MLflow's `mlflow.app` entry-point group (declared in pyproject.toml): `mlflow ui
--app-name runner` runs it.
"""

from __future__ import annotations

from typing import Any

NAME = "runner"  # the name `mlflow ui --app-name` takes (pyproject.toml's entry point)

_KEY, _TRAINING = "mlflow.workflowType_v1", '"machine_learning"'  # the switch's key and value, as JSON
_SCRIPT = (
    f"<script>try{{localStorage.getItem('{_KEY}')===null&&localStorage.setItem('{_KEY}','{_TRAINING}')}}"
    "catch(e){}</script>"
).encode()


def create_app() -> Any:
    """MLflow's own app (the ASGI one uvicorn serves), with its index page opening on model training."""
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    flask_app.after_request(_training_by_default)
    return app


def _training_by_default(response: Any) -> Any:
    from flask import request

    if request.path != "/" or response.status_code != 200 or response.mimetype != "text/html":
        return response
    response.direct_passthrough = False  # the page is sent from its file: read it to rewrite it
    response.set_data(response.get_data().replace(b"</head>", _SCRIPT + b"</head>", 1))
    return response
