"""The backend contract: a small abstract base that every backend implements, and the run handle."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, Self, TypeVar

from runner.backends.gpu import require_host_gpus
from runner.compose.spec import RunSpec
from runner.runs.rundir import Outcome, RunDir


class Log(Protocol):
    """Where a run's output goes: the terminal and the run's log file."""

    def write(self, text: str, /) -> int: ...


@dataclass(frozen=True)
class Prepared:
    """What `prepare` made, recorded on the run: e.g. the image id, or the environment's path."""

    env_id: str
    tags: dict[str, str] = field(default_factory=dict)
    harness_lock: str = ""  # the runner's in-run packages (runner.environment.harness), recorded apart
    harness_site: str = ""  # where the run finds them


@dataclass(frozen=True, kw_only=True)
class Plan(abc.ABC):
    """How a run starts (Backend.plan), decided before its owner takes over; plan.json holds its JSON
    (to_json), which from_json reads back, from any runner's version. No secret values: `secrets` names
    them, read from the owner's environment at start."""

    secrets: tuple[str, ...] = ()
    said: str | None = None  # a line for the terminal, where planning has something to say

    @abc.abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The plan as plan.json holds it."""

    @classmethod
    @abc.abstractmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The plan in `data` (plan.json's)."""

    def variable(self, name: str) -> str | None:
        """A variable of the run's environment, as planned."""
        return None

    @classmethod
    def read(cls, run_dir: RunDir) -> Self | None:
        """The run's plan; None where it has none (yet)."""
        try:
            data = json.loads(run_dir.plan.read_text())
        except (OSError, ValueError):
            return None
        return cls.from_json(data) if isinstance(data, dict) else None


P = TypeVar("P", bound=Plan)


@dataclass(frozen=True)
class HandOver:
    """How runs went to their owners: to owners started on this machine (`jobs` empty: follow them from here), or
    to a scheduler's jobs (their ids, one per run, in order), whose owners are elsewhere and go on without us."""

    jobs: tuple[str, ...] = ()


class RunHandle(abc.ABC):
    """A started run, as the engine sees it. Modelled on MLflow Projects' SubmittedRun."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> Outcome | None:
        """Block until the run ends (its Outcome, from the engine) or `timeout` seconds pass (None)."""

    @abc.abstractmethod
    def cancel(self, grace: float | None = None) -> None:
        """Stop the run within a few seconds (SIGINT, as Ctrl-C); its outputs stay. With `grace`: SIGTERM, which
        asks the run to save a checkpoint and exit, and `grace` seconds to do so before it is killed."""

    def release(self) -> None:  # noqa: B027 (most engines keep nothing to remove)
        """Once the ending is recorded: remove what the engine kept of the run (its container)."""


class Backend(abc.ABC, Generic[P]):
    """Lifecycle: check (no side effects) -> prepare (build or reuse the env) -> plan -> hand over (to the
    run's owner) -> start (the owner starts the run)."""

    name: str
    plan_type: type[P]
    # A sweep's members are handed over together, and go on without the sweep's driver: the last of them to end
    # closes the sweep. Where False, the driver runs them a few at a time and closes the sweep itself.
    sweeps_at_once = False

    @abc.abstractmethod
    def check(self, spec: RunSpec) -> None:
        """Fail fast, before any side effect: engine reachable, GPUs present, base image available."""

    def host_gpus(self, spec: RunSpec) -> list[str]:
        """This machine's GPUs the run gets, checked here (none where the run's GPUs are another machine's)."""
        return require_host_gpus(spec.resources.gpus) if spec.env.gpu else []

    @abc.abstractmethod
    def lock_target(self, spec: RunSpec) -> tuple[str, str | None]:
        """(python version, uv platform) the env's lock is resolved for."""

    @abc.abstractmethod
    def prepare(self, spec: RunSpec, lock: str, log: Log) -> Prepared:
        """Build the environment for `lock` once; later calls with the same inputs reuse it."""

    def furnish(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared) -> None:
        """What the run's folder needs from the backend before its plan (a session's access file, data links)."""

    @abc.abstractmethod
    def plan(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared, env: dict[str, str]) -> P:
        """Everything `start` needs, decided (and nothing done) before the run's owner takes over."""

    def read_plan(self, run_dir: RunDir) -> P | None:
        """The run's plan.json, as this backend's plan; None where there is none."""
        return self.plan_type.read(run_dir)

    @abc.abstractmethod
    def start(self, plan: P, run_dir: RunDir, env: dict[str, str]) -> RunHandle:
        """Start the planned run with `env` added (its tracking address and token); its output goes to the
        run's log file as it comes."""

    @abc.abstractmethod
    def reattach(self, run_id: str, run_dir: RunDir) -> RunHandle | None:
        """The run as the engine has it now (running or ended but not yet released), or None if the engine
        has nothing of it."""

    @abc.abstractmethod
    def hand_over(self, run_dirs: list[RunDir], lock_fds: list[int], parallel: int | None) -> HandOver:
        """Give the planned runs to their owners, each with its ownership lock (held by `lock_fds`, which the
        caller closes afterwards); at most `parallel` of them at once, where the backend runs them together."""

    def owned_elsewhere(self, run_dirs: list[RunDir]) -> list[RunDir]:
        """The runs among `run_dirs` that a process on another machine owns (a queued or running job): none
        here may own them. A scheduler's backend asks once for all of them."""
        return []

    def cancel(self, run_dir: RunDir) -> None:
        """Besides the stop request its owner obeys: cancel what a scheduler holds of the run (a queued job)."""

    def resubmit(self, run_dir: RunDir) -> bool:
        """The run's next attempt handed to a scheduler (a job queued after the current one), whose owner starts
        it: True; False where the owner starts it itself, here."""
        return False

    def gc(self) -> str | None:
        """Remove what the engine keeps of ended runs and environments no run uses; say what, or None where
        the backend keeps nothing."""
        return None

    def tracking_bind(self, plan: P) -> tuple[str, str, tuple[str, ...]]:
        """(address to serve the run's tracking endpoint on, host name the run reaches it by, other names)."""
        return "127.0.0.1", "127.0.0.1", ()
