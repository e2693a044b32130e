"""The owner of a run: a process of its own that outlives the terminal, and takes the truth from the engine.

The owner (forked by runner.agent for each run) starts the planned run (or takes over one that is already on the engine),
serves its tracking endpoint, records what it spools, enforces its time limit, obeys a stop request, and
records the ending from the engine's own account (exit code, OOM kill) with the log and outputs. Whoever
started the run only follows its log: a terminal may close, or its `runner` be killed, and nothing changes.

Who owns a run is a lock: the owner holds `owner.lock` (flock) for as long as it lives, and the kernel lets go
of it when the owner dies, however it dies. `reconcile` (run at the start of every `runner` command) finds the
runs of this project whose lock is free and hands each to a new owner, which adopts a run that is still going,
records one that ended meanwhile, and marks one the engine has lost FAILED with the reason `lost`.

Files in the run directory (`RunDir`): state.json (what the run is: written before anything starts),
plan.json (what to start), started (when it started), stop (a stop request and its reason), settled.json (the
engine's account of the ending, kept before the engine's copy of the run is removed), ended.json (the recorded
ending), record.json and record/ (the run's inputs for its record), owner.log (the owner's own output).
`.runner/live/RUN_ID` marks the runs not yet ended.
"""

from __future__ import annotations

import codecs
import contextlib
import fcntl
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from runner.backends.base import Backend, Plan, RunHandle
from runner.errors import RunnerError
from runner.harness.boundedlog import limit_in
from runner.harness.boundedlog import settle as settle_log
from runner.harness.shim import alive, write_json
from runner.runs import attempts, space
from runner.runs.rundir import FAILED, KILLED, LIVE, RUNS, SWEEPS, Outcome, RunDir, SweepDir
from runner.tracking.endpoint import SPOOL_ARTIFACTS, SPOOL_MODELS, server_environment
from runner.tracking.logtext import log_the_log
from runner.tracking.record import WORKDIR, WORKDIR_LIMIT, is_remote, log_models, log_outputs

INGEST_EVERY = 1.0  # seconds between spool reads: metrics show in the UI about this late


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- ownership -------------------------------------------------------------------------------------------


def try_claim(run_dir: RunDir | SweepDir) -> int | None:
    """An fd holding the run's ownership lock, or None if a live owner holds it."""
    fd = os.open(run_dir.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def owned(run_dir: RunDir | SweepDir) -> bool:
    fd = try_claim(run_dir)
    if fd is None:
        return True
    os.close(fd)
    return False


def mark_live(project: Path, run_id: str, run_dir: RunDir) -> None:
    (project / LIVE).mkdir(parents=True, exist_ok=True)
    (project / LIVE / run_id).write_text(str(run_dir.root))


def spawn(run_dir: RunDir, lock_fd: int, env: dict[str, str] | None = None) -> int:
    """Start the owner of `run_dir` (forked by the agent, in a session of its own: not in the terminal's
    process group, so Ctrl-C and a closed terminal pass it by), handing it the ownership lock held by
    `lock_fd`; its pid."""
    from runner.agent.wire import AgentError, fork_owner
    from runner.errors import RunnerError

    try:
        return fork_owner(str(run_dir.root), lock_fd, env if env is not None else dict(os.environ))
    except AgentError as exc:
        raise RunnerError(str(exc)) from exc


def find_run_dir(project: Path, run_id: str) -> RunDir:
    """The run directory of `run_id` (or of the one run whose id starts with it); a one-line error that
    names the closest ids otherwise."""
    from runner.errors import RunnerError, suggest

    runs = project / RUNS
    ids = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    if run_id in ids:  # only a name listed there: never a path built from what was typed
        return RunDir(runs / run_id)
    matches = [i for i in ids if run_id and i.startswith(run_id)]
    if len(matches) == 1:
        return RunDir(runs / matches[0])
    if len(matches) > 1:
        raise RunnerError(f"Run id '{run_id}' is the start of {len(matches)} runs' ids: give more of it.")
    raise RunnerError(f"No run '{run_id}' in this project.{suggest(run_id, ids)} List runs with: runner ls")


def request_stop(run_dir: RunDir, reason: str) -> None:
    if not (run_dir.stop).exists():
        (run_dir.stop).write_text(reason)


def ending(run_dir: RunDir) -> Outcome | None:
    ended = read_json(run_dir.ended)
    if not isinstance(ended, dict):
        return None
    return Outcome.from_json(ended)


# -- following (the terminal's side) ---------------------------------------------------------------------


def follow(
    run_dir: RunDir, echo: Any, offset: int = 0, stop: Any = None, interrupt_stops: bool = True
) -> Outcome:
    """Copy the run's log to `echo` from `offset` until the run has ended; its recorded ending. Ctrl-C asks
    the owner to stop the run (it ends KILLED) and waits for that, then raises KeyboardInterrupt (with
    `interrupt_stops=False` it only stops following). `stop` (a sweep's Stop) asks the same with its reason.
    A lost owner is replaced."""
    interrupted = False
    watch = OwnerWatch(run_dir)
    # A character cut between two reads (a progress bar's ━ is three bytes) is written whole with the next.
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode
    with open(run_dir.log, "rb") as fh:
        fh.seek(offset)
        while True:
            try:
                outcome = ending(run_dir)
                chunk = _echo(fh, echo, decode)
                if outcome is not None:
                    if interrupted:
                        raise KeyboardInterrupt
                    return outcome
                if stop is not None and stop.is_set():
                    request_stop(run_dir, stop.reason)
                watch.check()
                if not chunk:
                    time.sleep(0.01)
            except KeyboardInterrupt:
                if interrupted or not interrupt_stops:
                    raise
                interrupted = True
                request_stop(run_dir, "interrupted")
                if echo is not None:
                    echo.write("\n[runner] interrupted: stopping the run\n")


def _echo(fh: Any, echo: Any, decode: Any) -> bytes:
    """What the log has gained since the last read, copied to `echo` (where there is one)."""
    chunk: bytes = fh.read()
    if chunk and echo is not None:
        echo.write(decode(chunk))
        echo.flush()
    return chunk


class OwnerWatch:
    """A follower's look at the run's owner every 2 s: a lost one is replaced, up to 3 times."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.last_check = time.monotonic()
        self.replaced = 0

    def check(self) -> None:
        if time.monotonic() - self.last_check <= 2:
            return
        self.last_check = time.monotonic()
        if ending(self.run_dir) is None and not space.has_room(self.run_dir.root):
            raise waits_for_room(self.run_dir)
        if not owned(self.run_dir) and ending(self.run_dir) is None and adopt(self.run_dir):
            self.replaced += 1
            if self.replaced > 3:
                raise RuntimeError(f"the run's owner keeps failing: see {self.run_dir.owner_log}")


def waits_for_room(run_dir: RunDir) -> space.DiskFull:
    """The one line a follower ends with while the run's filesystem is full: its owner records the run's ending
    once there is room (or the next `runner` command does)."""
    run_id = run_dir.root.name
    project = run_dir.root.parents[2]
    what = f": run {run_id} waits for room to record its ending (then `runner attach {run_id}`)"
    return space.DiskFull(space.said(run_dir.root, project, what))


def wait_started(run_dir: RunDir, timeout: float = 120) -> bool:
    """True once the owner has started the run (False if it ended first, or the owner died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir.started).exists():
            return True
        if ending(run_dir) is not None or not owned(run_dir):
            return (run_dir.started).exists()
        time.sleep(0.01)
    return False


# -- reconciling (every command) --------------------------------------------------------------------------


def adopt(run_dir: RunDir, wait: float = 60) -> bool:
    """Hand an unowned run to a new owner; return once it has settled what the run is (or `wait` passed).
    False where the run is owned (here, or by a job elsewhere)."""
    if owned_elsewhere([run_dir]):
        return False
    fd = try_claim(run_dir)
    if fd is None:
        return False
    try:
        child = spawn(run_dir, fd)
    finally:
        os.close(fd)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and alive(child, None):
        report = read_json(run_dir.owner_report) or {}
        if ending(run_dir) is not None or report == {"pid": child, "phase": "supervising"}:
            break
        time.sleep(0.1)
    return True


def hold_sweep(project: Path, sweep_id: str, parent_id: str, uri: str) -> int:
    """The sweep's driver (the terminal's runner) holds its lock while it lives; an fd to close at the end."""
    folder = SweepDir.of(project, sweep_id)
    folder.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder.lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    state = {"sweep_id": sweep_id, "parent": parent_id, "tracking_uri": uri, "host": socket.gethostname()}
    write_json(folder.state, state)
    folder.live.touch()
    return fd


def release_sweep(project: Path, sweep_id: str, fd: int, submitted: bool = False) -> None:
    """The driver is done. `submitted`: its members went to a scheduler and go on; the last of them to end (or
    the first command after) closes the sweep."""
    folder = SweepDir.of(project, sweep_id)
    if submitted:
        write_json(folder.state, {**read_json(folder.state), "submitted": True})
    else:
        folder.live.unlink(missing_ok=True)
    os.close(fd)


def settle_sweeps(project: Path) -> None:
    """A sweep whose driver died ends once none of its members runs: FAILED, reason `lost`. A sweep submitted to
    a scheduler ends once none of its members runs, FINISHED when each of them did (from any machine)."""
    from runner.launch import sweep_parent as sweep

    sweeps = project / SWEEPS
    if not sweeps.is_dir():
        return
    running = set()
    for marker in (project / LIVE).glob("*") if (project / LIVE).is_dir() else []:
        state = read_json(RunDir(Path(marker.read_text().strip())).state) or {}
        running.add(state.get("sweep_parent"))
    for folder in map(SweepDir, sweeps.iterdir()):
        state = read_json(folder.state)
        if not folder.live.exists() or not state:
            continue
        if state.get("driven") or (not state.get("submitted") and state.get("host") != socket.gethostname()):
            continue  # a sweep with a driver of its own: a new driver takes it over (runner.launch.sweep_owner)
        if state["parent"] in running or owned(folder):
            continue
        why = (
            None
            if state.get("submitted")
            else f"lost: the sweep's runner process ended; run the rest with: runner sweep resume {state['sweep_id']}"
        )
        sweep.finish_parent(state["tracking_uri"], state["parent"], interrupted=False, error=why)
        folder.live.unlink(missing_ok=True)


def owned_elsewhere(run_dirs: list[RunDir]) -> list[RunDir]:
    """The runs among `run_dirs` that another machine's process owns (a queued or running job on a cluster):
    one question per backend, which a scheduler's backend asks once for all of their jobs."""
    from runner.backends import get_backend

    by_backend: dict[str, list[RunDir]] = {}
    for run_dir in run_dirs:
        # Only a run handed to a scheduler has a job.
        if (run_dir.slurm_job).exists():
            by_backend.setdefault((read_json(run_dir.state) or {})["backend"], []).append(run_dir)
    owned: list[RunDir] = []
    for name, dirs in by_backend.items():
        owned += get_backend(name).owned_elsewhere(dirs)
    return owned


def reconcile(project: Path) -> list[str]:
    """Give every run of this project on this host that has lost its owner a new one (the ids adopted);
    close the sweeps whose driver is gone once their members have ended."""
    live = project / LIVE
    if not live.is_dir():
        return []
    unowned = []
    for marker in sorted(live.iterdir()):
        run_dir = RunDir(Path(marker.read_text().strip()))
        # Removed by hand: nothing left to own.
        if not run_dir.root.is_dir():
            marker.unlink(missing_ok=True)
            continue
        state = read_json(run_dir.state)
        if state is None or state.get("host") != socket.gethostname():
            continue
        if ending(run_dir) is not None:
            marker.unlink(missing_ok=True)
            continue
        unowned.append((marker.name, run_dir))
    elsewhere = {run_dir.root for run_dir in owned_elsewhere([run_dir for _, run_dir in unowned])}
    adopted = [name for name, run_dir in unowned if run_dir.root not in elsewhere and adopt(run_dir)]
    settle_sweeps(project)
    return adopted


# -- owning (the owner process) ---------------------------------------------------------------------------


class Owner:
    def __init__(self, run_dir: RunDir, backend: Backend[Any] | None = None):
        """`backend`: where the run is not the recorded backend's on this machine (a cluster job's node)."""
        from runner.backends import get_backend

        self.run_dir = run_dir
        self.state: dict[str, Any] = read_json(run_dir.state)
        self.run_id: str = self.state["run_id"]
        self.backend = backend or get_backend(self.state["backend"])
        self.endpoint: Any = None
        self.listener: socket.socket | None = None  # the endpoint's socket, held from its port's choice
        self.handle: RunHandle | None = None
        self.plan: Plan | None = None
        self.floor = attempts.floor(run_dir)  # the steps earlier attempts recorded: read once per attempt
        self._client: Any = None
        self._client_lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(self.state["tracking_uri"])
            return self._client

    def report(self, phase: str) -> None:
        write_json(self.run_dir.owner_report, {"pid": os.getpid(), "phase": phase})

    def run(self) -> None:
        outcome: Outcome | None = Outcome(FAILED, reason="runner error")
        try:
            outcome = self.next_attempts(self.own())
        except BaseException as exc:
            if space.is_full(exc):  # the run goes on: its ending is recorded once there is room (main)
                outcome = None
                raise
            said = str(exc) if isinstance(exc, RunnerError) else f"runner error: {type(exc).__name__}: {exc}"
            outcome = Outcome(FAILED, reason=said)
            if self.handle is not None:
                with contextlib.suppress(Exception):
                    self.handle.cancel()
            raise
        finally:
            if outcome is not None and not (self.run_dir.ended).exists():
                self.finish(outcome)

    def own(self) -> Outcome | None:
        """The run started, or taken over from a lost owner, and supervised: how it ended (None: an earlier owner
        had recorded that already, and its work is finished here)."""
        self.handle = self.backend.reattach(self.run_id, self.run_dir)
        plan = self.plan = self.backend.read_plan(self.run_dir)
        if plan and not is_remote(self.state["tracking_uri"]):
            # MLflow's server takes a second or two to import: do it while the run starts, not before.
            server_environment(self.state["tracking_uri"], *self.backend.tracking_bind(plan))
            threading.Thread(target=lambda: __import__("mlflow.server"), daemon=True).start()
        if self.handle is None and not (self.run_dir.started).exists():
            if (self.run_dir.stop).exists():
                return Outcome(KILLED, reason=(self.run_dir.stop).read_text().strip())
            if plan is None:
                return Outcome(FAILED, reason="lost: the runner process ended before the run started")
            self.start(plan)
        else:  # taking over from a lost owner
            recorded = self.client.get_run(self.run_id)
            if recorded.info.status != "RUNNING":  # it recorded the ending, then died: finish its work
                self.settle_recorded(recorded)
                return None
            self.record_inputs()
            if self.handle is None:
                settled = read_json(self.run_dir.settled)  # ended, released, not yet recorded
                if isinstance(settled, dict):
                    return Outcome.from_json(settled)
                return Outcome(FAILED, reason="lost: the engine has no trace of the run", interrupted=True)
        self.serve_once()
        return self.supervise()

    def start(self, plan: Plan) -> None:
        env = self.run_env(plan, self.access(plan))
        # The store is opened while the engine starts the run (both take a while), not before: not in its way.
        threading.Thread(target=lambda: self.client, name="open-store", daemon=True).start()
        self.handle = self.backend.start(plan, self.run_dir, env)
        write_json(self.run_dir.started, {"at": time.time()})
        self.record_inputs()  # while the engine starts it

    def next_attempts(self, outcome: Outcome | None) -> Outcome | None:
        """The run's next attempts, while its engine interrupts it and it has attempts left (runner.runs.attempts):
        started here, or handed to a scheduler's next job (then None: that job's owner records the run)."""
        from runner.harness import spool

        while outcome is not None and self.plan and attempts.continues(self.run_dir, self.state, outcome):
            self.ingest(spool)  # the attempt's records in first: the next one's floor is what they hold
            self.release()
            number = attempts.begin(self.run_dir, self.client, self.run_id, outcome)
            self.floor = attempts.floor(self.run_dir)
            most = self.state.get("max_attempts")
            self.say(
                f"[runner] {outcome.said()}: attempt {number} of {most}, from the run's last checkpoint\n"
            )
            if self.backend.resubmit(self.run_dir):
                return None
            self.start(self.plan)
            self.serve_once()
            outcome = self.supervise()
        return outcome

    def record_inputs(self) -> None:
        from runner.tracking.record import record_inputs

        try:
            record_inputs(self.client, self.run_id, self.run_dir)
        except Exception as exc:  # the store busy: the ending tries again
            print(f"[owner] could not record the run's inputs yet: {exc}", file=sys.stderr, flush=True)

    def access(self, plan: Plan) -> dict[str, Any] | None:
        """The run's endpoint: a port and a token, kept across owners (None where the store is remote). A port
        chosen here is listened on from then on (`listen`)."""
        from runner.tracking.endpoint import listen

        if is_remote(self.state["tracking_uri"]):
            return None
        access = read_json(self.run_dir.endpoint)
        if access is None:
            bind, _, _ = self.backend.tracking_bind(plan)
            self.listener = listen(bind)
            access = {"port": self.listener.getsockname()[1], "token": secrets.token_urlsafe(32)}
            write_json(self.run_dir.endpoint, access, private=True)
        return dict(access)

    def run_env(self, plan: Plan, access: dict[str, Any] | None) -> dict[str, str]:
        uri = self.state["tracking_uri"]
        attempt = {"RUNNER_ATTEMPT": str(attempts.current(self.run_dir))}
        if access is None:
            return {"MLFLOW_TRACKING_URI": uri, **attempt}
        _, reach_as, _ = self.backend.tracking_bind(plan)
        return {
            **attempt,
            "MLFLOW_TRACKING_URI": f"http://{reach_as}:{access['port']}",
            "MLFLOW_TRACKING_TOKEN": access["token"],
            # A run's own MLflow calls give up within seconds, never minutes, when no owner answers.
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "5",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
        }

    def serve_once(self) -> None:
        """The run's tracking endpoint, served once the run has started (its first calls wait in the socket's
        queue meanwhile), and kept for its next attempts."""
        from runner.tracking.endpoint import Endpoint, listen

        plan = self.plan
        access = self.access(plan) if plan else None
        if self.endpoint is not None or plan is None or access is None:
            return
        bind, _, names = self.backend.tracking_bind(plan)
        try:
            listener = self.listener or listen(bind, access["port"])  # an earlier owner's port: taken again
            self.listener = None
            self.endpoint = Endpoint(
                self.state["tracking_uri"], listener, self.run_id, access["token"], names,
                plan.variable("RUNNER_SPOOL"),  # the run's artifacts and models go to its spool, for us to record
                lambda: self.floor,  # an earlier attempt's steps are not recorded again
            )  # fmt: skip
        except OSError as exc:  # its port taken since: the run's own MLflow calls then fail, nothing else
            print(f"[owner] cannot serve the run's endpoint again: {exc}", file=sys.stderr, flush=True)

    def supervise(self) -> Outcome:
        from runner.harness import spool
        from runner.runs import session

        assert self.handle is not None
        started = (read_json(self.run_dir.started) or {}).get("at", time.time())
        timeout = self.state.get("timeout")
        deadline = None if timeout is None else started + timeout
        reported = False
        # A session (runner.session): it stops itself unused.
        idle_timeout = int(self.state.get("idle_timeout") or 0)
        access = session.read(self.run_dir) if idle_timeout else None
        next_check = time.monotonic()
        while True:
            outcome = self.handle.wait(INGEST_EVERY if reported else 0)
            self.ingest(spool)
            if outcome is not None:
                return outcome
            if not reported:  # the run is going: whoever waits on this owner to settle it may go on
                self.report("supervising")
                reported = True
            reason = None
            if (self.run_dir.stop).exists():
                reason = (self.run_dir.stop).read_text().strip() or "stopped"
            elif (self.run_dir.interrupt).exists():  # the engine is about to stop it: a checkpoint first
                return self.interrupted((self.run_dir.interrupt).read_text().strip() or "interrupted")
            elif deadline is not None and time.time() >= deadline:
                reason = f"timeout after {timeout} s"
            elif access is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + session.CHECK_EVERY
                reason = session.idle_reason(access, idle_timeout)
            if reason is not None:
                self.handle.cancel()
                ended = self.handle.wait(30)
                return Outcome(KILLED, ended.exit_code if ended else None, reason)

    def interrupted(self, reason: str) -> Outcome:
        """The run asked to save a checkpoint and stop (SIGTERM), given the time to: its ending, an interruption."""
        assert self.handle is not None
        self.say(f"[runner] {reason}: asking the run to save a checkpoint and stop\n")
        self.handle.cancel(grace=attempts.GRACE)
        ended = self.handle.wait(30)
        return Outcome(KILLED, ended.exit_code if ended else None, reason, interrupted=True)

    def ingest(self, spool: Any) -> None:
        """The harness's spool and the metric lines the run printed, into its record (above the steps that earlier
        attempts recorded)."""
        try:
            spool.ingest(self.run_dir.spool, self.run_dir.spool_offset, self.client, self.run_id, self.floor)
            spool.ingest_log(
                self.run_dir.log, self.run_dir.metric_lines_offset, self.client, self.run_id, self.floor
            )
        except Exception as exc:  # the store busy or away: the records wait in the spool
            print(f"[owner] could not record spooled records yet: {exc}", file=sys.stderr, flush=True)

    def finish(self, outcome: Outcome) -> None:
        """Record the ending; each step is guarded so the status is always set."""
        from runner.harness import spool
        from runner.tracking.record import record_inputs

        stopping = threading.Thread(target=self.endpoint.stop if self.endpoint else lambda: None, daemon=True)
        stopping.start()  # the run has exited: nothing calls the endpoint now; it stops while we record
        # The engine's copy goes while we record, too (its output is in run.log: the handle has read it all);
        # its account of the ending is kept first, for an owner that takes over if this one dies meanwhile.
        write_json(
            self.run_dir.settled,
            outcome.to_json(),
        )
        releasing = threading.Thread(target=self.release, daemon=True)
        releasing.start()
        ending = (
            f"[runner] run {self.run_id} {outcome.status}"
            + (f": {outcome.reason}" if outcome.reason and outcome.status != "FINISHED" else "")
            + "\n"
        )
        output, logfile = self.run_dir.output, self.run_dir.log
        steps = [
            # The log's kept tail, where it passed its limit, first: the metric lines in it are read next.
            lambda: settle_log(logfile, limit_in(self.run_dir.root)),
            lambda: record_inputs(self.client, self.run_id, self.run_dir),
            lambda: self.ingest(spool),
            lambda: self.set_tags(
                outcome.tags(),
                {"duration_s": round(time.time() - self.state["created"], 3)},
            ),
            lambda: self.log_outputs(output, logfile),
            self.log_app_params,
            lambda: self.say(ending),
            lambda: log_the_log(self.client, self.run_id, logfile),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:  # keep going: the status below matters most
                with contextlib.suppress(OSError):  # its log on a full filesystem, say
                    print(
                        f"[owner] could not record part of run {self.run_id}: {exc}",
                        file=sys.stderr,
                        flush=True,
                    )
        self.client.set_terminated(self.run_id, status=outcome.status)
        releasing.join(timeout=60)
        write_json(
            self.run_dir.ended,
            outcome.to_json(),
        )
        (Path(self.state["project"]) / LIVE / self.run_id).unlink(missing_ok=True)
        # A sweep handed over at once goes on without its driver: the last member to end closes it.
        if self.backend.sweeps_at_once and self.state.get("sweep_parent"):
            try:
                settle_sweeps(Path(self.state["project"]))
            except Exception as exc:
                print(f"[owner] could not close the sweep: {exc}", file=sys.stderr, flush=True)
        stopping.join(timeout=5)

    def log_outputs(self, output: Path, logfile: Path) -> None:
        """/output's files under output/, what the run wrote in its working directory under workdir/, and the
        artifacts and models its own MLflow calls logged (autologging's, say) where they said."""
        spooled, snapshot = self.run_dir.spool, read_json(self.run_dir.code_manifest)
        steps = [
            lambda: log_outputs(self.client, self.run_id, output),
            lambda: log_outputs(self.client, self.run_id, spooled / SPOOL_ARTIFACTS, "", None, WORKDIR_LIMIT),
            lambda: log_models(self.client, self.run_id, spooled / SPOOL_MODELS),
        ]
        if isinstance(snapshot, dict):  # the code as it was staged: what differs from it, the run wrote
            code = self.run_dir.code
            steps.append(
                lambda: log_outputs(self.client, self.run_id, code, WORKDIR, snapshot, WORKDIR_LIMIT)
            )
        for step in steps:
            try:
                lines = step()
            except space.DiskFull as exc:  # what fitted is kept; the record says what did not
                lines = [str(exc)]
                self.set_tags({"runner.outputs.not_kept": str(exc)[:4000]})
            for line in lines:
                self.say(f"[runner] {line}\n")

    def log_app_params(self) -> None:
        """A Hydra application's own config, written during the run, as its `app.*` params."""
        from runner.tracking.appconfig import log_app_params

        snapshot = read_json(self.run_dir.code_manifest)
        folders = [(self.run_dir.code, WORKDIR, snapshot if isinstance(snapshot, dict) else {})]
        for line in log_app_params(self.client, self.run_id, [*folders, (self.run_dir.output, "output", {})]):
            self.say(f"[runner] {line}\n")

    def say(self, line: str) -> None:
        """A line of the runner's own in the run's log."""
        with open(self.run_dir.log, "a", encoding="utf-8") as log:
            log.write(line)

    def settle_recorded(self, recorded: Any) -> None:
        """The ending is in the record already: only what came after it is left to do."""
        self.release()
        write_json(
            self.run_dir.ended, Outcome.from_record(recorded.info.status, recorded.data.tags).to_json()
        )
        (Path(self.state["project"]) / LIVE / self.run_id).unlink(missing_ok=True)

    def release(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self.handle.release()
        self.run_dir.secrets.unlink(missing_ok=True)  # whatever became of the engine's copy of the run
        self.run_dir.job_secrets.unlink(missing_ok=True)  # a job's that never started

    def set_tags(self, tags: dict[str, Any], metrics: dict[str, float] | None = None) -> None:
        """Tags (those not None) and metrics, in one write."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        points = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
        if items or points:
            self.client.log_batch(self.run_id, tags=items, metrics=points)


def main(argv: list[str]) -> int:
    """The owner process of the run in argv[0], holding its ownership lock in the fd argv[1] (runner.agent
    forks it)."""
    run_dir, lock_fd = RunDir(Path(argv[0])), int(argv[1])
    # The lock came with the request; holding this fd open holds ownership until this process ends.
    os.set_inheritable(lock_fd, False)
    for name in ("SIGINT", "SIGHUP"):  # a terminal's signals are for the terminal's runner, not the owner
        import signal

        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if ending(run_dir) is not None:
        return 0
    try:
        Owner(run_dir).run()
    except Exception as exc:
        if not space.is_full(exc):
            raise
        wait_for_room(run_dir, exc)
        return (
            75  # the run is still to settle: a new owner takes it over (a follower's or the next command's)
        )
    return 0


def wait_for_room(run_dir: RunDir, cause: BaseException) -> None:
    """The run's filesystem is full: its cause kept here until there is room to write it in the owner's log,
    while this owner holds the run (nobody takes it over into the same full disk)."""
    import traceback

    said = "".join(traceback.format_exception(cause))
    while not space.has_room(run_dir.root):
        time.sleep(2)
    with contextlib.suppress(OSError):
        print(f"[owner] the filesystem was full:\n{said}", file=sys.stderr, flush=True)
