"""`hydra/sweeper=optuna`: the settings of Hydra's Optuna sweeper plugin (the same names, defaults and sampler
choices), registered by the runner, whose own driver reads them (runner.launch.trials) with a current Optuna:
the plugin itself pins Optuna below 3, whose storage no longer opens with SQLAlchemy 2."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConf:
    _target_: str = MISSING


@dataclass
class TPESamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    consider_prior: bool = True
    prior_weight: float = 1.0
    consider_magic_clip: bool = True
    consider_endpoints: bool = False
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    warn_independent_sampling: bool = True
    constant_liar: bool = False  # Optuna's advice for trials that run at once: see its TPESampler


@dataclass
class RandomSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class CmaEsSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    inc_popsize: int = 2
    use_separable_cma: bool = False


@dataclass
class NSGAIISamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class QMCSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False


@dataclass
class GridSamplerConf(SamplerConf):
    _target_: str = "optuna.samplers.GridSampler"  # its search space: the swept values
    seed: int | None = None


@dataclass
class OptunaSweeperConf:
    # Read by the runner's sweep driver; Hydra never instantiates it.
    _target_: str = "runner.launch.trials.Study"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConf = MISSING
    direction: Any = "minimize"  # the runner sets it from sweep.direction unless given here
    storage: Any = None  # an Optuna storage URL (a team's database); default: the sweep's own folder
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 2  # trials at a time, unless sweep.parallel says
    max_failure_rate: float = 0.0  # kept for Hydra's configs; a failed trial never stops a sweep here
    search_space: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    custom_search_space: str | None = None


SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "qmc": QMCSamplerConf,
    "grid": GridSamplerConf,
}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="runner")
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="runner")
