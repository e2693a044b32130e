"""Environments stored once: each one a folder of hard links into one uv cache, so that a package version's files
exist once on disk however many environments hold it (as in Nix's or Spack's store), mounted read-only at /opt/env
in each run's container.

Layout, under the runner's cache (`store/`, one filesystem: hard links cannot cross one):
  uv/          uv's cache: each package version unpacked once (`archive-v0/ID/`), its bytecode compiled there
  envs/KEY/    an environment: a relocatable venv whose files are hard links into uv/ (KEY: its content hash)
  bytecode/    which cached packages have their bytecode, per Python
  users/KEY/   the run folders prepared with an environment: it is kept while one of them may still start
               (a queued SLURM job, an owner about to start its container) or be resumed
  .lock        builds hold it shared, `runner gc` exclusive: nothing is collected while an environment links

An environment is built in a container of the base image (its own Python), as the invoking user, with only this
store writable; it appears under its key by one rename once whole, so a folder there is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from runner.environment.lock import cache_dir

ENV_PATH = "/opt/env"  # where a run sees its environment
STORE_PATH = "/store"  # where a build sees the store
VERSION = "2"  # bump when what goes into an environment's folder changes (the script below)
SCRIPT = """set -eu
env="/store/envs/$BUILD_NAME"
uv venv --quiet --relocatable --python /usr/bin/python3 "$env"
uv pip sync --python "$env/bin/python" /build/requirements.lock
python3 /build/bytecode.py "$env" /store/uv /store/bytecode > /tmp/compiled
if [ -s /tmp/compiled ]; then echo "[runner] bytecode compiled once for: $(tr '\\n' ' ' < /tmp/compiled)"; fi
cp /build/requirements.lock "$env/requirements.lock"
"""


def root() -> Path:
    folder = cache_dir() / "store"
    (folder / "envs").mkdir(parents=True, exist_ok=True)
    (folder / "uv").mkdir(exist_ok=True)
    return folder


def folder(key: str) -> Path:
    return root() / "envs" / key


@contextlib.contextmanager
def held(exclusive: bool = False) -> Iterator[None]:
    """Builds share the store; `runner gc` has it alone, or not at all (BlockingIOError: a build is under way)."""
    with open(root() / ".lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
        yield


def build_env() -> dict[str, str]:
    return {
        "UV_CACHE_DIR": f"{STORE_PATH}/uv",
        "UV_LINK_MODE": "hardlink",
        "UV_NO_PROGRESS": "1",
        "HOME": "/tmp",
    }


def partial_name(key: str) -> str:
    return f".build-{key}-{os.getpid()}"


def settle(key: str, built: bool) -> Path:
    """The build's folder under its key (whole), or removed (it failed)."""
    partial = root() / "envs" / partial_name(key)
    if not built:
        shutil.rmtree(partial, ignore_errors=True)
        return partial
    target = folder(key)
    os.rename(partial, target)
    return target


def claim(key: str, run_root: Path) -> None:
    """Note that the run in `run_root` was prepared with environment `key` (gc keeps it while that run needs it)."""
    users = root() / "users" / key
    users.mkdir(parents=True, exist_ok=True)
    (users / hashlib.sha256(str(run_root).encode()).hexdigest()[:16]).write_text(str(run_root))


def needed(key: str) -> bool:
    """Whether a run prepared with environment `key` may still use it: it has not ended, or it ended otherwise than
    FINISHED with a checkpoint kept (`runner resume` starts it again); notes of runs past that are dropped."""
    users = root() / "users" / key
    for note in sorted(users.iterdir()) if users.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            run = Path(note.read_text())
            if run.is_dir():
                ended = run / "ended.json"
                if not ended.exists():
                    return True
                checkpoint = run / "checkpoint"
                finished = json.loads(ended.read_text()).get("status") == "FINISHED"
                if not finished and checkpoint.is_dir() and any(checkpoint.iterdir()):
                    return True
        note.unlink(missing_ok=True)
    return False


def _unique_bytes(path: Path) -> int:
    """Bytes of the files under `path` that no other name links to."""
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(top, name))
                if st.st_nlink == 1:
                    total += st.st_size
    return total


def _unlinked(archive: Path) -> bool:
    """Whether no environment links any file of a cached package (every file's only name is in the cache)."""
    for top, _, files in os.walk(archive):
        for name in files:
            with contextlib.suppress(OSError):
                if os.lstat(os.path.join(top, name)).st_nlink > 1:
                    return False
    return True


def gc(in_use: set[str]) -> tuple[int, int]:
    """Remove the environments no container mounts (`in_use`: the host folders containers mount) and no run needs
    (`needed`), then the cached packages no environment links any more. Returns (environments removed, bytes
    freed)."""
    envs, freed = 0, 0
    with held(exclusive=True):
        store = root()
        for env in sorted((store / "envs").iterdir()):
            if env.is_symlink() or not env.is_dir() or str(env) in in_use or needed(env.name):
                continue
            freed += _unique_bytes(env)
            shutil.rmtree(env, ignore_errors=True)
            shutil.rmtree(store / "users" / env.name, ignore_errors=True)
            envs += not env.name.startswith(".")  # a build's leftovers count as bytes only
        archives = store / "uv" / "archive-v0"
        for archive in sorted(archives.iterdir()) if archives.is_dir() else []:
            if archive.is_symlink() or not archive.is_dir() or not _unlinked(archive):
                continue
            freed += _unique_bytes(archive)
            shutil.rmtree(archive, ignore_errors=True)
            for mark in (store / "bytecode").glob(f"{archive.name}.*"):
                mark.unlink(missing_ok=True)
    return envs, freed
