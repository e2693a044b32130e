"""The local backend: no container. A cached virtual environment per env spec, a fresh directory per run.

Concepts: a run is a process under `runner.harness.shim`, in its own process group, apart from any runner process; its environment is a uv venv
under the runner's cache, named by a content hash of (lock, interpreter, setup commands) and linked from uv's
shared cache, so a second environment costs about a second. Mounts map into the run directory: the code
snapshot is the working directory and the output folder is $RUNNER_OUTPUT (not /output); a dataset mounted at
/input/NAME is $RUNNER_ROOT/input/NAME, a link to its read-only copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runner.backends import gpu
from runner.backends.base import Log, Plan, Prepared, RunHandle
from runner.backends.host import HostBackend
from runner.compose.spec import RunSpec
from runner.datasets.entry import parse_all
from runner.datasets.mount import link_into
from runner.environment import harness
from runner.environment.lock import Target, cache_dir, content_hash, tls_env, uv_bin
from runner.errors import ConfigError, EnvBuildError
from runner.harness import shim
from runner.runs import space
from runner.runs.rundir import FAILED, FINISHED, Outcome, RunDir

# What a run directory holds besides code/ and output/: a dataset mounted over one would collide with it.
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


@dataclass(frozen=True, kw_only=True)
class LocalPlan(Plan):
    """A local run: its command, working directory, environment (on top of the host's, less its Python
    setup), the env's bin folder first on PATH, and the CPUs it may use ("0,1"; "" for any)."""

    argv: tuple[str, ...] = ()
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    path: str = ""
    cpus: str = ""

    def variable(self, name: str) -> str | None:
        return self.env.get(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "argv": list(self.argv),
            "cwd": self.cwd,
            "env": dict(self.env),
            "path": self.path,
            "cpus": self.cpus,
            "secrets": list(self.secrets),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LocalPlan:
        return cls(
            argv=tuple(data["argv"]),
            cwd=data["cwd"],
            env=dict(data["env"]),
            path=data["path"],
            cpus=data["cpus"],
            secrets=tuple(data["secrets"]),
        )


class LocalHandle(RunHandle):
    """A run under `runner.harness.shim`: its exit status comes from the shim's file, whoever started it."""

    def __init__(self, run_id: str, run_dir: RunDir, pid: int, ticks: int | None, child: Any = None):
        super().__init__(run_id)
        self.run_dir, self.pid, self.ticks, self.child = run_dir, pid, ticks, child

    def _ended(self) -> Outcome | None:
        if self.child is not None:
            self.child.poll()  # reap the shim when this process started it
        try:
            code = int((self.run_dir.exit_code).read_text())
        except (OSError, ValueError):
            if shim.alive(self.pid, self.ticks):
                return None
            # Its shim went with it (the machine restarted, the process group was killed): not the code's doing.
            return Outcome(
                FAILED,
                None,
                "lost: the run's process ended without an exit status (SIGKILL?)",
                interrupted=True,
            )
        if code == 0:
            return Outcome(FINISHED, 0)
        reason = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return Outcome(FAILED, code, reason)

    def wait(self, timeout: float | None = None) -> Outcome | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            outcome = self._ended()
            if outcome is not None or (deadline is not None and time.monotonic() >= deadline):
                return outcome
            time.sleep(0.1)

    def cancel(self, grace: float | None = None) -> None:
        # SIGINT as Ctrl-C would; with `grace`, SIGTERM first: save a checkpoint and exit.
        steps = ((signal.SIGINT, 5.0),) if grace is None else ((signal.SIGTERM, grace),)
        for sig, wait in (*steps, (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not shim.alive(self.pid, self.ticks):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            if self.wait(wait) is not None:
                return


class LocalBackend(HostBackend[LocalPlan]):
    name = "local"
    plan_type = LocalPlan

    def check(self, spec: RunSpec) -> None:
        if spec.env.gpu:
            gpu.require_host_gpus(spec.resources.gpus)
        for ref in parse_all(spec.data):
            if ref.target.split("/")[1] in RunDir.RESERVED:
                raise ConfigError(
                    f"data: mount point '{ref.target}' is taken in a local run's directory "
                    f"({', '.join('/' + n for n in RunDir.RESERVED)}). Use another folder, e.g. /input/{ref.name}."
                )

    def lock_target(self, spec: RunSpec) -> tuple[str, str | None]:
        return f"{sys.version_info.major}.{sys.version_info.minor}", None

    def prepare(self, spec: RunSpec, lock: str, log: Log) -> Prepared:
        key = content_hash(lock, sys.executable, sys.version, *spec.env.setup)[:16]
        env_dir = cache_dir() / "envs" / key
        env_dir.parent.mkdir(parents=True, exist_ok=True)
        harness_lock = harness.lock(
            Target(*self.lock_target(spec)), spec.env.ca_bundle, os.environ, spec.env.index_url
        )
        site = str(harness.folder(harness_lock, sys.executable, spec.env.ca_bundle, spec.env.index_url))
        with open(env_dir.with_suffix(".lock"), "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)  # parallel runs of one spec build it once
            reused = (env_dir / ".complete").is_file()
            log.write(f"[runner] environment {key}: {'reused' if reused else 'building'}\n")
            if not reused:
                shutil.rmtree(env_dir, ignore_errors=True)
                self._build(spec, env_dir, lock, log)
                (env_dir / ".complete").write_text(key)
        return Prepared(
            env_id=str(env_dir),
            tags={"runner.env.reused": str(reused).lower()},
            harness_lock=harness_lock,
            harness_site=site,
        )

    def _build(self, spec: RunSpec, env_dir: Path, lock: str, log: Log) -> None:
        tls = tls_env(spec.env.ca_bundle)
        index = {"UV_INDEX_URL": spec.env.index_url} if spec.env.index_url else {}
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
                env={**os.environ, **tls, **index, "PATH": path, "VIRTUAL_ENV": str(env_dir)},
            )
            assert proc.stdout is not None
            pump(proc.stdout, log).join()
            if proc.wait() != 0:
                full = not space.has_room(env_dir.parent)
                shutil.rmtree(env_dir, ignore_errors=True)
                if full:
                    raise space.DiskFull(space.said(env_dir.parent, None, f", which holds {env_dir.parent}"))
                raise EnvBuildError(
                    f"Building the environment failed at: {' '.join(argv[:4])} (exit {proc.returncode})."
                )

    def furnish(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared) -> None:
        """The datasets linked into the run's folder (/input/NAME in a container is $RUNNER_ROOT/input/NAME)."""
        link_into(run_dir.root, spec.mounts)

    def plan(self, spec: RunSpec, run_dir: RunDir, prepared: Prepared, env: dict[str, str]) -> LocalPlan:
        env_dir = Path(prepared.env_id)
        # On top of the host's environment (less its Python setup), added at start.
        run_env = {
            **tls_env(spec.env.ca_bundle),
            **env,
            "VIRTUAL_ENV": str(env_dir),
            **harness.run_path(str(run_dir.harness), prepared.harness_site, str(run_dir.code)),
            "RUNNER_CONFIG": str(run_dir.config),
            "RUNNER_OUTPUT": str(run_dir.output),
            "RUNNER_CODE": str(run_dir.code),
            "RUNNER_SPOOL": str(run_dir.spool),
            "RUNNER_CHECKPOINT_DIR": str(run_dir.checkpoint),
            # /input/NAME in a container is $RUNNER_ROOT/input/NAME here.
            "RUNNER_ROOT": str(run_dir.root),
        }
        return LocalPlan(
            argv=tuple(spec.argv),
            cwd=str(run_dir.code),
            env=run_env,
            path=str(env_dir / "bin"),
            cpus=",".join(str(c) for c in sorted(parse_cpuset(spec.resources.cpuset))),
            secrets=tuple(spec.env.secrets),
        )

    def start(self, plan: LocalPlan, run_dir: RunDir, env: dict[str, str]) -> RunHandle:
        secrets = {name: os.environ[name] for name in plan.secrets if name in os.environ}
        base = {k: v for k, v in os.environ.items() if not k.startswith(_HOST_ONLY) and k not in secrets}
        path = f"{plan.path}{os.pathsep}{base.get('PATH', '')}"
        child = subprocess.Popen(
            # By path, isolated: the shim needs only the standard library, and the run's environment is the run's.
            [sys.executable, "-I", shim.__file__, str(run_dir.root), plan.cpus, *plan.argv],
            cwd=plan.cwd,
            env={**base, **plan.env, **secrets, **env, "PATH": path, shim.SECRET_NAMES: " ".join(secrets)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group, apart from the terminal's and the owner's.
            start_new_session=True,
        )
        while not (run_dir.process).is_file() and child.poll() is None:
            time.sleep(0.01)
        handle = self.reattach(plan.env["MLFLOW_RUN_ID"], run_dir)
        if handle is None:
            raise RuntimeError(f"the run's process did not start (exit {child.poll()})")
        assert isinstance(handle, LocalHandle)
        handle.child = child
        return handle

    def reattach(self, run_id: str, run_dir: RunDir) -> RunHandle | None:
        try:
            process = json.loads((run_dir.process).read_text())
        except (OSError, ValueError):
            return None
        return LocalHandle(run_id, run_dir, int(process["pid"]), process.get("ticks"))


BACKEND = LocalBackend
