"""The in-run harness: `python -m runner.job`, run inside the run's environment (container or venv).

Reads the resolved config, seeds everything, builds the model through an allowlisted instantiate, trains
with per-epoch metrics logged live into the run's MLflow record, evaluates, and saves to the output folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.spec import ALLOWED_TARGET_PREFIXES

LOADER_PREFIXES = ("runner.loaders.", *ALLOWED_TARGET_PREFIXES)


def build(node: DictConfig, prefixes: tuple[str, ...], **kwargs: Any) -> Any:
    target = str(node.get("_target_", ""))
    if not target.startswith(prefixes):
        raise SystemExit(f"_target_ '{target}' is not allowed (allowed prefixes: {', '.join(prefixes)})")
    return instantiate(node, **kwargs)


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras

    keras.utils.set_random_seed(seed)  # python, numpy and the backend
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def mlflow_callback() -> Any:
    """Logs every epoch's metrics into the run as they happen."""
    import keras
    from mlflow import MlflowClient

    client, run_id = MlflowClient(), os.environ["MLFLOW_RUN_ID"]

    class MlflowMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            import time

            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            metrics = [Metric(k, float(v), now, epoch) for k, v in (logs or {}).items()]
            if metrics:
                client.log_batch(run_id, metrics=metrics)

    return MlflowMetrics(), client, run_id


def main() -> int:
    cfg = OmegaConf.load(os.environ.get("RUNNER_CONFIG", "/opt/runner/config.yaml"))
    assert isinstance(cfg, DictConfig)
    output = Path(os.environ.get("RUNNER_OUTPUT", "/output"))
    seed_everything(cfg.train.seed, cfg.train.deterministic)

    import keras

    data = build(cfg.dataset, LOADER_PREFIXES, seed=cfg.train.seed)
    model = build(cfg.model, ALLOWED_TARGET_PREFIXES)
    optimizer = keras.optimizers.get(cfg.train.optimizer)
    if cfg.train.learning_rate is not None:
        optimizer.learning_rate = cfg.train.learning_rate
    model.compile(optimizer=optimizer, loss=cfg.train.loss, metrics=list(cfg.train.metrics))
    model.summary(print_fn=lambda line, **_: print(line))

    callback, client, run_id = mlflow_callback()
    client.log_param(run_id, "model.parameters", model.count_params())
    model.fit(
        data.x_train,
        data.y_train,
        epochs=cfg.train.epochs,
        batch_size=cfg.train.batch_size,
        validation_split=cfg.train.validation_split,
        callbacks=[callback],
        verbose=2,
    )
    scores = model.evaluate(
        data.x_test, data.y_test, batch_size=cfg.train.batch_size, verbose=0, return_dict=True
    )
    for name, value in scores.items():
        client.log_metric(run_id, f"test_{name}", float(value))
    print("test:", {k: round(float(v), 4) for k, v in scores.items()})
    output.mkdir(parents=True, exist_ok=True)
    model.save(output / "model.keras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
