"""The local backend: no container. A cached virtual environment per env spec, a fresh directory per run.

Concepts: a run is a subprocess of the runner, in its own process group; its environment is a uv venv
under the runner's cache, named by a content hash of (lock, interpreter, setup commands) and linked from uv's
shared cache, so a second environment costs about a second. Mounts map into the run directory: the code
snapshot is the working directory and the output folder is $RUNNER_OUTPUT (not /output); a dataset mounted at
/input/NAME is $RUNNER_ROOT/input/NAME, a link to its read-only copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from runner import gpu
from runner.backends.base import FAILED, FINISHED, Backend, Log, Outcome, Prepared, RunDir, RunHandle
from runner.datasets.entry import parse_all
from runner.datasets.mount import link_into
from runner.environment import cache_dir, content_hash, tls_env, uv_bin
from runner.errors import ConfigError, EnvBuildError
from runner.spec import RunSpec
from runner.tracking import job_tracking_uri

# What a run directory holds besides code/ and output/: a dataset mounted over one would collide with it.
_RUN_DIR_NAMES = ("harness", "run.log")
# Host variables a run must not inherit: they would leak the host's Python setup into the run's env.
_HOST_ONLY = ("PYTHON", "VIRTUAL_ENV", "CONDA", "MLFLOW_", "_MLFLOW", "PIP_", "UV_")


def pump(stream: IO[bytes], log: Log) -> threading.Thread:
    """Copy a child's output to the log as it comes, line by line."""

    def run() -> None:
        for line in iter(stream.readline, b""):
            log.write(line.decode(errors="replace"))
        stream.close()

    thread = threading.Thread(target=run, name="log-pump", daemon=True)
    thread.start()
    return thread


def parse_cpuset(text: str | None) -> set[int]:
    """ "0-2,5" -> {0, 1, 2, 5}"""
    cpus: set[int] = set()
    for part in (text or "").split(","):
        if part:
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


class LocalHandle(RunHandle):
    def __init__(self, run_id: str, proc: subprocess.Popen[bytes], pumper: threading.Thread, pid_file: Path):
        super().__init__(run_id)
        self.pid_file = pid_file
        self.proc = proc
        self.pumper = pumper

    def wait(self, timeout: float | None = None) -> Outcome | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self.pumper.join(timeout=10)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        if code == 0:
            return Outcome(FINISHED, 0)
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Outcome(FAILED, code, reason)

    def status(self) -> str:
        code = self.proc.poll()
        return "RUNNING" if code is None else (FINISHED if code == 0 else FAILED)

    def cancel(self) -> None:
        for sig, grace in ((signal.SIGINT, 5), (signal.SIGTERM, 5), (signal.SIGKILL, None)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(grace)
                return
            except subprocess.TimeoutExpired:
                continue


class LocalBackend(Backend):
    name = "local"

    def check(self, spec: RunSpec) -> None:
        if spec.env.gpu:
            gpu.require_host_gpus(spec.resources.gpus)
        for ref in parse_all(spec.data):
            if ref.target.split("/")[1] in _RUN_DIR_NAMES:
                raise ConfigError(
                    f"data: mount point '{ref.target}' is taken in a local run's directory "
                    f"({', '.join('/' + n for n in _RUN_DIR_NAMES)}). Use another folder, e.g. /input/{ref.name}."
                )

    def lock_target(self, spec: RunSpec) -> tuple[str, str | None]:
        return f"{sys.version_info.major}.{sys.version_info.minor}", None

    def prepare(self, spec: RunSpec, lock: str, log: Log) -> Prepared:
        key = content_hash(lock, sys.executable, sys.version, *spec.env.setup)[:16]
        env_dir = cache_dir() / "envs" / key
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(env_dir.with_suffix(".lock"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # parallel runs of one spec build it once
            if (env_dir / ".complete").is_file():
                log.write(f"[runner] environment {key}: reused\n")
                return Prepared(env_id=str(env_dir), tags={"runner.env.reused": "true"})
            log.write(f"[runner] environment {key}: building\n")
            shutil.rmtree(env_dir, ignore_errors=True)
            self._build(spec, env_dir, lock, log)
            (env_dir / ".complete").write_text(key)
        return Prepared(env_id=str(env_dir), tags={"runner.env.reused": "false"})

    def _build(self, spec: RunSpec, env_dir: Path, lock: str, log: Log) -> None:
        tls = tls_env(spec.env.ca_bundle)
        (env_dir.parent / f"{env_dir.name}.txt").write_text(lock)
        steps = [
            [uv_bin(), "venv", "--quiet", "--python", sys.executable, str(env_dir)],
            [
                uv_bin(),
                "pip",
                "sync",
                "--python",
                str(env_dir / "bin" / "python"),
                str(env_dir.parent / f"{env_dir.name}.txt"),
            ],
            *(["sh", "-c", cmd] for cmd in spec.env.setup),
        ]
        path = f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        for argv in steps:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **tls, "PATH": path, "VIRTUAL_ENV": str(env_dir)},
            )
            assert proc.stdout is not None
            pump(proc.stdout, log).join()
            if proc.wait() != 0:
                shutil.rmtree(env_dir, ignore_errors=True)
                raise EnvBuildError(
                    f"Building the environment failed at: {' '.join(argv[:4])} (exit {proc.returncode})."
                )

    def launch(
        self, spec: RunSpec, run_dir: RunDir, prepared: Prepared, env: dict[str, str], log: Log
    ) -> RunHandle:
        env_dir = Path(prepared.env_id)
        base = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_ONLY)}
        child_env = {
            **base,
            **tls_env(spec.env.ca_bundle),
            **env,
            "PATH": f"{env_dir / 'bin'}{os.pathsep}{base.get('PATH', '')}",
            "VIRTUAL_ENV": str(env_dir),
            "PYTHONPATH": f"{run_dir.harness}{os.pathsep}{run_dir.code}",
            "RUNNER_CONFIG": str(run_dir.config),
            "RUNNER_OUTPUT": str(run_dir.output),
            "RUNNER_CODE": str(run_dir.code),
            "RUNNER_ROOT": str(run_dir.root),  # /input/NAME in a container is $RUNNER_ROOT/input/NAME here
            "MLFLOW_TRACKING_URI": job_tracking_uri(spec, "127.0.0.1", "127.0.0.1"),
        }
        cpus = parse_cpuset(spec.resources.cpuset)
        link_into(run_dir.root, spec.mounts)
        proc = subprocess.Popen(
            list(spec.argv),
            cwd=run_dir.code,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Pin before exec, so every thread the run makes stays on its CPUs (a bare syscall: fork-safe).
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        pid_file = run_dir.root / "pid"
        pid_file.write_text(str(proc.pid))  # for `runner stop`
        assert proc.stdout is not None
        return LocalHandle(env["MLFLOW_RUN_ID"], proc, pump(proc.stdout, log), pid_file)


BACKEND = LocalBackend
