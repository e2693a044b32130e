"""Environment specs: requirements resolved to a hashed lock with uv, and content hashes that name envs."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from runner.compose.spec import EnvSpec, check_requirement, requirement_file_lines
from runner.errors import ConfigError, EnvBuildError


def write_whole(path: Path, data: str | bytes) -> None:
    """`data` at `path`, whole or not at all: written under a name of this process and thread, then renamed (the
    threads of a sweep's members may write the same cached file at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    if isinstance(data, str):
        partial.write_text(data)
    else:
        partial.write_bytes(data)
    partial.replace(path)


def cache_dir() -> Path:
    root = Path(
        os.environ.get("RUNNER_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "runner"
    )
    root.mkdir(parents=True, exist_ok=True)
    return root


def uv_bin() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def uv_version() -> str:
    """The version of the uv that builds environments (a part of their keys), looked up again only once its
    binary has changed (each lookup scans the installed packages)."""
    path = uv_bin()
    return _uv_version(path, os.stat(path).st_mtime_ns)


@functools.cache
def _uv_version(path: str, mtime_ns: int) -> str:
    return metadata.version("uv")


def content_hash(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def requirement_lines(env: EnvSpec, project_dir: Path) -> list[str]:
    """The env's requirements: the config's list plus its requirements_file (the runner's own in-run pieces
    are apart: runner.environment.harness)."""
    lines = [check_requirement(line, "env.requirements") for line in env.requirements]
    if env.requirements_file:
        path = project_dir / env.requirements_file
        inside = path.resolve().is_relative_to(project_dir.resolve())
        if not inside or not path.is_file():
            where = (
                ("is not a file" if path.exists() else "does not exist")
                if inside
                else "lies outside the project"
            )
            raise ConfigError(
                f"env.requirements_file: {env.requirements_file} {where} ({project_dir}). "
                "Name a file of the project, e.g. env.requirements_file=requirements.txt."
            )
        for n, line in requirement_file_lines(path.read_text(errors="replace")):
            try:
                lines.append(check_requirement(line, f"{env.requirements_file}:{n}"))
            except ConfigError as exc:
                raise ConfigError(f"{exc} (env.requirements_file=none leaves the file out.)") from None
    return lines


def index_args(environ: Mapping[str, str], index_url: str | None = None) -> list[str]:
    """The package index: env.index_url if the config names one, else pip's settings from the host, in uv's
    spelling (find-links are host paths: not passed)."""
    args = []
    if index_url or environ.get("PIP_INDEX_URL"):
        args += ["--index-url", index_url or environ["PIP_INDEX_URL"]]
    for url in environ.get("PIP_EXTRA_INDEX_URL", "").split():
        args += ["--extra-index-url", url]
    return args


def uv_index_env(environ: Mapping[str, str], index_url: str | None = None) -> dict[str, str]:
    """The same index settings as variables, for uv inside a build container."""
    names = {"PIP_INDEX_URL": "UV_INDEX_URL", "PIP_EXTRA_INDEX_URL": "UV_EXTRA_INDEX_URL"}
    found = {uv: environ[pip] for pip, uv in names.items() if environ.get(pip)}
    return {**found, "UV_INDEX_URL": index_url} if index_url else found


def tls_env(ca_bundle: str | None) -> dict[str, str]:
    """Variables that make pip, uv, requests and curl trust `ca_bundle`."""
    if not ca_bundle:
        return {}
    return {k: ca_bundle for k in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}


@dataclass(frozen=True)
class Target:
    """The interpreter a lock is resolved for."""

    python_version: str  # "3.11"
    platform: str | None = None  # uv's --python-platform; None: the host


def lock_file(
    lines: list[str], target: Target, environ: Mapping[str, str], index_url: str | None = None
) -> Path:
    """Where the lock of `lines` for `target` from the index that `environ` and `index_url` name is kept."""
    index = index_args(environ, index_url)
    key = content_hash("\n".join(lines), target.python_version, str(target.platform), *index)
    return cache_dir() / "locks" / f"{key}.txt"


def resolve_lock(
    lines: list[str],
    target: Target,
    ca_bundle: str | None,
    environ: Mapping[str, str],
    fresh: bool = False,
    index_url: str | None = None,
) -> str:
    """Exact versions with hashes, resolved once per input and cached: the same spec keeps the same lock.
    `fresh` resolves anew without touching the cache (what would resolve today)."""
    index = index_args(environ, index_url)
    path = lock_file(lines, target, environ, index_url)
    if path.is_file() and not fresh:
        return path.read_text()
    cmd = [
        uv_bin(),
        "pip",
        "compile",
        "-",
        "--generate-hashes",
        "--no-header",
        "--quiet",
        "--python-version",
        target.python_version,
        *index,
    ]
    if target.platform:
        cmd += ["--python-platform", target.platform]
    proc = subprocess.run(
        cmd,
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        env={**os.environ, **tls_env(ca_bundle)},
    )
    if proc.returncode != 0:
        raise EnvBuildError("Requirements do not resolve: " + _resolver_message(proc.stderr))
    if fresh:
        return proc.stdout
    write_whole(path, proc.stdout)
    return proc.stdout


def _resolver_message(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Using ")]
    return " ".join(lines)[:600] or "uv pip compile failed."


def locked_versions(lock: str) -> list[str]:
    """`name==version` lines of a lock, without hashes: the readable package list."""
    return [
        ln.split()[0] for ln in lock.splitlines() if "==" in ln and not ln.lstrip().startswith(("#", "--"))
    ]
