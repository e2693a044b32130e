"""Backends whose runs' owners live on this machine (Docker, local): the hand-over starts an owner per run."""

from __future__ import annotations

from runner.backends.base import Backend, HandOver, P
from runner.runs import owner
from runner.runs.rundir import RunDir


class HostBackend(Backend[P]):
    """The owner of each run is a process on this machine, followed from here."""

    def hand_over(self, run_dirs: list[RunDir], lock_fds: list[int], parallel: int | None) -> HandOver:
        for run_dir, lock_fd in zip(run_dirs, lock_fds, strict=True):
            owner.spawn(run_dir, lock_fd)
        return HandOver()
