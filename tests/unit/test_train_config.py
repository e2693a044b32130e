"""The training knobs the model experiments added: validated before any run starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.compose.load import compose_config
from runner.compose.validate import validate
from runner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.steps=0"], "train.steps: 0 must be at least 1"),
        (["train.schedule=cosin"], "train.schedule: 'cosin' is not a schedule. Did you mean 'cosine'?"),
        (["train.validation_split=1.0"], "train.validation_split: 1.0 must be in [0, 1)"),
        (
            ["train.checkpoint_minutes=0"],
            "train.checkpoint_minutes: 0.0 must be a positive number of minutes",
        ),
        (["evaluate._target_=os.system"], "evaluate._target_ 'os.system' is not allowed"),
    ],
)
def test_training_knobs_are_validated(overrides: list[str], expected: str) -> None:
    cfg = compose_config(ROOT, ["+experiment=mnist_cnn", *overrides])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert expected in str(err.value)


def test_long_schedule_is_a_config_away() -> None:
    short, long = (compose_config(ROOT, [f"+experiment={e}"]) for e in ("mnist_cnn", "mnist_cnn_long"))
    assert long.train.epochs > short.train.epochs and long.model == short.model
    assert compose_config(ROOT, ["+experiment=mnist_cnn", "train.epochs=5"]).train.epochs == 5


def test_vqa_dataset_follows_the_model_node() -> None:
    cfg = compose_config(ROOT, ["+experiment=vqa_vgg", "model=vqa_lstm", "model.answers=20"])
    assert cfg.model._target_ == "models.vqa_lstm.build"
    assert (cfg.dataset.answers, cfg.dataset.max_tokens, cfg.dataset.word_dim) == (20, 30, 300)


@pytest.mark.parametrize(
    ("rows", "overrides", "expected"),
    [
        (60_000, ["train.epochs=2"], (938, 2, False)),  # batch 128: 469 steps an epoch
        (60_000, ["train.epochs=1.5"], (704, 2, True)),  # stops mid-way through the second epoch
        (60_000, ["train.steps=10", "train.epochs=7"], (10, 1, True)),  # steps win over epochs
        (60_000, ["train.steps=469"], (469, 1, False)),
        (6_400, ["train.epochs=1.1"], (55, 2, True)),  # 50 x 1.1 is 55.00000000000001 in floating point
    ],
)
def test_schedule_steps(rows: int, overrides: list[str], expected: tuple[int, int, bool]) -> None:
    from runner.harness.train import schedule_steps

    cfg = compose_config(ROOT, ["+experiment=mnist_cnn", "train.batch_size=128", *overrides])
    assert schedule_steps(rows, cfg.train) == expected
