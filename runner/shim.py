"""`python -m runner.shim RUN_DIR CPUS ARGV...`: a local run's process, held apart from any runner process.

The shim leads the run's process group (what `runner stop` signals), sends the run's output to the run's log
file, and writes the run's exit status to `exit_code` when it ends, so whoever owns the run, now or after an
owner was lost, learns how it ended. Signals are left to the run: the shim waits for it whatever it is sent
(short of SIGKILL). Standard library only: it starts in milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

PROCESS = "process.json"
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


def main(argv: list[str]) -> int:
    root, cpus, command = Path(argv[0]), argv[1], argv[2:]
    pid = os.getpid()
    write_json(root / PROCESS, {"pid": pid, "ticks": start_ticks(pid)})
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: None)  # the run gets them too (same group) and decides; we wait
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})  # inherited by every thread of the run
    with open(root / "run.log", "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        except OSError as exc:
            log.write(f"[runner] cannot start {command[0]}: {exc}\n".encode())
            code = 127
        else:
            while True:
                try:
                    code = child.wait()
                    break
                except InterruptedError:
                    continue
    (root / f".{EXIT_CODE}.tmp").write_text(str(code))
    os.replace(root / f".{EXIT_CODE}.tmp", root / EXIT_CODE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
