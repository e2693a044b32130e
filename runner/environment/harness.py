"""The runner's in-run pieces apart from the run's environment: the harness's own packages (hydra-core and
omegaconf for the built-in trainer, mlflow-skinny and the pandas its integrations read data with, for
autologging), pinned to the host's versions so that host
and run speak the same MLflow, resolved to a lock of their own and installed in a folder of their own.

A run's Python finds them after its own packages (the harness's sitecustomize appends them to sys.path), so the
project's environment is exactly the project's resolution: a project pinning an older hydra-core, omegaconf,
mlflow, protobuf or pydantic gets its versions, and the runner's pieces use them where they are the same packages.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from runner.environment.lock import Target, cache_dir, content_hash, resolve_lock, tls_env, uv_bin
from runner.errors import EnvBuildError
from runner.runs import space

# Where a container finds them (a layer of its own under the env's image).
SITE_IN_CONTAINER = "/opt/runner-site"


def requirements() -> list[str]:
    return list(_pinned())


@functools.cache
def _pinned() -> tuple[str, ...]:
    """Pinned to the versions this process imported (read once: each lookup scans the installed packages)."""
    return (
        f"mlflow-skinny=={metadata.version('mlflow-skinny')}",
        f"hydra-core=={metadata.version('hydra-core')}",
        f"omegaconf=={metadata.version('omegaconf')}",
        f"pandas=={metadata.version('pandas')}",
    )


def lock(target: Target, ca_bundle: str | None, environ: Mapping[str, str], index_url: str | None) -> str:
    """The in-run pieces' lock for `target` (cached as any lock is)."""
    return resolve_lock(requirements(), target, ca_bundle, environ, index_url=index_url)


def folder(locked: str, python: str, ca_bundle: str | None, index_url: str | None) -> Path:
    """The pieces installed for the interpreter `python` (a local run's), once per lock; uv links them from
    its cache."""
    site = cache_dir() / "harness" / content_hash(locked, python)[:16]
    site.parent.mkdir(parents=True, exist_ok=True)
    with open(site.with_suffix(".lock"), "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # parallel runs install it once
        if (site / ".complete").is_file():
            return site
        requirements_file = site.with_suffix(".txt")
        requirements_file.write_text(locked)
        index = {"UV_INDEX_URL": index_url} if index_url else {}
        argv = [uv_bin(), "pip", "install", "--quiet", "--python", python, "--target", str(site)]
        proc = subprocess.run(
            [*argv, "--no-deps", "-r", str(requirements_file)],
            capture_output=True,
            text=True,
            env={**os.environ, **tls_env(ca_bundle), **index},
        )
        if proc.returncode != 0:
            shutil.rmtree(site, ignore_errors=True)  # half installed: the next run installs it whole
            if space.is_full(RuntimeError(proc.stderr)):
                raise space.DiskFull(space.said(site, None, f", which holds {site.parent}"))
            raise EnvBuildError(
                f"Installing the runner's in-run packages failed: {proc.stderr.strip()[-600:]}"
            )
        (site / ".complete").write_text(content_hash(locked))
    return site


def run_path(staged: str, site: str, code: str) -> dict[str, str]:
    """A run's PYTHONPATH and RUNNER_HARNESS_PATH: the harness's sitecustomize first, then the run's code; its
    own packages next (Python's site), and last the in-run packages at `site` and the harness `staged` (as
    runner.launch.stage puts it)."""
    return {
        "PYTHONPATH": os.pathsep.join((f"{staged}/runner/harness/boot", code)),
        "RUNNER_HARNESS_PATH": os.pathsep.join((site, staged)),
    }
