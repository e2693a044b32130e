"""The owner of a sweep (its driver): a process of its own, like a run's owner, that outlives the terminal.

It asks for a trial (runner.launch.trials) as soon as a slot frees, starts the trial's member in that slot, tells
the trial its result as soon as the member ends, reports each member's per-epoch objective to the pruner (a
pruned member is stopped by its own owner: KILLED `pruned`), obeys a stop request, and closes the sweep's
parent run with its account of the trials. Its lines go to the sweep's log, which `runner -m`, `runner attach`
and `runner logs -f` follow.

Who drives a sweep is a lock, as for runs: the driver holds the sweep folder's `owner.lock`. A driver that died
(kill -9, a reboot) is replaced by the next `runner` command (or by the terminal following it); the new one
takes the sweep over from Optuna's storage and the members' records: members still going are followed, trials
asked for and never started are started, the rest are asked for.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from runner.errors import RunnerError
from runner.harness.shim import write_json
from runner.launch import sweep_parent
from runner.launch.execute import Result, Stop
from runner.launch.sweep import (
    PRUNED,
    Member,
    compose_member,
    ended_as,
    follow_member,
    log_tail,
    objective_of,
    plan_member_slots,
    run_member,
)
from runner.launch.sweep_parent import INDEX, Slots, Sweep
from runner.launch.trials import Grid, Study, Trial, grid, key, storage_of, task_overrides
from runner.runs import owner, space
from runner.runs.rundir import FINISHED, SWEEPS, RunDir, SweepDir

ROUND = "runner.sweep.round"  # a member's tag: which round of the sweep started it (each resume is one more)
PRUNE_EVERY = 2.0  # seconds between looks at the running members' objective


class Driver:
    def __init__(self, folder: SweepDir):
        self.folder = folder
        self.state: dict[str, Any] = owner.read_json(folder.state)
        self.plan: dict[str, Any] = owner.read_json(folder.plan)
        self.project = Path(self.plan["project"])
        self.uri: str = self.state["tracking_uri"]
        self.sweep = Sweep(
            self.state["sweep_id"], self.state["parent"], self.plan["sweeper"], self.plan.get("objective")
        )
        self.round = int(self.plan.get("round", 0))
        self.stop = Stop()
        self.interrupted = False
        self.source: Grid | Study | None = None
        self.members: dict[int, Member] = {}  # by trial number
        self.running: dict[Future[Result], Trial] = {}
        self.slot_of: dict[int, int] = {}
        self.free: list[int] = []
        self.slots: Slots | None = None
        self.saved_s = 0.0
        self.pruned = 0
        self.last_look = 0.0
        self.experiment: str | None = None

    def say(self, line: str) -> None:
        with open(self.folder.log, "a", encoding="utf-8") as log:
            log.write(line + "\n")

    # -- the sweep --------------------------------------------------------------------------------------

    def run(self) -> None:
        error = None
        try:
            self.drive()
        except BaseException as exc:
            error = str(exc) if isinstance(exc, RunnerError) else f"runner error: {type(exc).__name__}: {exc}"
            self.say(f"runner: {error}")
            self.stop.set_because(error)
            raise
        finally:
            self.close(error)

    def drive(self) -> None:
        from runner.compose.load import check_hydra_args

        os.chdir(self.project)
        hydra = check_hydra_args(self.project, self.plan["argv"]).hydra
        overrides = task_overrides(hydra)
        kids = sweep_parent.children(self.uri, self.parent())
        this_round = [k for k in kids if k.data.tags.get(ROUND, "0") == str(self.round)]
        by_index = {int(k.data.tags.get(INDEX, 0)) - 1: k for k in this_round}
        if self.sweep.sweeper == "optuna":
            name = f"sweep-{self.sweep.id}"
            study = Study(
                hydra.sweeper, overrides, storage_of(self.folder.root), name, self.plan.get("pruner")
            )
            study.again()
            self.source, takeovers = study, study.unfinished()
            wanted = self.plan.get("parallel") or int(hydra.sweeper.n_jobs)
        else:
            done = {k.data.tags.get(sweep_parent.MEMBER, "") for k in kids if k.info.status == FINISHED}
            done |= {k.data.tags.get(sweep_parent.MEMBER, "") for k in this_round}
            self.source = Grid(grid(hydra.sweeper, overrides), done)
            takeovers = [self.source.trials[i] for i, k in by_index.items() if k.info.status == "RUNNING"]
            wanted = self.plan.get("parallel")
        self.open_slots(wanted)
        self.loop([(t, by_index[t.number].info.run_id if t.number in by_index else None) for t in takeovers])

    def parent(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri).get_run(self.sweep.parent)

    def open_slots(self, wanted: int | None) -> None:
        """`sweep.parallel` slots (on this host: each with its own CPUs and GPUs, for members like the first)."""
        from runner.backends import backend_class

        assert self.source is not None
        trial = self.source.trials[0] if isinstance(self.source, Grid) else None
        first = compose_member(self.project, trial, self.sweep.sweeper) if trial else None
        backend = first.spec.backend if first else self.plan["backend"]
        if backend_class(backend).sweeps_at_once:  # a scheduler's: it places each job; we keep `wanted` going
            parallel = max(1, wanted or 1)
        else:
            spec = first.spec if first else self.plan_spec()
            self.slots = plan_member_slots(spec, max(1, self.source.total), wanted)
            parallel = self.slots.parallel
        self.free = list(range(parallel))
        self.say(f"[sweep {self.sweep.id}] {self.source.total} member(s), {parallel} at a time")

    def plan_spec(self) -> Any:
        """A member's spec for planning slots, from the first values of the sweep (an Optuna sweep's bounds)."""
        from runner.compose.load import sweep_variants

        variant = sweep_variants(self.plan["overrides"])[0]
        return compose_member(self.project, Trial(0, tuple(variant), ""), self.sweep.sweeper).spec

    def loop(self, takeovers: list[tuple[Trial, str | None]]) -> None:
        """Keep every slot busy until the trials run out (or a stop); each member's ending told at once. First the
        trials an earlier driver left: a member still going is followed, one never started is started."""
        assert self.source is not None
        workers = max(1, len(self.free), len(takeovers))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="member") as pool:
            for trial, run_id in takeovers:
                self.start(pool, trial, run_id)
            while True:
                self.obey_stop()
                while self.free and not self.stop.is_set():
                    asked = self.next_trial()
                    if asked is None:
                        break
                    self.start(pool, asked, None)
                if not self.running:
                    return
                finished, _ = wait(list(self.running), timeout=0.5, return_when="FIRST_COMPLETED")
                for fut in finished:
                    self.ended(fut)
                self.look_for_pruning()

    def next_trial(self) -> Trial | None:
        """The next trial to run; one that repeats an earlier trial's values reuses that trial's run."""
        assert self.source is not None
        while True:
            trial = self.source.ask()
            if trial is None or not isinstance(self.source, Study):
                return trial
            same = self.source.same_as(trial)
            if same is None:
                return trial
            run_id = self.source.reuse(trial, same)
            self.say(
                f"[sweep] member {trial.number + 1}/{self.source.total} repeats member {same.number + 1}'s values "
                f"({trial.label}): its run {run_id} answers for it ({same.value:.4g})"
            )
            from mlflow import MlflowClient

            users = ",".join(str(n + 1) for n in self.source.reusers(run_id))
            MlflowClient(self.uri).set_tag(run_id, sweep_parent.REUSED_BY, users)

    def start(self, pool: ThreadPoolExecutor, trial: Trial, run_id: str | None) -> None:
        assert self.source is not None
        slot = self.free.pop(0) if self.free else 0
        self.slot_of[trial.number] = slot
        total = self.source.total
        if run_id is not None:
            self.say(f"[sweep] member {trial.number + 1}/{total} taken over: {trial.label} (run {run_id})")
            fut = pool.submit(follow_member, self.project, run_id, self.stop)
        else:
            self.say(f"[sweep] member {trial.number + 1}/{total} started: {trial.label}")
            fut = pool.submit(self.run_trial, trial, slot)
        self.running[fut] = trial

    def run_trial(self, trial: Trial, slot: int) -> Result:
        member = compose_member(self.project, trial, self.sweep.sweeper)
        self.members[trial.number] = member
        return run_member(member, self.sweep, self.slots, slot, self.stop, {ROUND: str(self.round)})

    def ended(self, fut: Future[Result]) -> None:
        """A member ended: said, its trial told, its slot freed (fail_fast stops the others)."""
        assert self.source is not None
        trial = self.running.pop(fut)
        self.free.append(self.slot_of.pop(trial.number))
        n, total = trial.number + 1, self.source.total
        try:
            result = fut.result()
        except Exception as exc:  # a runner error inside one member: said, the others go on
            self.say(f"[sweep] member {n}/{total} could not run ({trial.label}): {exc}")
            self.source.tell(trial, None, interrupted=self.stop.is_set())
            self.fail_fast(n)
            return
        status, value = ended_as(result.outcome), None
        if status == FINISHED:
            value, why = objective_of(self.uri, result.run_id, self.sweep.objective)
            if why:
                status = "FAILED"
                self.say(f"[sweep] run {result.run_id} FAILED: {why}")
        shown = f" {self.sweep.objective}={value:.4g}" if value is not None else ""
        self.say(f"[sweep] member {n}/{total} {status}: {trial.label} (run {result.run_id}){shown}")
        if status == PRUNED.upper():
            self.pruned += 1
            self.saved_s += self.saving(trial, result.run_id)
        elif status != FINISHED:
            for line in log_tail(self.project, result.run_id):
                self.say(f"    | {line}")
            self.fail_fast(n)
        interrupted = status == "KILLED" and self.stop.is_set()
        self.source.tell(
            trial, value, pruned=status == PRUNED.upper(), interrupted=interrupted, run_id=result.run_id
        )

    def fail_fast(self, n: int) -> None:
        if self.plan.get("fail_fast") and not self.stop.is_set():
            self.say("[sweep] fail_fast: stopping the other members")
            self.stop.set_because(f"fail_fast: member {n} failed")

    def obey_stop(self) -> None:
        """`runner stop SWEEP_ID` (or Ctrl-C where the sweep was started): every member ends KILLED."""
        if self.folder.stop.exists() and not self.interrupted:
            self.interrupted = True
            reason = self.folder.stop.read_text().strip() or "stopped"
            self.say(f"[sweep] {reason}: stopping every member")
            self.stop.set_because(reason)

    # -- pruning ----------------------------------------------------------------------------------------

    def look_for_pruning(self) -> None:
        """Each running member's new objective points, reported to the pruner; a member it prunes is stopped."""
        source, objective = self.source, self.sweep.objective
        if not isinstance(source, Study) or not self.plan.get("pruner") or objective is None:
            return
        if time.monotonic() - self.last_look < PRUNE_EVERY:
            return
        self.last_look = time.monotonic()
        from mlflow import MlflowClient

        client = MlflowClient(self.uri)
        numbers = {t.number: t for t in self.running.values()}
        for kid in self.running_kids(client):
            trial = numbers.get(int(kid.data.tags.get(INDEX, 0)) - 1)
            if trial is None:
                continue
            history = sorted(client.get_metric_history(kid.info.run_id, objective), key=lambda m: m.step)
            for point in history:
                if source.report(trial, point.step, point.value):
                    self.say(
                        f"[sweep] member {trial.number + 1} pruned after step {point.step}: {trial.label}"
                    )
                    owner.request_stop(RunDir.of(self.project, kid.info.run_id), PRUNED)
                    break

    def running_kids(self, client: Any) -> list[Any]:
        if self.experiment is None:  # read once: the parent's experiment does not change
            self.experiment = self.parent().info.experiment_id
        exp = self.experiment
        query = f"tags.`{sweep_parent.PARENT}` = '{self.sweep.parent}' and attributes.status = 'RUNNING'"
        return list(client.search_runs([exp], query))

    def saving(self, trial: Trial, run_id: str) -> float:
        """The compute a pruned member would still have used: its steps left at its own pace."""
        from mlflow import MlflowClient

        assert isinstance(self.source, Study)
        run = MlflowClient(self.uri).get_run(run_id)
        done = self.source.reported.get(trial.number, -1) + 1
        member = self.members.get(trial.number)
        planned = None
        if member is not None and member.cfg.command is None:
            planned = int(member.cfg.train.epochs)
        planned = planned or self.source.longest()
        seconds = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000
        return 0.0 if done <= 0 or not planned else max(0.0, seconds / done * (planned - done))

    # -- the ending -------------------------------------------------------------------------------------

    def close(self, error: str | None) -> None:
        """The parent run closed with the sweep's account; the table; the ending kept for whoever follows."""
        account = self.account()
        status = sweep_parent.finish_parent(
            self.uri, self.sweep.parent, self.interrupted, error, account.pop("planned"), account
        )
        self.say(sweep_parent.summary(self.uri, self.sweep.parent, self.sweep.objective))
        if self.pruned:
            self.say(
                f"[sweep {self.sweep.id}] pruning stopped {self.pruned} member(s) early: about "
                f"{_duration(self.saved_s)} of compute saved"
            )
        self.say(f"[sweep {self.sweep.id}] {status}")
        write_json(self.folder.ended, {"status": status, "interrupted": self.interrupted})
        self.folder.live.unlink(missing_ok=True)

    def account(self) -> dict[str, Any]:
        """What the parent records of its trials: trials, runs, reused, pruned, failed, the best."""
        source = self.source
        tags: dict[str, Any] = {"planned": []}
        if isinstance(source, Study):
            tags.update(source.account())
        elif isinstance(source, Grid):
            tags["planned"] = [key(t.overrides) for t in source.trials]
            tags["runner.sweep.trials"] = source.total
            tags["runner.sweep.reused"] = 0
        tags["runner.sweep.saved_s"] = round(self.saved_s, 1)
        return tags


def _duration(seconds: float) -> str:
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# -- following (the terminal's side) ----------------------------------------------------------------------


def follow(folder: SweepDir, echo: Any, offset: int = 0, interrupt_stops: bool = True) -> dict[str, Any]:
    """Copy the sweep's log to `echo` until the sweep has ended; its ending. Ctrl-C asks the driver to stop every
    member (they and the parent end KILLED) and waits for that, then raises KeyboardInterrupt (with
    `interrupt_stops=False` it only stops following). A lost driver is replaced."""
    interrupted, replaced, last_check = False, 0, time.monotonic()
    with open(folder.log, "rb") as fh:
        fh.seek(offset)
        while True:
            try:
                ended = owner.read_json(folder.ended)
                chunk = fh.read()
                if chunk and echo is not None:
                    echo.write(chunk.decode(errors="replace"))
                    echo.flush()
                if isinstance(ended, dict) and not chunk:
                    if interrupted:
                        raise KeyboardInterrupt
                    return ended
                if time.monotonic() - last_check > 2:
                    last_check = time.monotonic()
                    if not folder.ended.exists() and not space.has_room(folder.root):
                        what = f": sweep {folder.root.name} waits for room (then `runner attach {folder.root.name}`)"
                        raise space.DiskFull(space.said(folder.root, folder.root.parents[2], what))
                    if not owner.owned(folder) and not folder.ended.exists() and adopt(folder):
                        replaced += 1
                        if replaced > 3:
                            raise RunnerError(f"the sweep's driver keeps failing: see {folder.owner_log}")
                if not chunk:
                    time.sleep(0.05)
            except KeyboardInterrupt:
                if interrupted or not interrupt_stops:
                    raise
                interrupted = True
                request_stop(folder, "sweep interrupted")


def find(project: Path, sweep_id: str) -> SweepDir | None:
    """The folder of the sweep `sweep_id` driven here (or of the one whose id starts with it), else None."""
    sweeps = project / SWEEPS
    ids = sorted(p.name for p in sweeps.iterdir() if (p / "plan.json").is_file()) if sweeps.is_dir() else []
    matches = [i for i in ids if i == sweep_id] or [i for i in ids if sweep_id and i.startswith(sweep_id)]
    return SweepDir(sweeps / matches[0]) if len(matches) == 1 else None


def stop(folder: SweepDir, reason: str, wait: float = 60) -> str:
    """`runner stop SWEEP_ID`: every member, then the parent, ends KILLED."""
    sweep_id = folder.root.name
    if folder.ended.exists():
        return f"Sweep {sweep_id} already ended {(owner.read_json(folder.ended) or {}).get('status')}."
    request_stop(folder, reason)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ended = owner.read_json(folder.ended)
        if isinstance(ended, dict):
            return f"Sweep {sweep_id} stopped: it ends {ended.get('status')}, every member's log and outputs kept."
        if not owner.owned(folder):
            adopt(folder)
        time.sleep(0.5)
    return f"Stopping sweep {sweep_id}: its members and it end KILLED (see: runner attach {sweep_id})."


def request_stop(folder: SweepDir, reason: str) -> None:
    if not folder.stop.exists():
        folder.stop.write_text(reason)


def spawn(folder: SweepDir, lock_fd: int, env: dict[str, str] | None = None) -> int:
    """Start the sweep's driver (forked by the agent, in a session of its own), handing it the sweep's lock."""
    from runner.agent.wire import AgentError, fork_owner

    try:
        return fork_owner(
            str(folder.root), lock_fd, env if env is not None else dict(os.environ), what="sweep"
        )
    except AgentError as exc:
        raise RunnerError(str(exc)) from exc


def adopt(folder: SweepDir) -> bool:
    """A new driver for a sweep whose driver died (False where a live one holds it)."""
    fd = owner.try_claim(folder)
    if fd is None:
        return False
    try:
        spawn(folder, fd)
    finally:
        os.close(fd)
    return True


def begin(project: Path, sweep: Sweep, uri: str, plan: dict[str, Any]) -> SweepDir:
    """The sweep's folder (its state and plan) and its driver, started; resumed: the next round."""
    import socket

    folder = SweepDir.of(project, sweep.id)
    folder.root.mkdir(parents=True, exist_ok=True)
    earlier = owner.read_json(folder.plan) or {}
    plan = {**plan, "round": earlier.get("round", -1) + 1}
    state = {"sweep_id": sweep.id, "parent": sweep.parent, "tracking_uri": uri, "host": socket.gethostname()}
    write_json(folder.state, {**state, "driven": True})
    write_json(folder.plan, plan)
    folder.log.touch()
    folder.live.touch()
    fd = owner.try_claim(folder)
    if fd is None:
        raise RunnerError(f"sweep {sweep.id} already has a driver: follow it with runner attach {sweep.id}")
    try:
        spawn(folder, fd)
    finally:
        os.close(fd)
    return folder


def reopen(folder: SweepDir) -> None:
    """A sweep resumed: its last ending and stop request gone; its log goes on."""
    folder.ended.unlink(missing_ok=True)
    folder.stop.unlink(missing_ok=True)


def reconcile(project: Path) -> list[str]:
    """Every sweep of this project on this host whose driver died before it ended gets a new one (the ids)."""
    import socket

    sweeps = project / SWEEPS
    adopted = []
    for folder in map(SweepDir, sorted(sweeps.iterdir()) if sweeps.is_dir() else []):
        state = owner.read_json(folder.state) or {}
        if not state.get("driven") or state.get("host") != socket.gethostname():
            continue
        if folder.live.exists() and not folder.ended.exists() and adopt(folder):
            adopted.append(folder.root.name)
    return adopted


def main(argv: list[str]) -> int:
    """The driver of the sweep in argv[0], holding its lock in the fd argv[1] (runner.agent forks it)."""
    import signal

    folder, lock_fd = SweepDir(Path(argv[0])), int(argv[1])
    os.set_inheritable(lock_fd, False)
    for name in ("SIGINT", "SIGHUP"):  # a terminal's signals are for the terminal's runner, not the driver
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    if folder.ended.exists():
        return 0
    write_json(folder.root / "driver.json", {"pid": os.getpid()})
    Driver(folder).run()
    return 0
