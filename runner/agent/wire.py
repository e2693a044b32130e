"""The wire to the agent, and where it lives: one warm process per user that every `runner` command is forked from.

`runner ...` is a thin client (standard library only): it hands its arguments, environment, working folder
and its terminal's stdin/stdout/stderr to the agent over a Unix socket, and the agent forks a child that runs
the command exactly as `runner` would in a process of its own, but with MLflow, Hydra and Docker already
imported. The client forwards its signals (Ctrl-C, SIGTERM, SIGHUP) to that child and exits with its exit
code; if the client dies (kill -9, a closed terminal), the agent kills the child, as it would have died with
the client. A run's owner (runner.runs.owner) is forked the same way, in a session of its own, holding the run's
ownership lock that its requester hands over with the request.

The agent holds no store, no engine connection and no thread when it forks: only imported modules. It is
started by the first command that needs it and exits after RUNNER_AGENT_IDLE seconds (900) without a
request. An agent started from other code (another version, another Python, files changed since) is told
to quit and replaced, never talked past. Each installation of the runner (a Python and the runner's package
folder: two virtual environments, of one version or two) has an agent of its own, in a folder of its own in the
user's (RUNNER_AGENT_DIR, else $XDG_RUNTIME_DIR/runner, else /tmp/runner-UID), which must be the user's own and
closed to others: otherwise the runner refuses to use it. An agent is started with `python -P`, so a project's
own modules (a package named `runner`) are never imported by it; one that ends before it answers is reported
at once, with the end of its log.
"""

from __future__ import annotations

import array
import functools
import hashlib
import json
import os
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any

IDLE_S = 900.0
START_WAIT_S = 60.0
HELLO_WAIT_S = 5.0
LOG_LINES = 5  # of a failed agent's log, in the client's error
MAX_FDS = 3
# Commands that stay in the client's own process: the UI is a long-lived server of its own.
IN_PROCESS = ("ui",)
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")  # from the client to the command's process


class AgentError(Exception):
    """The agent cannot be used; the message says why and what to do."""


# -- where, and which code ---------------------------------------------------------------------------------


def folder() -> Path:
    """This installation's agent folder (in the user's, below), created 0700 if absent."""
    path = user_folder() / installation()
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise AgentError(f"cannot use the agent folder {path}: {exc.strerror}") from exc
    return path


def user_folder() -> Path:
    """The user's agent folder, created 0700 if absent; refused if it is not the user's own and closed to others."""
    named = os.environ.get("RUNNER_AGENT_DIR")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(named or (Path(runtime) / "runner" if runtime else f"/tmp/runner-{os.getuid()}"))
    try:
        path.mkdir(mode=0o700, parents=bool(named or runtime), exist_ok=True)
        info = os.lstat(path)
    except OSError as exc:
        raise AgentError(f"cannot use the agent folder {path}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise AgentError(f"the agent folder {path} is not a folder (a link or a file): refusing to use it")
    if info.st_uid != os.getuid():
        raise AgentError(
            f"the agent folder {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}): refusing "
            "to use it. Remove it, or set RUNNER_AGENT_DIR to a folder of your own."
        )
    if info.st_mode & 0o077:
        raise AgentError(
            f"the agent folder {path} is open to other users (mode {stat.S_IMODE(info.st_mode):o}): refusing "
            f"to use it. Close it with: chmod 700 {path}"
        )
    return path


def installed() -> dict[str, str]:
    """This installation of the runner: its Python and its package's folder."""
    return {"python": sys.executable, "package": str(Path(__file__).resolve().parent.parent)}


def installation() -> str:
    """The name of this installation's agent folder: two installations (two virtual environments, of one or two
    versions) have an agent each, and never stop each other's."""
    return hashlib.sha256(json.dumps(installed()).encode()).hexdigest()[:12]


@functools.cache
def loaded() -> str:
    """fingerprint() of the code this process runs, found once: an agent's children inherit it (the code they
    run is what the agent loaded)."""
    return fingerprint()


def fingerprint() -> str:
    """Which code an agent runs: this Python, the runner's files (name, size, time) and the installed
    packages' folders (an install changes them). A client talks only to an agent of the same."""
    here = Path(__file__).resolve().parent.parent  # the runner package
    parts = [sys.executable, str(here)]
    for top in (here,):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                if name.endswith((".py", ".yaml")):
                    info = os.stat(os.path.join(dirpath, name))
                    parts.append(f"{dirpath}/{name}:{info.st_size}:{info.st_mtime_ns}")
    import site

    for packages in site.getsitepackages():
        if os.path.isdir(packages):
            parts.append(f"{packages}:{os.stat(packages).st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# -- messages: one JSON line each, file descriptors alongside --------------------------------------------------


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode() + b"\n"
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(data)


class Reader:
    """Reads JSON lines from a socket, collecting the file descriptors that come with them."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""
        self.fds: list[int] = []

    def read(self) -> dict[str, Any] | None:
        """The next message, or None at the end of the stream."""
        while b"\n" not in self.buffer:
            data, ancillary, _, _ = self.sock.recvmsg(65536, socket.CMSG_SPACE(MAX_FDS * 4))
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                    self.fds += list(fds)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        message = json.loads(line)
        return message if isinstance(message, dict) else None


# -- the client's side -----------------------------------------------------------------------------------


def connect() -> socket.socket:
    """A connection to an agent of this code, starting one (or replacing one of other code) when needed."""
    where = folder()
    mine = fingerprint()
    deadline = time.monotonic() + START_WAIT_S
    started: Started | None = None
    while True:
        sock = _try_connect(where / "agent.sock")
        if sock is not None:
            try:
                send(sock, {"op": "hello", "fingerprint": mine})
                reply = Reader(sock).read() or {}
                sock.settimeout(None)
            except OSError:  # no answer, or the connection dropped: not an agent to talk to
                reply = {}
            if reply.get("fingerprint") == mine:
                return sock
            sock.close()  # an agent of other code stops taking requests, and one of ours takes over
            if reply:  # (the code may have changed since we looked, too: look again, and start anew)
                mine, started = fingerprint(), None
        if started is None:  # none there, or whatever holds the socket is no agent: ours takes it
            started = Started(where)
        started.check()
        if time.monotonic() > deadline:
            raise AgentError(
                f"the agent did not answer within {START_WAIT_S:.0f} s: see {where / 'agent.log'}"
            )
        time.sleep(0.02)


def _try_connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HELLO_WAIT_S)  # a full backlog would block a connect for good
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        return None
    return sock


class Started:
    """An agent this client started: while the client waits for its socket, its death is reported at once,
    with what it logged."""

    def __init__(self, where: Path):
        import subprocess

        self.log = where / "agent.log"
        with open(self.log, "ab") as log:
            self.offset = log.tell()
            self.process = subprocess.Popen(
                # -P: the user's working folder is not searched for modules (a project's own `runner`
                # package would otherwise be the one imported).
                [sys.executable, "-P", "-m", "runner.agent.server", str(where)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not the terminal's: its signals and its closing pass the agent by
            )

    def check(self) -> None:
        """Raise AgentError, with the end of this start's log, if the agent has ended."""
        code = self.process.poll()
        if code is None:
            return
        with open(self.log, "rb") as log:
            log.seek(self.offset)
            lines = log.read().decode(errors="replace").strip().splitlines()[-LOG_LINES:]
        ended = f"it was killed by signal {-code}" if code < 0 else f"it exited with code {code}"
        said = "".join(f"\n  {line}" for line in lines) if lines else " (its log is empty)"
        raise AgentError(f"the agent could not start: {ended}. The end of its log, {self.log}:{said}")


def fork_owner(run_dir: str, lock_fd: int, env: dict[str, str], what: str = "run") -> int:
    """Ask the agent for the owner of a run (or, `what="sweep"`, a sweep's driver), handing it the folder's
    ownership lock; the owner's pid."""
    request = {"op": "own", "run_dir": run_dir, "cwd": os.getcwd(), "env": env, "what": what}
    with connect() as sock:
        send(sock, request, [lock_fd])
        reply = Reader(sock).read() or {}
    if not reply.get("pid"):
        raise AgentError(f"the agent could not start the run's owner: {reply.get('error', 'no answer')}")
    return int(reply["pid"])
