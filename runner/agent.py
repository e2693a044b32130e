"""The agent: one warm process per user that every `runner` command is forked from.

`runner ...` is a thin client (standard library only): it hands its arguments, environment, working folder
and its terminal's stdin/stdout/stderr to the agent over a Unix socket, and the agent forks a child that runs
the command exactly as `runner` would in a process of its own, but with MLflow, Hydra and Docker already
imported. The client forwards its signals (Ctrl-C, SIGTERM, SIGHUP) to that child and exits with its exit
code; if the client dies (kill -9, a closed terminal), the agent kills the child, as it would have died with
the client. A run's owner (runner.owner) is forked the same way, in a session of its own, holding the run's
ownership lock that its requester hands over with the request.

The agent holds no store, no engine connection and no thread when it forks: only imported modules. It is
started by the first command that needs it and exits after RUNNER_AGENT_IDLE seconds (900) without a
request. An agent started from other code (another version, another Python, files changed since) is told
to quit and replaced, never talked past. Its folder (RUNNER_AGENT_DIR, else $XDG_RUNTIME_DIR/runner, else
/tmp/runner-UID) must be the user's own and closed to others: otherwise the runner refuses to use it.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

IDLE_S = 900.0
START_WAIT_S = 60.0
HELLO_WAIT_S = 5.0
MAX_FDS = 3
# Commands that stay in the client's own process: the UI is a long-lived server of its own.
IN_PROCESS = ("ui",)
FORWARDED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")  # from the client to the command's process


class AgentError(Exception):
    """The agent cannot be used; the message says why and what to do."""


# -- where, and which code ---------------------------------------------------------------------------------


def folder() -> Path:
    """The agent's folder, created 0700 if absent; refused if it is not the user's own and closed to others."""
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


def fingerprint() -> str:
    """Which code an agent runs: this Python, the runner's files (name, size, time) and the installed
    packages' folders (an install changes them). A client talks only to an agent of the same."""
    here = Path(__file__).resolve().parent
    parts = [sys.executable, str(here)]
    for top in (here, here.parent / "hydra_plugins"):
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
    started = False
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
                mine, started = fingerprint(), False
            elif not started:  # whatever holds the socket is no agent: ours takes it
                _start(where)
                started = True
        elif not started:
            _start(where)
            started = True
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


def _start(where: Path) -> None:
    import subprocess

    with open(where / "agent.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "runner.agent", str(where)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not the terminal's: its signals and its closing pass the agent by
        )


def client_main(argv: list[str] | None = None) -> None:
    """`runner ARGS`: run the command in a child of the agent, as if here."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in IN_PROCESS:
        from runner.cli import main

        main(argv)
        return
    try:
        sock = connect()
    except AgentError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        sys.exit(1)
    mask = os.umask(0)
    os.umask(mask)
    forwarded = [s for s in FORWARDED if signal.getsignal(getattr(signal, s)) != signal.SIG_IGN]
    request = {
        "op": "command",
        "argv": argv,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "umask": mask,
        # A signal ignored here (as a background job's SIGINT is) is ignored in the command's process too.
        "ignored": sorted(set(FORWARDED) - set(forwarded)),
    }
    send(sock, request, [0, 1, 2])
    reader = Reader(sock)
    child = (reader.read() or {}).get("pid")
    if not child:
        print("runner: the agent refused the command: see its log", file=sys.stderr)
        sys.exit(1)

    def forward(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)

    for name in forwarded:
        signal.signal(getattr(signal, name), forward)
    while True:
        try:
            reply = reader.read()
            break
        except InterruptedError:
            continue
    if reply is None or "exit" not in reply:  # the agent died under the command: it must not run on alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        print("runner: the agent ended during the command: run it again", file=sys.stderr)
        sys.exit(1)
    sys.exit(int(reply["exit"]))


def fork_owner(run_dir: str, lock_fd: int, env: dict[str, str]) -> int:
    """Ask the agent for a run's owner, handing it the run's ownership lock; the owner's pid."""
    with connect() as sock:
        send(sock, {"op": "own", "run_dir": run_dir, "cwd": os.getcwd(), "env": env}, [lock_fd])
        reply = Reader(sock).read() or {}
    if not reply.get("pid"):
        raise AgentError(f"the agent could not start the run's owner: {reply.get('error', 'no answer')}")
    return int(reply["pid"])


# -- the agent ---------------------------------------------------------------------------------------------


def _warm() -> None:
    """Import what commands and owners need, so that each fork starts with it. Nothing is opened."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow's server installs its Host-header check when imported as a server; the run's guard checks the
    # Host header itself, per run (runner.tracking.guard), so MLflow's check is told to let all through.
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = "sqlite:///:memory:"
    os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = "*"
    import mlflow.server
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import werkzeug.serving  # noqa: F401

    import runner.backends.docker
    import runner.backends.local
    import runner.cli
    import runner.commands
    import runner.compose
    import runner.launch
    import runner.owner
    import runner.reproduce
    import runner.spool
    import runner.sweep
    import runner.tracking  # noqa: F401

    for name in ("_MLFLOW_SERVER_FILE_STORE", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        del os.environ[name]
    # MLflow checks a store's schema against its migration scripts each time it opens one, reading ~70
    # scripts to find the newest; they do not change while the agent lives (an install replaces the agent).
    import functools

    from mlflow.store.db import utils as db_utils

    db_utils._get_latest_schema_revision = functools.cache(db_utils._get_latest_schema_revision)
    _rehearse()
    import gc

    gc.collect()
    gc.freeze()  # what is warm now stays out of the children's collections (and their copies of memory)


def _rehearse() -> None:
    """One run's record made and closed in a throw-away store: SQLAlchemy compiles and memoises its
    statements once here rather than in every child. The store is closed and forgotten afterwards."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/rehearsal.db")
        experiment = client.create_experiment("rehearsal", artifact_location=f"file://{tmp}/artifacts")
        run = client.create_run(experiment, tags={"a": "b"})
        run_id = run.info.run_id
        client.get_experiment_by_name("rehearsal")
        client.log_batch(run_id, params=[Param("p", "1")], tags=[RunTag("t", "1")])
        client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)])
        client.log_metric(run_id, "m", 2.0, step=1)
        client.log_text(run_id, "x", "x.txt")
        client.get_run(run_id)
        client.get_metric_history(run_id, "m")
        client.search_runs(
            [experiment], filter_string="tags.`a` != ''", order_by=["attributes.start_time DESC"]
        )
        client.set_terminated(run_id, "FINISHED")
        client._tracking_client.store.engine.dispose()
    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()


class Agent:
    def __init__(self, where: Path):
        import fcntl

        self.where = where
        self.fingerprint = fingerprint()
        self.lock = os.open(where / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + 10
        while True:  # an agent of other code lets go of it once told to quit; one of ours keeps it
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SystemExit("[agent] another agent holds this folder") from None
                time.sleep(0.05)
        path = where / "agent.sock"
        path.unlink(missing_ok=True)
        self.listener: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.socket_inode = os.stat(path).st_ino  # the socket file is ours while it is this one
        self.listener.listen(64)
        self.clients: dict[int, socket.socket] = {}  # command child pid -> its client's connection
        self.last_request = time.monotonic()
        (where / "agent.json").write_text(json.dumps({"pid": os.getpid(), "fingerprint": self.fingerprint}))
        print(f"[agent] {os.getpid()} serving {path} (code {self.fingerprint})", flush=True)

    def serve(self) -> None:
        import select

        idle = float(os.environ.get("RUNNER_AGENT_IDLE", IDLE_S))
        while self.listener is not None or self.clients:
            poll = select.poll()
            if self.listener is not None:
                poll.register(self.listener, select.POLLIN)
            by_fd = {conn.fileno(): pid for pid, conn in self.clients.items()}
            for fd in by_fd:
                poll.register(fd, select.POLLIN)
            for fd, _ in poll.poll(200):
                if self.listener is not None and fd == self.listener.fileno():
                    self.accept()
                elif fd in by_fd:  # a client said nothing more: it is gone, and its command goes with it
                    self.client_gone(by_fd[fd])
            self.reap()
            if self.listener is not None and not self.clients and time.monotonic() - self.last_request > idle:
                self.stop_listening()

    def stop_listening(self) -> None:
        """Take no more requests (the folder's lock and socket go to whichever agent comes next)."""
        assert self.listener is not None
        path = self.where / "agent.sock"
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == self.socket_inode:
                path.unlink()
        self.listener.close()
        self.listener = None
        os.close(self.lock)

    def accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if array.array("i", creds)[1] != os.getuid():  # only its own user; the folder is closed to others too
            conn.close()
            return
        reader = Reader(conn)
        try:
            conn.settimeout(10)
            hello = reader.read() or {}
            send(conn, {"fingerprint": self.fingerprint})
            if hello.get("op") != "hello" or hello.get("fingerprint") != self.fingerprint:
                print("[agent] a client of other code asked: quitting once its commands end", flush=True)
                self.stop_listening()
                conn.close()
                return
            request = reader.read() or {}
            conn.settimeout(None)
            self.last_request = time.monotonic()
            op = request.get("op")
            if op == "command" and len(reader.fds) == 3:
                pid = self.fork(request, reader.fds, conn, command=True)
                send(conn, {"pid": pid})
                self.clients[pid] = conn
            elif op == "own" and len(reader.fds) == 1:
                pid = self.fork(request, reader.fds, conn, command=False)
                send(conn, {"pid": pid})
                conn.close()
            else:
                send(conn, {"error": f"unknown request {op!r}"})
                conn.close()
        except (OSError, ValueError) as exc:
            print(f"[agent] a request failed: {exc}", flush=True)
            conn.close()
        finally:
            for fd in reader.fds:
                os.close(fd)

    def fork(self, request: dict[str, Any], fds: list[int], conn: socket.socket, command: bool) -> int:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            if not command:
                conn.close()
            code = self.child(request, fds, command)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
                if command:  # the client may go now: its exit code, without waiting for the agent to reap us
                    send(conn, {"exit": code})
            except Exception:
                pass
            os._exit(code)

    def child(self, request: dict[str, Any], fds: list[int], command: bool) -> int:
        """In the forked child: become the requester's process, then run its command or own its run."""
        if self.listener is not None:
            self.listener.close()
            os.close(self.lock)
        for conn in self.clients.values():
            conn.close()
        for name in ("SIGTERM", "SIGHUP", "SIGQUIT"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for name in request.get("ignored", []) if command else []:
            if name in FORWARDED:
                signal.signal(getattr(signal, name), signal.SIG_IGN)
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # found again from the requester's TMPDIR, not the agent's
        os.chdir(request["cwd"])
        if command:
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            os.umask(int(request.get("umask", 0o022)))
            if isinstance(sys.stdout, io.TextIOWrapper):  # as Python sets it up: by line on a terminal
                sys.stdout.reconfigure(line_buffering=os.isatty(1))
            from runner.cli import main

            sys.argv = ["runner", *request["argv"]]
            main(list(request["argv"]))
            return 0
        os.setsid()  # the owner: apart from any terminal and from the agent's own life
        from runner import owner
        from runner.backends.base import RunDir

        run_dir = RunDir(Path(request["run_dir"]))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        log = os.open(run_dir / owner.OWNER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        return owner.main([str(run_dir.root), str(fds[0])])

    def client_gone(self, pid: int) -> None:
        self.clients.pop(pid).close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.clients.pop(pid, None)
            if conn is not None:
                code = os.waitstatus_to_exitcode(status)
                with contextlib.suppress(OSError):
                    send(conn, {"exit": code if code >= 0 else 128 - code})
                conn.close()


def main(argv: list[str]) -> None:
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    where = folder()
    _warm()
    agent = Agent(where)
    agent.serve()
    print(f"[agent] {os.getpid()} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
