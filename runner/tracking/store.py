"""Where runs are recorded: `tracking.uri`, else $MLFLOW_TRACKING_URI, else the project's own SQLite store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_STORE = "mlflow.db"  # in the project root


def default_uri(project_dir: str | Path) -> str:
    return f"sqlite:///{Path(project_dir) / DEFAULT_STORE}"


def store_uri(project: str | Path, named: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """The store a project's runs go to: `named` (a config's tracking.uri), the environment's, or the default."""
    return named or environ.get("MLFLOW_TRACKING_URI") or default_uri(project)


USERNAME, PASSWORD = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"  # MLflow's basic auth


def server_user(uri: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The account the runs are recorded as on a team's server with accounts (MLflow's basic auth): the user
    name this shell exports, where the store is a server."""
    return environ.get(USERNAME) or None if uri.startswith(("http://", "https://")) else None


def server_secrets(uri: str, environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """The credentials a run passes on by name, as env.secrets are, so that its owner and its container record
    as this shell's user: the password, where a user name is exported too."""
    return (PASSWORD,) if server_user(uri, environ) and PASSWORD in environ else ()
