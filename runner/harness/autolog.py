"""MLflow's own autologging in a run's process, started by the run's sitecustomize when the run first imports
a framework (not imported as part of the `runner` package: it is loaded by its path).

The run's MLflow calls reach its record through its tracking endpoint (MLFLOW_TRACKING_URI, MLFLOW_RUN_ID: set
by its owner); Keras's per-epoch metrics are logged asynchronously, so training does not wait on them. The
run's ending is its owner's to record: MLflow's own end of a run in this process is not sent.

Each integration is configured here, so a script's own `mlflow.autolog()` keeps this configuration rather than
adding a second one (MLflow leaves an integration configured by its own autolog alone): nothing is logged twice.
"""

from __future__ import annotations

import os
import sys

# Framework -> MLflow's integration for it.
INTEGRATIONS = {
    "keras": "mlflow.keras",
    "tensorflow": "mlflow.tensorflow",
    "sklearn": "mlflow.sklearn",
    "lightning": "mlflow.pytorch",
    "pytorch_lightning": "mlflow.pytorch",
    "xgboost": "mlflow.xgboost",
    "lightgbm": "mlflow.lightgbm",
}


def keras_3() -> bool:
    from importlib import metadata

    try:
        return int(metadata.version("keras").split(".")[0]) >= 3
    except (metadata.PackageNotFoundError, ValueError):
        return False


def configure(integration: str, given: dict[str, object]) -> None:
    """MLflow's `integration` set up with what of `given` it takes; a failure said in one line."""
    import importlib
    import inspect

    try:
        autolog = importlib.import_module(integration).autolog
        known = inspect.signature(autolog).parameters
        autolog(**{k: v for k, v in given.items() if k in known})
    except Exception as exc:
        print(f"[runner] no autologging from {integration}: {exc}", file=sys.stderr, flush=True)


def start() -> None:
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from mlflow.tracking.client import MlflowClient
    from mlflow.utils.import_hooks import register_post_import_hook

    ending = MlflowClient.set_terminated

    def set_terminated(self, run, status=None, end_time=None):  # type: ignore[no-untyped-def]
        if run != run_id:
            ending(self, run, status, end_time)

    MlflowClient.set_terminated = set_terminated  # type: ignore[method-assign]
    models = os.environ.get("RUNNER_AUTOLOG") == "models"

    def setup(module):  # type: ignore[no-untyped-def]
        if module.__name__ == "tensorflow" and keras_3():
            return  # Keras 3 is what TensorFlow trains with: its integration is the one, set up with Keras's
        given = {"log_models": models, "log_datasets": False, "silent": True}
        configure(INTEGRATIONS[module.__name__], given)
        if module.__name__ == "keras":
            configure("mlflow.tensorflow", {"disable": True, "silent": True})  # else each epoch twice

    for framework in INTEGRATIONS:
        register_post_import_hook(setup, framework, overwrite=True)
