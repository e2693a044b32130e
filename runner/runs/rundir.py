"""A run's folder on the host, `.runner/runs/RUN_ID/`, with every file in it named once (as submitit's JobPaths
names a job's); a sweep's folder; and a run's ending, with its one JSON form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.harness import boundedlog, shim

RUNS = Path(".runner") / "runs"  # under the project root: a folder per run
LIVE = Path(".runner") / "live"  # a marker per run not yet ended, holding the path of its folder
SWEEPS = Path(".runner") / "sweeps"  # a folder per sweep whose driver is, or was, on this machine
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass(frozen=True)
class Outcome:
    status: str  # FINISHED, FAILED or KILLED
    exit_code: int | None = None
    reason: str | None = None  # e.g. "exit code 3", "OOMKilled", "timeout after 60 s", "interrupted"
    # Not the run's own doing: its engine stopped or lost it (a time limit, a failed node, a restarted engine).
    # Such a run takes its next attempt by itself where it has attempts left (runner.runs.attempts).
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "exit_code": self.exit_code, "reason": self.reason, "interrupted": self.interrupted
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["status"], data.get("exit_code"), data.get("reason"), bool(data.get("interrupted")))

    def said(self) -> str:
        """The ending in a few words: "FINISHED", "KILLED: timeout after 60 s"."""
        return self.status + (f": {self.reason}" if self.reason and self.status != FINISHED else "")

    def tags(self) -> dict[str, int | str | None]:
        """The ending as the record's tags (the status is the MLflow run's own)."""
        return {"runner.exit_code": self.exit_code, "runner.reason": self.reason}

    @classmethod
    def from_record(cls, status: str, tags: dict[str, str]) -> Outcome:
        """The ending an MLflow run's status and tags say."""
        code = tags.get("runner.exit_code")
        exit_code = int(code) if code and code.lstrip("-").isdigit() else None
        return cls(status, exit_code, tags.get("runner.reason") or None)


@dataclass(frozen=True)
class RunDir:
    """The host side of one run: a fresh folder per run. What the run sees (code, output, harness, spool) and
    what its owner keeps beside it, out of the run's reach."""

    root: Path

    # Every name a run folder holds besides its mounts (input/): the runner's and the owner's files. A local
    # run maps its data mounts into this folder, so none of them may name one of these.
    RESERVED = (
        "code", "output", "harness", "run.log", "run.log.tail", "spool", "spool.ingested", "metric-lines.ingested", "state.json", "plan.json", "started",
        "stop", "settled.json", "ended.json", "owner.lock", "owner.json", "owner.log", "endpoint.json",
        "record", "record.json", "recorded", "process.json", "exit_code", "container.log.bytes", "secrets.env",
        "code.manifest.json", "job.json", "session.json", "pulled.json", "checkpoint", "attempt.json", "interrupt",
    )  # fmt: skip
    # What one attempt of the run leaves: gone before the next attempt starts (the spool, the log, the outputs
    # and the checkpoint stay with the run).
    ATTEMPT_FILES = (
        "started", "stop", "interrupt", "settled.json", "ended.json", "process.json", "exit_code",
        "container.log.bytes", "secrets.env",
    )  # fmt: skip

    @classmethod
    def of(cls, project: Path, run_id: str) -> RunDir:
        return cls(project / RUNS / run_id)

    # -- what the run sees

    @property
    def code(self) -> Path:
        """The run's own copy of the project's code, its working folder."""
        return self.root / "code"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def harness(self) -> Path:
        """The runner's in-run harness and the resolved config."""
        return self.root / "harness"

    @property
    def config(self) -> Path:
        return self.harness / "config.yaml"

    @property
    def spool(self) -> Path:
        """What the harness logs, for the owner to record (runner.harness.spool)."""
        return self.root / "spool"

    @property
    def checkpoint(self) -> Path:
        """The run's checkpoints ($RUNNER_CHECKPOINT_DIR; /checkpoint in a container): kept across attempts."""
        return self.root / "checkpoint"

    # -- what its owner keeps

    @property
    def log(self) -> Path:
        return self.root / "run.log"

    @property
    def log_tail(self) -> Path:
        """The log's kept tail while it is past resources.log_limit (runner.harness.boundedlog): appended to run.log
        when the run ends."""
        return self.root / boundedlog.TAIL

    @property
    def log_offset(self) -> Path:
        """How much of the engine's output of the run is already in run.log."""
        return self.root / "container.log.bytes"

    @property
    def metric_lines_offset(self) -> Path:
        """How much of the run's log was read for metric lines, and each metric's next step."""
        return self.root / "metric-lines.ingested"

    @property
    def spool_offset(self) -> Path:
        """How much of the spool is in the store: beside it, out of the run's reach."""
        return self.root / "spool.ingested"

    @property
    def secrets(self) -> Path:
        """The run's secrets for its start (owner-only; gone when the run ends): `export NAME=VALUE` lines."""
        return self.root / "secrets.env"

    @property
    def job_secrets(self) -> Path:
        """The secrets' values for the run's next SLURM job (owner-only): the job's process reads and removes
        it, so that they are never in the job's environment, which SLURM keeps."""
        return self.root / "job-secrets.json"

    @property
    def state(self) -> Path:
        """What the run is (id, backend, store, project, host, limits): written before anything starts."""
        return self.root / boundedlog.STATE

    @property
    def plan(self) -> Path:
        """How the run starts (Backend.plan), as JSON: names of secrets, never their values."""
        return self.root / "plan.json"

    @property
    def attempt(self) -> Path:
        """The run's attempts (runner.runs.attempts): which one this is, how the earlier ones ended, and the
        metric steps they recorded."""
        return self.root / "attempt.json"

    @property
    def interrupt(self) -> Path:
        """The engine's warning that it is about to stop the run (a time limit), and its reason: the run is asked
        to checkpoint and stop, and takes its next attempt where it has one."""
        return self.root / "interrupt"

    @property
    def started(self) -> Path:
        return self.root / "started"

    @property
    def stop(self) -> Path:
        """A stop request, and its reason."""
        return self.root / "stop"

    @property
    def settled(self) -> Path:
        """The engine's account of the ending, kept before the engine's copy of the run goes."""
        return self.root / "settled.json"

    @property
    def ended(self) -> Path:
        """The recorded ending (Outcome.to_json)."""
        return self.root / "ended.json"

    @property
    def lock(self) -> Path:
        """Held (flock) by the run's owner for as long as it lives."""
        return self.root / "owner.lock"

    @property
    def owner_report(self) -> Path:
        """The owner's pid and the phase it is in."""
        return self.root / "owner.json"

    @property
    def owner_log(self) -> Path:
        return self.root / "owner.log"

    @property
    def endpoint(self) -> Path:
        """The run's tracking endpoint (owner-only): where it listens and its token."""
        return self.root / "endpoint.json"

    @property
    def record(self) -> Path:
        """The files of the run's inputs for its record: config, lock, package list, diff."""
        return self.root / "record"

    @property
    def record_staged(self) -> Path:
        """The params and tags staged for the record."""
        return self.root / "record.json"

    @property
    def recorded(self) -> Path:
        """There once the staged inputs are in the record."""
        return self.root / "recorded"

    @property
    def code_manifest(self) -> Path:
        """The code copy as staged (tracking.record.manifest): what the run then writes there is kept."""
        return self.root / "code.manifest.json"

    @property
    def process(self) -> Path:
        """A local run's process, written by its shim."""
        return self.root / shim.PROCESS

    @property
    def exit_code(self) -> Path:
        """A local run's exit status, written by its shim."""
        return self.root / shim.EXIT_CODE

    @property
    def slurm_job(self) -> Path:
        """The SLURM job that owns the run, where one does."""
        return self.root / "job.json"

    @property
    def session(self) -> Path:
        """A session's port and token (owner-only)."""
        return self.root / "session.json"

    @property
    def pulled(self) -> Path:
        """What earlier `runner notebook pull`s copied: theirs to replace, not the user's edits."""
        return self.root / "pulled.json"


@dataclass(frozen=True)
class SweepDir:
    """A sweep's folder on the machine of its driver: `.runner/sweeps/SWEEP_ID/`."""

    root: Path

    @classmethod
    def of(cls, project: Path, sweep_id: str) -> SweepDir:
        return cls(project / SWEEPS / sweep_id)

    @property
    def state(self) -> Path:
        return self.root / boundedlog.STATE

    @property
    def lock(self) -> Path:
        """Held by the sweep's driver for as long as it lives."""
        return self.root / "owner.lock"

    @property
    def live(self) -> Path:
        """There until the sweep's parent run is closed."""
        return self.root / "live"

    @property
    def plan(self) -> Path:
        """What the sweep is: its command line, project and settings (its driver reads it)."""
        return self.root / "plan.json"

    @property
    def log(self) -> Path:
        """The sweep's own lines: members started and ended, pruned, the table (attach and logs show it)."""
        return self.root / "sweep.log"

    @property
    def owner_log(self) -> Path:
        return self.root / "owner.log"

    @property
    def stop(self) -> Path:
        """A stop request and its reason: every member ends KILLED, then the parent."""
        return self.root / "stop"

    @property
    def ended(self) -> Path:
        """The parent's recorded ending."""
        return self.root / "ended.json"
