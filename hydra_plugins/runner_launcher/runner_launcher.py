"""Hydra launcher plugin `hydra/launcher=runner`: sweep members as parallel runs, one slot each.

Thin on purpose (Hydra's plugin shape): the work is in `runner.launch.sweep`, imported when a sweep starts.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class RunnerLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.runner_launcher.RunnerLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="runner", node=RunnerLauncherConf, provider="runner"
)


class RunnerLauncher(Launcher):
    def __init__(self, **_: Any) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from runner.errors import RunnerError
        from runner.launch.sweep import launch

        try:
            return launch(self, job_overrides, initial_job_idx)
        # One line, as everywhere in the runner; the sweep's parent is closed.
        except RunnerError as exc:
            print(f"runner: {exc}", flush=True)
            raise SystemExit(exc.exit_code) from None
