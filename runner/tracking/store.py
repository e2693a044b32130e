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
