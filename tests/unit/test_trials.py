"""Where a sweep's trials come from: Hydra's sweep syntax as a grid or as Optuna's distributions, and an Optuna
study asked and told one trial at a time in its own storage, as a new driver finds it after the last one died."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from runner.compose.schema import register_configs
from runner.errors import ConfigError
from runner.launch.trials import (
    INTERRUPTED,
    OVERRIDES,
    REUSES,
    Grid,
    Study,
    grid,
    key,
    search_space,
    storage_of,
)


def sweeper(**settings: object):
    register_configs()
    from runner.compose.optuna_conf import OptunaSweeperConf, RandomSamplerConf

    node = OmegaConf.structured(OptunaSweeperConf)
    node.sampler = OmegaConf.structured(RandomSamplerConf(seed=0))
    node.direction = "maximize"
    return OmegaConf.merge(node, settings)


def test_hydra_sweep_syntax_as_optuna_distributions() -> None:
    space, fixed = search_space(
        [
            "train.learning_rate=tag(log, interval(0.0001, 0.1))",
            "model.dropout=interval(0.1, 0.5)",
            "train.epochs=range(20,420,40)",
            "model.units=int(interval(8, 64))",
            "model.width=interval(8, 64)",
            "optimizer=choice(adam,sgd)",
            "train.seed=1",
        ]
    )
    assert space == {
        "train.learning_rate": FloatDistribution(0.0001, 0.1, log=True),
        "model.dropout": FloatDistribution(0.1, 0.5),
        # Hydra's range stops before its end, as the grid's does: 20, 60, ..., 380
        "train.epochs": IntDistribution(20, 380, step=40),
        "model.units": IntDistribution(8, 64),  # Hydra's interval is a float one unless cast
        "model.width": FloatDistribution(8.0, 64.0),
        "optimizer": CategoricalDistribution(["adam", "sgd"]),
    }
    assert fixed == {"train.seed": "1"}


def test_a_grid_in_hydras_order_with_each_members_own_values() -> None:
    combos = grid(OmegaConf.create({"params": None}), ["a=1,2", "b=x,y", "c=3"])
    assert combos == [
        ["a=1", "b=x", "c=3"],
        ["a=1", "b=y", "c=3"],
        ["a=2", "b=x", "c=3"],
        ["a=2", "b=y", "c=3"],
    ]
    source = Grid(combos, done={key(["a=1", "b=y", "c=3"])})
    assert [t.label for t in source.trials] == ["a=1 b=x", "a=1 b=y", "a=2 b=x", "a=2 b=y"]
    asked = [source.ask() for _ in range(4)]
    assert [t.number for t in asked if t] == [0, 2, 3] and asked[
        -1
    ] is None  # the finished one is not asked again


def test_a_study_taken_over_by_a_new_driver(tmp_path: Path) -> None:
    storage = storage_of(tmp_path)
    first = Study(sweeper(n_trials=4), ["x=interval(0.0, 1.0)", "seed=7"], storage, "s", None)
    a, b = first.ask(), first.ask()
    assert (
        a
        and b
        and a.overrides == (f"x={first.live[a.number].params['x']}", "seed=7")
        and a.label.startswith("x=")
    )
    first.tell(a, 0.5, run_id="run-a")
    # The driver dies with trial b running; the next one finds it in the study, with what its member runs.
    second = Study(sweeper(n_trials=4), ["x=interval(0.0, 1.0)", "seed=7"], storage, "s", None)
    (taken,) = second.unfinished()
    assert taken.number == b.number and taken.overrides == b.overrides
    second.tell(taken, None, interrupted=True, run_id="run-b")  # a stop broke it off: it does not count
    assert second.left() == 3
    assert second.again() == 1 and second.again() == 0  # asked again once, with the same values
    again = second.ask()
    assert again is not None and again.overrides == b.overrides


def test_a_trial_that_repeats_a_finished_one_reuses_its_run(tmp_path: Path) -> None:
    study = Study(sweeper(n_trials=3), ["x=choice(1)"], storage_of(tmp_path), "s", None)
    first = study.ask()
    assert first is not None
    study.tell(first, 2.0, run_id="run-1")
    second = study.ask()
    assert second is not None
    same = study.same_as(second)
    assert same is not None and same.number == first.number
    assert study.reuse(second, same) == "run-1"
    trials = study.study.get_trials()
    assert trials[1].user_attrs[REUSES] == "run-1" and trials[1].value == 2.0
    account = study.account()
    assert account["runner.sweep.trials"] == 2 and account["runner.sweep.reused"] == 1
    assert account["planned"] == [key(["x=1"])] and account["runner.sweep.best_run"] == "run-1"
    assert account["runner.sweep.reuses"] == '[[2, "run-1"]]' and study.reusers("run-1") == [1]
    assert all(OVERRIDES in t.user_attrs and INTERRUPTED not in t.user_attrs for t in trials)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"direction": ["minimize", "maximize"]}, "hydra.sweeper.direction"),
        ({"custom_search_space": "my.fn"}, "custom_search_space is not read"),
    ],
)
def test_what_the_runners_driver_refuses(tmp_path: Path, settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Study(sweeper(**settings), ["x=interval(0, 1)"], storage_of(tmp_path), "s", None)
