"""SLURM's own commands, as the runner uses them: sbatch (to check and to submit), sacct and scontrol (how a job
stands or ended), scancel. Every answer comes from SLURM; nothing here keeps state of its own."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from runner.errors import BackendUnavailable, ConfigError, RunnerError
from runner.runs.rundir import FAILED, KILLED, Outcome

# States of a job that has not ended (sacct and scontrol spell them alike).
ACTIVE = {
    "PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "COMPLETING",
    "CONFIGURING", "STAGE_OUT", "SIGNALING", "STOPPED", "RESV_DEL_HOLD", "SPECIAL_EXIT",
}  # fmt: skip
TIMEOUT_REASON = "timeout: the job's time limit"
# How a job ends when SLURM or its node stopped it, not the run's code: another attempt may continue the run.
INTERRUPTIONS = {"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "REQUEUED", "FAILED"}
# sbatch options the runner sets itself: the job's script, where it runs and writes, what it exports, its array.
OWN_OPTIONS = (
    "--wrap", "--array", "-a", "--output", "-o", "--error", "-e", "--chdir", "-D", "--export", "--job-name", "-J",
    "--parsable", "--requeue", "--no-requeue", "--test-only", "--uid", "--gid", "--get-user-env",
)  # fmt: skip


@dataclass(frozen=True)
class JobState:
    state: str  # SLURM's word: RUNNING, COMPLETED, CANCELLED, TIMEOUT, NODE_FAIL, ...
    exit_code: str = ""  # "3:0" (code:signal)
    reason: str = ""

    @property
    def over(self) -> bool:
        return self.state not in ACTIVE


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise BackendUnavailable(
            "backend=slurm, but no sbatch on PATH: run from the cluster's login node, or install SLURM's client "
            "there (Debian: apt install slurm-client; its slurm.conf from the cluster). Or use backend=docker."
        )


def _call(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        require_sbatch()
        raise
    except subprocess.TimeoutExpired as exc:
        raise RunnerError(f"{argv[0]} did not answer within {timeout:g} s: is slurmctld up?") from exc


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """SLURM's own message, on one line."""
    lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()] or lines
    return " ".join(errors[-2:]).removeprefix("sbatch: error: ") or f"exit {proc.returncode}"


def time_limit(config_time: str | None, timeout: int | None) -> str | None:
    """SLURM's time limit: the config's, else the run's own timeout (which the owner enforces from the container's
    start) rounded up to whole minutes plus five: room to load the image first, and to record after."""
    if config_time:
        return str(config_time)
    if timeout:
        return str(math.ceil(timeout / 60) + 5)
    return None


def options(cfg: Any, cpus: float | None, memory_bytes: int | None, gpus: Any, gpu: bool) -> list[str]:
    """sbatch options for one task of a run: the config's settings and the run's resources."""
    opts = [
        "--no-requeue"
    ]  # a job that ran once is a run that happened: a rerun is a new run, never the same
    for flag, value in (("--partition", cfg.partition), ("--account", cfg.account), ("--qos", cfg.qos)):
        if value:
            opts.append(f"{flag}={value}")
    if cfg.time:
        opts.append(f"--time={cfg.time}")
    if cpus:
        opts.append(f"--cpus-per-task={math.ceil(cpus)}")
    if memory_bytes:
        opts.append(f"--mem={math.ceil(memory_bytes / 2**20)}M")
    if gpu:
        count = len(gpus) if isinstance(gpus, tuple) else (gpus or 1)
        opts.append(f"--gres=gpu:{count}")
    for option in cfg.sbatch_options:
        flag = str(option).split("=", 1)[0]
        flag = flag if flag.startswith("--") else flag[:2]  # -o/x is -o
        if not flag.startswith("-") or flag in OWN_OPTIONS:
            raise ConfigError(
                f"backend.sbatch_options: '{option}' is not an option the runner passes on: it sets "
                f"{', '.join(OWN_OPTIONS)} itself, and takes options only (--name=value)."
            )
    return [*opts, *(str(o) for o in cfg.sbatch_options)]


WARN_BEFORE = (
    120  # seconds before a job's time limit that SLURM warns its owner (--signal), where it has attempts
)


def warning(limit: str | None) -> list[str]:
    """SLURM's warning to a job before its time limit, for a run that continues in another job: SIGUSR1 to the job's
    shell, which hands it to the owner (the run saves a checkpoint and stops, rather than meet SIGTERM at the limit
    with KillWait to do it in). None for limits under 10 minutes: SLURM may send it up to a minute early."""
    minutes = limit_minutes(limit)
    return [f"--signal=B:USR1@{WARN_BEFORE}"] if minutes is not None and minutes >= 10 else []


def limit_minutes(limit: str | None) -> float | None:
    """A SLURM time limit in minutes: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (None for none, or another
    spelling)."""
    if not limit:
        return None
    days, _, rest = str(limit).rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        day = int(days) if days else 0
    except ValueError:
        return None
    if days:  # D-HH[:MM[:SS]]
        h, m, s = ([*parts, 0, 0])[:3]
    elif len(parts) == 3:
        h, m, s = parts
    else:  # MM or MM:SS
        h, m, s = 0, parts[0], ([*parts, 0])[1]
    return day * 1440 + h * 60 + m + s / 60


def check(opts: list[str]) -> None:
    """SLURM's own verdict on the options (partition, account, QOS, GPUs, time), before anything is made:
    `sbatch --test-only` validates a job without queueing it."""
    require_sbatch()
    proc = _call("sbatch", "--test-only", *opts, "--wrap", "true")
    if proc.returncode != 0:
        raise ConfigError(
            f"SLURM refuses the job: {said(proc)}. Partitions: sinfo; your accounts and QOS: sacctmgr show assoc "
            "user=$USER. Set backend.partition / backend.account / backend.qos / resources.*."
        )


def submit(
    opts: list[str], script: str, tasks: int, parallel: int | None, cwd: str, environ: dict[str, str]
) -> str:
    """Submit `script` (one task, or an array of `tasks` with at most `parallel` at once) from `environ` (what
    --export passes on); the job id."""
    array = [f"--array=0-{tasks - 1}" + (f"%{parallel}" if parallel else "")] if tasks > 1 else []
    proc = subprocess.run(
        ["sbatch", "--parsable", *opts, *array, f"--chdir={cwd}"],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )
    if proc.returncode != 0:
        raise RunnerError(f"SLURM refused the job: {said(proc)}")
    return proc.stdout.strip().split(";")[0]


def state(job: str) -> JobState | None:
    """How the job stands: SLURM's accounting first (it keeps ended jobs), then the controller (which forgets
    them after MinJobAge); None when neither knows the job."""
    return states([job])[job]


def states(job_ids: list[str]) -> dict[str, JobState | None]:
    """How each job stands, from one question to SLURM's accounting for all of them (as submitit's InfoWatcher
    asks about every job it follows at once); the controller only for a job the accounting does not list."""
    if not job_ids:
        return {}
    proc = _call(
        "sacct", "-j", ",".join(job_ids), "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", timeout=15
    )
    found: dict[str, JobState] = {}
    if proc.returncode == 0:
        for line in proc.stdout.splitlines():
            fields = line.split("|")
            if len(fields) >= 4:
                reason = fields[3] if fields[3] != "None" else ""
                for job in array_ids(fields[0]):
                    found.setdefault(job, JobState(fields[1].split()[0], fields[2], reason))
    return {job: found[job] if job in found else controller_state(job) for job in job_ids}


def array_ids(job_id: str) -> list[str]:
    """The ids one of sacct's JobIDs stands for: itself, or each task of an array's tasks that are listed as one
    line while they wait (`7_[2-4,9%2]`: 7_2, 7_3, 7_4 and 7_9)."""
    head, bracket, rest = job_id.partition("_[")
    if not bracket:
        return [job_id]
    ids = []
    for part in rest.rstrip("]").split("%")[0].split(","):
        low, _, high = part.partition("-")
        if low.isdigit() and (high.isdigit() or not high):
            ids += [f"{head}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def controller_state(job: str) -> JobState | None:
    proc = _call("scontrol", "show", "job", "-o", job, timeout=15)
    if proc.returncode != 0:
        if "invalid job id" in (proc.stderr + proc.stdout).lower():
            return None
        raise RunnerError(f"SLURM does not answer about job {job}: {said(proc)}")
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    if "JobState" not in fields:
        return None
    reason = fields.get("Reason", "")
    return JobState(fields["JobState"], fields.get("ExitCode", ""), "" if reason == "None" else reason)


def end_time(job: str) -> float | None:
    """When the job's time limit ends (seconds since the epoch), as the controller planned it."""
    proc = _call("scontrol", "show", "job", "-o", job)
    fields = dict(f.split("=", 1) for f in proc.stdout.split() if "=" in f)
    try:
        return time.mktime(time.strptime(fields["EndTime"], "%Y-%m-%dT%H:%M:%S"))
    except (KeyError, ValueError):
        return None


def cancel(job: str) -> None:
    _call("scancel", job)


def outcome(job: str, found: JobState | None, stop_reason: str | None) -> Outcome:
    """A run's ending from its job's, for a job that ended without its owner recording the run."""
    if found is None:
        return Outcome(FAILED, reason=f"lost: SLURM has no record of job {job}", interrupted=True)
    code = found.exit_code.split(":")[0]
    exit_code = int(code) if code.isdigit() else None
    if found.state == "CANCELLED":
        return Outcome(
            KILLED, exit_code, stop_reason or f"cancelled: SLURM job {job} was cancelled (scancel)"
        )
    if found.state == "TIMEOUT":
        return Outcome(KILLED, exit_code, TIMEOUT_REASON, interrupted=True)
    why = f" ({found.reason})" if found.reason else ""
    if found.state == "COMPLETED":
        return Outcome(
            FAILED,
            exit_code,
            f"lost: SLURM job {job} ended without the run's ending being recorded",
            interrupted=True,
        )
    said = f"SLURM job {job} {found.state}{why}, exit {found.exit_code or '?'}"
    # The node, not the code: a failed or rebooted node, a preempted job, an owner killed with its node.
    return Outcome(FAILED, exit_code, said, interrupted=found.state in INTERRUPTIONS)
