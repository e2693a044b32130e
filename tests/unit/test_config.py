"""Composition and validation: every experiment composes; bad input gets one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.compose.load import compose_config, options, sweep_variants
from runner.compose.validate import validate
from runner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("experiment", options(ROOT, "experiment"))
def test_every_experiment_composes_and_validates(experiment: str) -> None:
    cfg = compose_config(ROOT, [f"+experiment={experiment}"])
    validate(cfg)
    assert OmegaConf.is_struct(cfg)
    assert str(cfg.model._target_).startswith("models.")


def test_keras_mlp_is_the_seed_script() -> None:
    cfg = compose_config(ROOT, ["+experiment=keras_mlp"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.optimizer) == (20, 128, "rmsprop")
    assert cfg.train.loss == "binary_crossentropy"
    assert (cfg.model.units, cfg.model.hidden_layers, cfg.model.dropout) == (64, 2, 0.5)
    assert (cfg.dataset.n_train, cfg.dataset.n_test, cfg.dataset.features) == (1000, 100, 20)
    assert cfg.backend.name == "docker"


def test_overrides_apply() -> None:
    cfg = compose_config(
        ROOT, ["+experiment=keras_mlp", "backend=local", "train.epochs=3", "model.dropout=0.25"]
    )
    assert (cfg.backend.name, cfg.train.epochs, cfg.model.dropout) == ("local", 3, 0.25)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+experiment=nope"], "Unknown experiment 'nope'. Available: keras_mlp"),
        (["+experiment=keras_ml"], "Did you mean 'keras_mlp'?"),
        (["train.epoch=3"], "Unknown key 'train.epoch'. Did you mean 'epochs'?"),
        (["model.dropuot=0.1"], "Unknown key 'model.dropuot'. Did you mean 'dropout'?"),
        (["env.requirments=[a]"], "Did you mean 'requirements'?"),
        (["train.epochs=abc"], "train.epochs: Value 'abc' of type 'str' could not be converted to Float"),
        (["env.gpu=maybe"], "env.gpu:"),
        (
            ["backend=dokcer"],
            "Unknown backend 'dokcer'. Did you mean 'docker'? Available: docker, local, slurm.",
        ),
    ],
)
def test_bad_overrides_name_the_key_and_the_choices(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_config(ROOT, overrides)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["backend.name=slurmm"],
            "Unknown backend 'slurmm'. Did you mean 'slurm'? Valid: docker, local, slurm.",
        ),
        (["resources.memory=lots"], "resources.memory: 'lots' is not a size"),
        (
            ["resources.log_limit=lots"],
            "resources.log_limit: 'lots' is not a size. Use bytes or a number with k, m,",
        ),
        (["resources.log_limit=100"], "resources.log_limit: '100' is below the least a log keeps, 1k."),
        (["resources.cpus=0"], "resources.cpus: 0.0 must be positive"),
        (["resources.gpus=0"], "resources.gpus: 0 is not a GPU count"),
        (["model._target_=os.system"], "model._target_ 'os.system' is not allowed"),
        (["train.epochs=0"], "train.epochs: 0.0 must be a positive number"),
        (["train.epochs=inf"], "train.epochs: inf must be a positive number"),
        (["backend.name=???"], "Missing required value: backend.name"),
    ],
)
def test_validation_errors(overrides: list[str], expected: str) -> None:
    cfg = compose_config(ROOT, ["+experiment=keras_mlp", *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert expected in str(err.value)


def test_sweeps_are_validated_by_their_first_value() -> None:
    assert sweep_variants(["a=1,2", "b=x", "c=range(3,5)"])[0] == ["a=1", "b=x", "c=3"]
    with pytest.raises(ConfigError, match=r"Unknown key 'train\.epoch'"):
        compose_config(ROOT, sweep_variants(["train.epoch=1,2"])[0])


def test_threads_compose_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep's members compose in threads of one process: each gets its own config, none an error."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path))  # nothing composed before: each one through Hydra
    epochs = list(range(1, 25))
    with ThreadPoolExecutor(max_workers=4) as pool:
        cfgs = list(pool.map(lambda e: compose_config(ROOT, ["backend=local", f"train.epochs={e}"]), epochs))
    assert [cfg.train.epochs for cfg in cfgs] == epochs
