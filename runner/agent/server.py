"""The agent itself: a warm process that forks each command (runner.cli.main) and each run's owner
(runner.runs.owner). Its client is runner.agent.client; the wire between them runner.agent.wire."""

from __future__ import annotations

import array
import contextlib
import io
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from runner.agent.wire import FORWARDED, IDLE_S, Reader, folder, installed, loaded, send

INSTALLATION = "installation.json"  # in an agent's folder: the Python and the package it is for

# -- the agent ---------------------------------------------------------------------------------------------


def _warm() -> None:
    """Import what commands and owners need, so that each fork starts with it. Nothing is opened."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # MLflow's server installs its Host-header check when imported as a server; the run's guard checks the
    # Host header itself, per run (runner.tracking.endpoint.guard), so MLflow's check is told to let all through.
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = "sqlite:///:memory:"
    os.environ["MLFLOW_SERVER_ALLOWED_HOSTS"] = "*"
    import docker  # noqa: F401  (the Docker backend's own imports come when it is used)
    import mlflow.server
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import werkzeug.serving  # noqa: F401

    import runner.backends.docker
    import runner.backends.docker.config
    import runner.backends.local
    import runner.cli.main
    import runner.cli.verbs
    import runner.compose.load
    import runner.harness.spool
    import runner.launch.execute
    import runner.launch.reproduce
    import runner.launch.sweep_parent
    import runner.runs.owner
    import runner.tracking.record  # noqa: F401

    for name in ("_MLFLOW_SERVER_FILE_STORE", "MLFLOW_SERVER_ALLOWED_HOSTS"):
        del os.environ[name]
    from runner.environment import harness, lock

    harness.requirements(), lock.uv_version()  # looked up here once: each lookup scans the installed packages
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
        self.fingerprint = loaded()
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
            from runner.cli.main import main

            sys.argv = ["runner", *request["argv"]]
            main(list(request["argv"]))
            return 0
        os.setsid()  # the owner: apart from any terminal and from the agent's own life
        if request.get("what") == "sweep":
            return own_sweep(Path(request["run_dir"]), fds[0])
        from runner.runs import owner
        from runner.runs.rundir import RunDir

        run_dir = RunDir(Path(request["run_dir"]))
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        log = os.open(run_dir.owner_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
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


def own_sweep(root: Path, lock_fd: int) -> int:
    """In the forked child: the driver of the sweep in `root`, its output in the sweep's owner.log."""
    from runner.launch import sweep_owner
    from runner.runs.rundir import SweepDir

    folder = SweepDir(root)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log = os.open(folder.owner_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return sweep_owner.main([str(root), str(lock_fd)])


# -- the folders of installations that are gone ----------------------------------------------------------------


def note_installation(where: Path) -> None:
    """Which installation the folder is for (read by clear_gone)."""
    part = where / f"installation.{os.getpid()}"
    part.write_text(json.dumps(installed()))
    part.replace(where / INSTALLATION)


def clear_gone(user: Path) -> None:
    """Remove the agent folders of installations that no longer exist (a virtual environment removed), once no
    agent holds them: one folder per installation, not one per installation ever used."""
    import fcntl
    import shutil

    for where in user.iterdir():
        try:
            paths = json.loads((where / INSTALLATION).read_text()).values()
            lock = os.open(where / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except (OSError, ValueError, AttributeError):
            continue
        try:
            if not all(os.path.exists(path) for path in paths):
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(where)
        except OSError:  # an agent holds it, or it went meanwhile
            pass
        finally:
            os.close(lock)


def main(argv: list[str]) -> None:
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    where = folder()
    note_installation(where)
    _warm()
    agent = Agent(where)
    clear_gone(where.parent)
    agent.serve()
    clear_gone(where.parent)
    print(f"[agent] {os.getpid()} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
