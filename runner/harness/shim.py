"""`python -m runner.harness.shim RUN_DIR CPUS ARGV...`: a local run's process, held apart from any runner process.

The shim leads the run's process group (what `runner stop` signals), sends the run's output to the run's log
file (the values of its secrets masked, within resources.log_limit: runner.harness.boundedlog), and writes the
run's exit status to `exit_code` when it ends, so whoever owns the run, now or after an owner was lost, learns how
it ended. Signals are left to the run: the shim waits for it whatever it is sent
(short of SIGKILL). Standard library only: it starts in milliseconds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from runner.harness.boundedlog import BoundedLog

PROCESS = "process.json"
SECRET_NAMES = "RUNNER_SECRET_NAMES"  # the variables whose values the shim masks (it removes this one)
EXIT_CODE = "exit_code"


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process for good."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int, ticks: int | None) -> bool:
    """True while the process `pid` that started at `ticks` is running (not a zombie, not a reused pid)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and (ticks is None or start_ticks(pid) == ticks)


def write_json(path: Path, value: object, private: bool = False) -> None:
    """Atomically (readers see the old file or the new, never half of one); `private`: the owner's eyes only."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(value))
    os.replace(tmp, path)


# Secret values are masked in the run's output as it is written to its log. Output arrives in pieces: a value
# split across two is still caught, as the tail of a piece that could begin one is held for the next piece.
MASK = b"***"
MIN_LENGTH = 4  # shorter values are not secrets worth the name, and masking them would garble the log


def secret_values(names: Iterable[str], environ: Mapping[str, str] = os.environ) -> list[str]:
    """The values of the named variables that are long enough to mask."""
    return [environ[n] for n in names if len(environ.get(n, "")) >= MIN_LENGTH]


class Scrubber:
    def __init__(self, values: Iterable[str]):
        self.values = sorted({v.encode() for v in values if len(v) >= MIN_LENGTH}, key=len, reverse=True)
        self.held = b""

    def feed(self, data: bytes) -> bytes:
        """What of `held + data` can be written now, masked; the rest is held for the next piece."""
        if not self.values:
            return data
        text = self._mask(self.held + data)
        keep = max((self._partial(text, v) for v in self.values), default=0)
        self.held = text[len(text) - keep :]
        return text[: len(text) - keep]

    @staticmethod
    def _partial(text: bytes, value: bytes) -> int:
        """The length of the longest tail of `text` that begins `value` (0 if none); only the places where
        `value`'s first byte occurs are tried."""
        at = text.find(value[:1], max(0, len(text) - len(value) + 1))
        while at != -1:
            if value.startswith(text[at:]):
                return len(text) - at
            at = text.find(value[:1], at + 1)
        return 0

    def end(self) -> bytes:
        """The held tail, at the end of the output."""
        text, self.held = self.held, b""
        return self._mask(text)

    def _mask(self, text: bytes) -> bytes:
        for value in self.values:
            text = text.replace(value, MASK)
        return text


def main(argv: list[str]) -> int:
    root, cpus, command = Path(argv[0]), argv[1], argv[2:]
    pid = os.getpid()
    write_json(root / PROCESS, {"pid": pid, "ticks": start_ticks(pid)})
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)  # the run gets them too (same group) and decides; we wait
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})  # inherited by every thread of the run
    from runner.harness.boundedlog import BoundedLog, limit_in

    scrubber = Scrubber(secret_values(os.environ.pop(SECRET_NAMES, "").split()))
    limit = limit_in(root)
    with BoundedLog(root / "run.log", limit) as log:
        try:
            # With secrets or a limit, the output passes through us (masked, bounded); else straight to the log.
            out = subprocess.PIPE if scrubber.values or limit is not None else log.out
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except OSError as exc:
            log.write(f"[runner] cannot start {command[0]}: {exc}\n".encode())
            code = 127
        else:
            pumper = Pumper(child.stdout, log, scrubber) if child.stdout is not None else None
            while True:
                try:
                    code = child.wait()
                    break
                except InterruptedError:
                    continue
            if pumper is not None:
                pumper.drain()
    keep(root / EXIT_CODE, str(code))
    return 0


def keep(path: Path, text: str) -> None:
    """Write `text` to `path` atomically, holding it until its filesystem has room: the run's exit status is the
    record's evidence, and a full disk must not turn it into a lost run."""
    while True:
        try:
            (path.parent / f".{path.name}.tmp").write_text(text)
            os.replace(path.parent / f".{path.name}.tmp", path)
            return
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            time.sleep(2)


class Pumper(threading.Thread):
    """The run's output from the pipe into its log, masked and bounded."""

    def __init__(self, stream: IO[bytes], log: BoundedLog, scrubber: Scrubber):
        super().__init__(daemon=True)
        self.stream, self.log, self.scrubber = stream, log, scrubber
        self.read = 0
        self.start()

    def run(self) -> None:
        # A write that fails (a full disk) loses its piece, never stops the reading: the run would block on the pipe.
        while chunk := self.stream.read1(65536):  # type: ignore[attr-defined]
            self.read += len(chunk)
            with contextlib.suppress(OSError):
                self.log.write(self.scrubber.feed(chunk))
        with contextlib.suppress(OSError):
            self.log.write(self.scrubber.end())

    def drain(self) -> None:
        """Until the run's last output is in the log: waited for while it comes (up to 30 s); a leftover background
        process that holds the pipe, and says nothing for 2 s, is not."""
        deadline = time.monotonic() + 30
        while self.is_alive() and time.monotonic() < deadline:
            before = self.read
            self.join(timeout=2)
            if self.read == before:
                return


if __name__ == "__main__":
    # Run by path, isolated (-I): the package around this file, not another installed copy, gives its modules.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main(sys.argv[1:]))
