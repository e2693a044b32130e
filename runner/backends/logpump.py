"""A container's output into its run's log, as it comes, its secrets masked, within its limit
(runner.harness.boundedlog). The engine keeps the whole output for the container's life, so whoever reads it again
(an owner that takes over, an engine's `logs` process started again) skips what is written already: how much is
kept beside the log (RunDir.log_offset)."""

from __future__ import annotations

import os
from collections.abc import Iterable

from runner.harness.boundedlog import BoundedLog, limit_in
from runner.harness.shim import Scrubber
from runner.runs.rundir import RunDir


class LogPump:
    def __init__(self, run_dir: RunDir, scrubber: Scrubber):
        self.run_dir = run_dir
        self.scrubber = scrubber
        try:
            self.done = int(run_dir.log_offset.read_text() or 0)
        except (OSError, ValueError):
            self.done = 0

    def open(self) -> BoundedLog:
        return BoundedLog(self.run_dir.log, limit_in(self.run_dir.root))

    def stream(self, chunks: Iterable[bytes], out: BoundedLog) -> None:
        """One reading of the engine's output, from its start: what is new goes to `out`."""
        seen = 0
        for chunk in chunks:
            new = chunk[max(0, self.done - seen) :]
            seen += len(chunk)
            if new:
                out.write(self.scrubber.feed(new))
                # What the scrubber holds back is written by whoever reads it next.
                self.done = seen - len(self.scrubber.held)
                self.keep_offset()

    def keep_offset(self) -> None:
        """The offset written over the last in one write of fixed width, never emptied first: an owner killed at any
        moment leaves one whole (else the next would read the output from its start again, into the log twice)."""
        fd = os.open(self.run_dir.log_offset, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"%020d" % self.done, 0)
        finally:
            os.close(fd)

    def end(self, out: BoundedLog) -> None:
        out.write(self.scrubber.end())
