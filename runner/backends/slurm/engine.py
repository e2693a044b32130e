"""A run's container on a cluster node, through the engine's own command line: `docker` or `podman` (the same
words for both). The container is the one the Docker backend would start (runner.backends.docker.container_spec),
written as `ENGINE run` options; its image comes from the shared image cache when the node lacks it.

The command line rather than an API client: Podman serves Docker's API only through a service a user would have
to start on each node, and a job must not leave one behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from runner.backends.base import RunHandle
from runner.backends.logpump import LogPump
from runner.errors import RunnerError
from runner.harness.shim import Scrubber
from runner.runs.rundir import FAILED, FINISHED, Outcome, RunDir


def run_options(kwargs: dict[str, Any], engine: str) -> list[str]:
    """`containers.run` keyword arguments (the Docker backend's container_spec) as `ENGINE run` options. The
    environment is not among them: it reaches the container in a file the command sources (node.NodeBackend)."""
    opts = [
        "--detach",
        "--name",
        kwargs["name"],
        "--user",
        kwargs["user"],
        "--workdir",
        kwargs["working_dir"],
    ]
    # Rootless: the user's own UID inside, so the run's folders are its own.
    if engine == "podman" and os.getuid() != 0:
        opts.append("--userns=keep-id")
    for key, value in kwargs["labels"].items():
        opts += ["--label", f"{key}={value}"]
    opts += _mount_options(kwargs["mounts"], engine)
    opts += ["--network", kwargs["network_mode"]]
    opts += _confinement_options(kwargs)
    opts += _limit_options(kwargs)
    if kwargs.get("device_requests"):
        opts += _gpu_options(engine)
    return [*opts, kwargs["image"], *kwargs["command"]]


def _mount_options(mounts: list[dict[str, Any]], engine: str) -> list[str]:
    opts: list[str] = []
    for mount in mounts:
        if "," in mount["Source"] + mount["Target"]:
            raise RunnerError(
                f"{engine} cannot mount a path holding a comma: {mount['Source']} -> {mount['Target']}"
            )
        spec = f"type=bind,source={mount['Source']},target={mount['Target']}"
        opts += ["--mount", spec + (",readonly" if mount.get("ReadOnly") else "")]
    return opts


def _confinement_options(kwargs: dict[str, Any]) -> list[str]:
    """PID 1, capabilities, security options and extra host names."""
    opts = ["--init"] if kwargs.get("init") else []
    for cap in kwargs.get("cap_drop", []):
        opts += ["--cap-drop", cap]
    for opt in kwargs.get("security_opt", []):
        opts += ["--security-opt", opt]
    for host, address in (kwargs.get("extra_hosts") or {}).items():
        opts += ["--add-host", f"{host}:{address}"]
    return opts


def _limit_options(kwargs: dict[str, Any]) -> list[str]:
    """CPUs and memory."""
    opts: list[str] = []
    if kwargs.get("cpuset_cpus"):
        opts += ["--cpuset-cpus", kwargs["cpuset_cpus"]]
    if kwargs.get("nano_cpus"):
        opts += ["--cpus", f"{kwargs['nano_cpus'] / 1e9:g}"]
    if kwargs.get("mem_limit"):
        opts += ["--memory", str(kwargs["mem_limit"]), "--memory-swap", str(kwargs["memswap_limit"])]
    return opts


def _gpu_options(engine: str) -> list[str]:
    """The GPUs SLURM gave the job, by their node-wide ids (CUDA_VISIBLE_DEVICES counts from 0 within the job)."""
    given = os.environ.get("SLURM_JOB_GPUS") or os.environ.get("SLURM_STEP_GPUS")
    if not given:
        raise RunnerError(
            "env.gpu=true, but SLURM gave this job no GPU (no SLURM_JOB_GPUS): ask with resources.gpus"
        )
    # Podman names GPUs through CDI (nvidia-ctk cdi generate).
    if engine == "podman":
        return [opt for gpu in given.split(",") for opt in ("--device", f"nvidia.com/gpu={gpu}")]
    return ["--gpus", f'"device={given}"']


def engine_call(engine: str, *args: str, timeout: float | None = 120) -> str:
    """The engine's output; a RunnerError with its own last line when it fails."""
    try:
        proc = subprocess.run(
            [engine, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise RunnerError(f"{engine} {args[0]} did not answer within {timeout:g} s") from None
    except FileNotFoundError:
        raise RunnerError(
            f"No '{engine}' on this node's PATH: install it there, or set backend.engine"
        ) from None
    if proc.returncode != 0:
        said = (proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise RunnerError(f"{engine} {args[0]}: {said}")
    return proc.stdout


def has(engine: str, kind: str, name: str) -> bool:
    """Whether the engine has the `kind` ("container" or "image") called `name`."""
    try:
        engine_call(engine, kind, "inspect", "--format", "{{.Id}}", name, timeout=60)
        return True
    except RunnerError:
        return False


def remove(engine: str, container: str) -> None:
    with contextlib.suppress(RunnerError):
        engine_call(engine, "rm", "--force", container)


class EngineHandle(RunHandle):
    """A started container, followed by the engine's own `logs -f` and `wait`."""

    def __init__(
        self, run_id: str, engine: str, container: str, run_dir: RunDir, keep: bool, secrets: list[str]
    ):
        super().__init__(run_id)
        self.engine, self.container, self.run_dir, self.keep = engine, container, run_dir, keep
        self.exit_code: int | None = None
        self.waiter = threading.Thread(target=self._wait, name="engine-wait", daemon=True)
        self.waiter.start()
        self.pumper = threading.Thread(target=self._pump, args=(Scrubber(secrets),), name="logs", daemon=True)
        self.pumper.start()

    def running(self) -> bool:
        try:
            return (
                engine_call(self.engine, "inspect", "--format", "{{.State.Running}}", self.container).strip()
                == "true"
            )
        except RunnerError:
            return False

    def _wait(self) -> None:
        """Until the container has ended. The engine's `wait` is a process of the job, which SLURM signals with
        the rest of it (scancel): its end alone says nothing, the container's state does."""
        while True:
            with contextlib.suppress(RunnerError, ValueError, IndexError):
                self.exit_code = int(
                    engine_call(self.engine, "wait", self.container, timeout=None).split()[-1]
                )
                return
            if not self.running():
                return
            time.sleep(0.5)

    def _pump(self, scrubber: Scrubber) -> None:
        """The container's output appended to run.log (LogPump), by the engine's `logs` process, started again
        when SLURM signalled it: each reading follows from the start until the container has ended."""
        pump = LogPump(self.run_dir, scrubber)
        with pump.open() as out:
            for _ in range(100):
                proc = subprocess.Popen(
                    [self.engine, "logs", "--follow", self.container],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                assert proc.stdout is not None
                read = functools.partial(proc.stdout.read1, 65536)  # type: ignore[attr-defined]
                pump.stream(iter(read, b""), out)
                proc.wait()
                if proc.returncode == 0 and not self.running():
                    break
                time.sleep(0.5)
            pump.end(out)

    def wait(self, timeout: float | None = None) -> Outcome | None:
        self.waiter.join(timeout)
        if self.waiter.is_alive():
            return None
        self.pumper.join(timeout=10)
        state = engine_call(
            self.engine, "inspect", "--format", "{{.State.ExitCode}} {{.State.OOMKilled}}", self.container
        )
        code_text, oom = ([*state.split(), "", ""])[:2]
        code = self.exit_code if self.exit_code is not None else int(code_text or -1)
        if oom == "true":
            return Outcome(FAILED, code, "OOMKilled")
        return Outcome(FINISHED, 0) if code == 0 else Outcome(FAILED, code, f"exit code {code}")

    def cancel(self, grace: float | None = None) -> None:
        # SIGINT as Ctrl-C would; SIGTERM with `grace`: save a checkpoint and exit.
        with contextlib.suppress(RunnerError):
            engine_call(
                self.engine, "kill", "--signal", "SIGINT" if grace is None else "SIGTERM", self.container
            )
        self.waiter.join(5 if grace is None else grace)
        if self.waiter.is_alive():
            with contextlib.suppress(RunnerError):
                engine_call(self.engine, "stop", "--time", "3", self.container)

    def release(self) -> None:
        self.run_dir.secrets.unlink(missing_ok=True)
        if not self.keep:
            remove(self.engine, self.container)


def load_image(engine: str, image: str, archive: Path) -> bool:
    """Make sure the node's engine has `image`; load it from the shared cache's `archive` if not. True when it
    was loaded."""
    if has(engine, "image", image):
        return False
    if not archive.is_file():
        raise RunnerError(
            f"The node's {engine} lacks image {image} and the shared cache has no {archive}: is "
            "backend.image_cache on a filesystem every node mounts?"
        )
    engine_call(engine, "load", "--input", str(archive), timeout=1800)
    if not has(engine, "image", image):
        raise RunnerError(f"{engine} load of {archive} did not give image {image}")
    return True
