"""Where a sweep's trials come from: a grid (Hydra's basic sweeper) or an Optuna study, asked one trial at a time.

A trial is asked for as soon as a slot frees (never a batch that waits for its slowest member), and told its
result as soon as its member ends. An Optuna study lives in its own storage (the sweep's folder, or the
`hydra.sweeper.storage` given: a team's database), so that a new driver takes a sweep over from it.
The search space is Hydra's own syntax (`interval(...)`, `choice(...)`, `range(...)`, `tag(log, ...)`), read
by the Optuna sweeper plugin's own functions; `hydra.sweeper.*` keeps its meaning.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError

PRUNERS = ("median", "halving", "hyperband")
OVERRIDES = (
    "runner.overrides"  # a trial's user attribute: its member's overrides, for a driver that takes over
)
RUN = "runner.run"  # a trial's user attribute: its member's run
REUSES = "runner.reuses"  # a trial's user attribute: the run it reuses (an earlier trial's, same values)
INTERRUPTED = "runner.interrupted"  # a trial's user attribute: a stop broke it off (it runs again on resume)
REQUEUED = "runner.requeued"  # the study's: the trials enqueued again


@dataclass(frozen=True)
class Trial:
    number: int  # 0-based, as Optuna counts
    overrides: tuple[str, ...]
    label: str  # what sets it apart from the other trials: its own swept values


def key(overrides: Sequence[str]) -> str:
    return json.dumps(sorted(overrides))


def grid(sweeper: DictConfig, overrides: Sequence[str]) -> list[list[str]]:
    """Every combination of the swept values, in Hydra's basic sweeper's order (its own function)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([*params_of(sweeper), *overrides])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(combo) for batch in batches for combo in batch]


def params_of(sweeper: DictConfig) -> list[str]:
    """`hydra.sweeper.params` as overrides, as written (an interpolation in a value stays one for each member)."""
    params = OmegaConf.to_container(sweeper.params, resolve=False) if sweeper.get("params") else {}
    assert isinstance(params, dict)
    return ["=".join((str(k), str(v))) for k, v in params.items()]


def task_overrides(hydra: DictConfig) -> list[str]:
    """The sweep's own overrides as given (not resolved: `${train.seed}` in a command is each member's)."""
    return [str(o) for o in OmegaConf.to_container(hydra.overrides.task, resolve=False)]  # type: ignore[union-attr]


class Grid:
    """Hydra's basic sweeper's combinations, each once; `done`: keys of those that need no run."""

    name = "basic"

    def __init__(self, combos: list[list[str]], done: set[str]):
        common = set.intersection(*map(set, combos)) if len(combos) > 1 else set()
        self.trials = [
            Trial(i, tuple(c), " ".join(o for o in c if o not in common)) for i, c in enumerate(combos)
        ]
        self.queue = [t for t in self.trials if key(t.overrides) not in done]
        self.total = len(self.trials)

    def ask(self) -> Trial | None:
        return self.queue.pop(0) if self.queue else None

    def tell(
        self,
        trial: Trial,
        value: float | None,
        pruned: bool = False,
        interrupted: bool = False,
        run_id: str | None = None,
    ) -> None:
        pass

    def report(self, trial: Trial, step: int, value: float) -> bool:
        return False  # a grid runs every member to its end

    def left(self) -> int:
        return len(self.queue)

    def unfinished(self) -> list[Trial]:
        return []


class Study:
    """An Optuna study over Hydra's search space, asked and told one trial at a time (its ask-and-tell interface)."""

    name = "optuna"

    def __init__(
        self, sweeper: DictConfig, overrides: Sequence[str], storage: str, name: str, pruner: str | None
    ):
        import optuna

        if sweeper.get("custom_search_space"):
            raise ConfigError(
                "hydra.sweeper.custom_search_space is not read by the runner: give the search space as overrides "
                "or hydra.sweeper.params."
            )
        self.space, self.fixed = search_space([*params_of(sweeper), *overrides])
        for name_ in self.fixed:
            self.space.pop(name_, None)
        direction = sweeper.direction
        directions = [str(d) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
        if len(directions) != 1 or directions[0] not in ("minimize", "maximize"):
            raise ConfigError(
                f"hydra.sweeper.direction: one objective (sweep.objective), not {len(directions)}."
            )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            study_name=sweeper.get("study_name") or name,
            storage=sweeper.get("storage") or storage,
            sampler=sampler(sweeper, self.space),
            pruner=make_pruner(pruner),
            direction=directions[0],  # type: ignore[arg-type]
            load_if_exists=True,
        )
        self.total = int(sweeper.n_trials)
        self.live: dict[int, Any] = {}  # the trials asked for here (or taken over), by number
        self.reported: dict[int, int] = {}  # the last step reported of each

    def ask(self) -> Trial | None:
        """The next trial (one enqueued again first), or None once n_trials are asked."""
        if self.counted() >= self.total:
            return None
        trial = self.study.ask(self.space)
        values = {**trial.params, **self.fixed}
        overrides = tuple(f"{k}={v}" for k, v in values.items())
        trial.set_user_attr(OVERRIDES, list(overrides))
        self.live[trial.number] = trial
        return Trial(trial.number, overrides, " ".join(f"{k}={trial.params[k]}" for k in self.space))

    def counted(self) -> int:
        """The trials that count against n_trials: all but those a stop or a lost driver broke off."""
        return sum(1 for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get(INTERRUPTED))

    def again(self) -> int:
        """On resume: each trial a stop broke off is asked again with the same values (Optuna's enqueue)."""
        from optuna.trial import TrialState

        done = set(self.study.user_attrs.get(REQUEUED, []))
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        todo = [t for t in trials if t.user_attrs.get(INTERRUPTED) and t.number not in done]
        for t in todo:
            self.study.enqueue_trial(t.params, skip_if_exists=False)
        self.study.set_user_attr(REQUEUED, sorted(done | {t.number for t in todo}))
        return len(todo)

    def tell(
        self,
        trial: Trial,
        value: float | None,
        pruned: bool = False,
        interrupted: bool = False,
        run_id: str | None = None,
    ) -> None:
        from optuna.trial import TrialState

        live = self.live.pop(trial.number, None)
        if live is None:
            return
        if run_id:
            live.set_user_attr(RUN, run_id)
        if interrupted:
            live.set_user_attr(INTERRUPTED, True)
        try:
            if pruned:
                self.study.tell(live, state=TrialState.PRUNED)
            elif value is None or value != value:  # failed, or NaN
                self.study.tell(live, state=TrialState.FAIL)
            else:
                self.study.tell(live, value)
        except (
            RuntimeError
        ) as exc:  # the grid sampler stops the study once its grid is done: told all the same
            if "Study.stop" not in str(exc):
                raise

    def report(self, trial: Trial, step: int, value: float) -> bool:
        """An intermediate value of the objective; True when the pruner says the trial should stop."""
        live = self.live.get(trial.number)
        if live is None or step <= self.reported.get(trial.number, -1):
            return False
        self.reported[trial.number] = step
        live.report(value, step)
        return bool(live.should_prune())

    def left(self) -> int:
        return max(0, self.total - self.counted())

    def unfinished(self) -> list[Trial]:
        """Trials an earlier driver asked for and never told (RUNNING in the study): taken over here."""
        import optuna
        from optuna.trial import TrialState

        found = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            overrides = tuple(frozen.user_attrs.get(OVERRIDES) or ())
            if not overrides:  # asked, then the driver died before it said what: nothing ran
                self.study.tell(frozen.number, state=TrialState.FAIL)
                continue
            self.live[frozen.number] = optuna.trial.Trial(self.study, frozen._trial_id)
            label = " ".join(f"{k}={frozen.params[k]}" for k in self.space if k in frozen.params)
            found.append(Trial(frozen.number, overrides, label))
        return found

    def same_as(self, trial: Trial) -> Any:
        """An earlier COMPLETE trial with the same values as `trial`, or None."""
        from optuna.trial import TrialState

        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if frozen.number != trial.number and key(frozen.user_attrs.get(OVERRIDES) or ()) == key(
                trial.overrides
            ):
                return frozen
        return None

    def reuse(self, trial: Trial, same: Any) -> str:
        """`trial` answered by `same`'s run (its values repeat `same`'s): told the same value, no run made."""
        live = self.live.pop(trial.number)
        run_id = str(same.user_attrs.get(RUN, ""))
        live.set_user_attr(REUSES, run_id)
        self.study.tell(live, same.value)
        return run_id

    def reusers(self, run_id: str) -> list[int]:
        """The trials that reuse `run_id`, by number."""
        return [t.number for t in self.study.get_trials(deepcopy=False) if t.user_attrs.get(REUSES) == run_id]

    def longest(self) -> int | None:
        """The most steps a member reported: a member's planned steps where its config does not say them."""
        return max(self.reported.values(), default=-1) + 1 or None

    def account(self) -> dict[str, Any]:
        """The study's trials as the sweep's parent records them (they agree with Optuna's own count)."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        tags: dict[str, Any] = {
            "planned": [
                key(t.user_attrs.get(OVERRIDES) or ()) for t in trials if not t.user_attrs.get(REUSES)
            ],
            "runner.sweep.trials": len(trials),
            "runner.sweep.reused": sum(1 for t in trials if t.user_attrs.get(REUSES)),
            "runner.sweep.study": self.study.study_name,
            # [member, the run that answers for it] for each trial that repeated an earlier one's values
            "runner.sweep.reuses": json.dumps(
                [[t.number + 1, t.user_attrs[REUSES]] for t in trials if t.user_attrs.get(REUSES)]
            ),
        }
        tags["runner.sweep.complete"] = states.count(TrialState.COMPLETE)
        try:
            best = self.study.best_trial
        except ValueError:  # no trial completed
            return tags
        tags["runner.sweep.best_member"] = best.number + 1
        tags["runner.sweep.best_run"] = best.user_attrs.get(REUSES) or best.user_attrs.get(RUN, "")
        tags["runner.sweep.best_value"] = best.value
        tags["runner.sweep.best_params"] = json.dumps(best.params)
        return tags


def search_space(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Hydra's sweep syntax as Optuna's distributions (as Hydra's Optuna sweeper reads it): `choice(...)` and a
    list of values are categorical, `range(a,b,step)` an int (or float) with that step, `interval(a,b)` a float (an
    int where both bounds are), `tag(log, interval(...))` on a log scale; the rest fixed values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for ov in OverridesParser.create().parse_overrides(overrides):
        name = ov.get_key_element()
        if not ov.is_sweep_override():
            fixed[name] = ov.get_value_element_as_str()
            space.pop(name, None)
            continue
        value: Any = ov.value()
        if ov.is_choice_sweep() or (ov.is_range_sweep() and value.shuffle):
            choices: list[Any] = list(ov.sweep_iterator(transformer=Transformer.encode))
            space[name] = CategoricalDistribution(choices)
        elif ov.is_range_sweep():
            start, stop, step = value.start, value.stop, value.step
            if any(isinstance(v, float) for v in (start, stop, step)):
                space[name] = FloatDistribution(start, stop, step=step)
            else:  # Hydra's range excludes its stop
                space[name] = IntDistribution(int(start), int(stop) - int(step), step=int(step))
        elif ov.is_interval_sweep():
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[name] = IntDistribution(value.start, value.end, log=log)
            else:
                space[name] = FloatDistribution(float(value.start), float(value.end), log=log)
    return space, fixed


def sampler(sweeper: DictConfig, space: dict[str, Any]) -> Any:
    """`hydra.sweeper.sampler` as the Optuna sweeper builds it; only Optuna's own samplers."""
    from hydra.utils import instantiate

    node = sweeper.get("sampler")
    if node is None:
        return None
    target = str(node.get("_target_", ""))
    if not target.startswith("optuna.samplers."):
        raise ConfigError(
            f"hydra.sweeper.sampler: '{target}' is not one of Optuna's samplers (optuna.samplers.*)."
        )
    if target == "optuna.samplers.GridSampler":
        choices = {n: grid_choices(d) for n, d in space.items()}
        return instantiate(node, search_space=choices)
    return instantiate(node)


def grid_choices(distribution: Any) -> list[Any]:
    """A distribution's values for Optuna's grid sampler: a categorical's choices, a stepped range's steps."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    step = getattr(distribution, "step", None)
    if step is None:
        raise ConfigError("hydra.sweeper.sampler=grid takes choices and ranges, not intervals.")
    count = round((distribution.high - distribution.low) / step) + 1
    return [distribution.low + i * step for i in range(count)]


def make_pruner(name: str | None) -> Any:
    """`sweep.pruner`: Optuna's median, successive-halving or Hyperband pruner (None: no pruning)."""
    import optuna

    if name is None:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.HyperbandPruner()


def storage_of(folder: Path) -> str:
    return f"sqlite:///{folder / 'study.db'}"
