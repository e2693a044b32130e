"""Typed config schemas, registered in Hydra's ConfigStore.

The YAML under ``conf/`` carries values; these dataclasses own the shape. Struct mode stays on, so a
misspelt key is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.backends import NAMES, config_schema
from runner.compose import optuna_conf
from runner.harness.boundedlog import DEFAULT_LIMIT, size_text


@dataclass
class EnvConfig:
    image: str = "runner-base:bookworm"  # base image; `runner image base` builds it without a registry
    gpu: bool = False
    requirements: list[str] = field(default_factory=list)
    # A floyd_requirements.txt-style file inside the project; null: floyd_requirements.txt, else requirements.txt,
    # when there is one; "none": no file.
    requirements_file: str | None = None
    index_url: str | None = None  # the package index (a PyPI mirror); null: the host's pip setting
    setup: list[str] = field(default_factory=list)  # shell commands baked into the image once
    ca_bundle: str | None = (
        None  # CA file for TLS-intercepting proxies; null: the host's PIP_CERT/SSL_CERT_FILE
    )
    variables: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # host variable names passed by name, never logged


@dataclass
class TrainConfig:
    epochs: float = 20  # passes over the training rows; a fraction stops mid-epoch (1.5: one and a half)
    batch_size: int = 128
    learning_rate: float | None = None  # null: the optimizer's own default
    optimizer: str = "rmsprop"
    loss: str = "binary_crossentropy"
    metrics: list[str] = field(default_factory=lambda: ["accuracy"])
    validation_split: float = 0.0  # a random fraction of the training rows held out for per-epoch validation
    steps: int | None = None  # optimizer steps; when set, replaces epochs
    schedule: str = "constant"  # learning rate: constant, or cosine (decays to 0 over the run's steps)
    seed: int = 0
    deterministic: bool = True  # deterministic ops: slower on GPU, but the same seed gives the same numbers
    checkpoint_minutes: float = 10  # checkpoints: in epochs longer than this, mid-epoch ones too


@dataclass
class ResourcesConfig:
    cpus: float | None = None
    memory: str | None = None  # e.g. 512m, 4g
    timeout: int | None = None  # seconds; the run is stopped and marked KILLED
    idle_timeout: int = 3600  # mode=jupyter: seconds without activity before the session stops itself
    gpus: Any = None  # null: all GPUs when env.gpu; a count, or a list of device ids
    # Attempts a run may take where the engine interrupted it (a time limit, a lost node, a restarted engine):
    # each next one continues from the run's checkpoint, in the same MLflow run. 1: never again by itself.
    max_attempts: int = 1
    # What a run's log keeps (run.log and its artifact): past it, its first and last halves, the middle dropped with
    # a line saying how much; the run goes on. e.g. 64k, 500m; null: no limit.
    log_limit: str | None = size_text(DEFAULT_LIMIT)  # 1g


@dataclass
class TrackingConfig:
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the project root
    experiment: str | None = None  # null: the experiment config's name


@dataclass
class AutologConfig:
    """MLflow's autologging in a command's process (Keras, TensorFlow, scikit-learn, PyTorch Lightning, XGBoost,
    LightGBM); `autolog=false` is `autolog.enabled=false`."""

    enabled: bool = True
    models: bool = False  # the trained model too, as MLflow's integration logs it


@dataclass
class JupyterConfig:
    port: int = 8888  # on 127.0.0.1; when taken, the next free one (and said)
    version: str = "4.6.6"  # JupyterLab, installed on top of the run's environment


@dataclass
class SweepConfig:
    parallel: int | None = None  # members at a time; null: as many as the CPU and GPU slots allow
    fail_fast: bool = False  # stop the other members when one fails
    objective: str | None = None  # the metric a sweeper optimises, e.g. val_accuracy
    direction: str = "maximize"  # or minimize
    pruner: str | None = (
        None  # an Optuna sweep's: median, halving or hyperband (Optuna's pruners), on the objective
    )


@dataclass
class RunnerConfig:
    model: Any = None  # the built-in trainer's model node: a builder of the project's (models/)
    dataset: Any = None  # its data: a reader's node
    env: EnvConfig = field(default_factory=EnvConfig)
    backend: Any = MISSING  # each backend's own typed settings (runner/backends/NAME/config.py)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    command: str | None = None  # null: the built-in Keras trainer for `model`
    autolog: AutologConfig = field(default_factory=AutologConfig)
    evaluate: Any = None  # null: model.evaluate on the test split; else a report node (_target_ allowlisted)
    data: list[str] = field(default_factory=list)  # NAME@VERSION:MOUNT entries
    detach: bool = False
    mode: str = "run"  # run: the command (or the Keras trainer); jupyter: JupyterLab in the run's container
    jupyter: JupyterConfig = field(default_factory=JupyterConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    # The project's own modules whose builders and loaders a model or dataset node may name (mypkg.models).
    allow_targets: list[str] = field(default_factory=list)


PACKAGED_ROOT = "runner_root"
# The groups the runner ships; a project's conf/ comes first.
PACKAGED = Path(__file__).resolve().parent.parent / "conf"


_REGISTERING = threading.Lock()


def register_configs() -> None:
    """Register the schemas (once per process, whichever thread asks first); called by the entry point and by the
    tests."""
    cs = ConfigStore.instance()
    with _REGISTERING:
        if "runner_schema.yaml" in cs.repo:
            return
        optuna_conf.register()
        # The runner's root config under a name of its own, for a project whose conf/ has no config.yaml: Hydra
        # looks for the root config before the runner's conf/ joins its search path (runner.compose.load.primary).
        cs.store(name=PACKAGED_ROOT, node=OmegaConf.load(PACKAGED / "config.yaml"))
        for name in NAMES:
            cs.store(group="backend", name=f"{name}_schema", node=config_schema(name))
        cs.store(name="runner_schema", node=RunnerConfig)  # last: the mark that all of them are there
