"""Environments stored once: each one a folder of hard links into one uv cache, so that a package version's files
exist once on disk however many environments hold it (as in Nix's or Spack's store), mounted read-only at /opt/env
in each run's container.

Layout, under the runner's cache (`store/`, one filesystem: hard links cannot cross one):
  uv/          uv's cache: each package version unpacked once (`archive-v0/ID/`), its bytecode compiled there
  envs/KEY/    an environment: a relocatable venv whose files are hard links into uv/ (KEY: its content hash)
  bytecode/    which cached packages have their bytecode, per Python
  users/KEY/   who needs an environment: the processes preparing runs with it and the runs prepared with it;
               it is kept while one of them may still start it (a queued SLURM job) or resume it
  .lock        builds hold it shared, `runner gc` exclusive: nothing is collected while an environment links

An environment is built in a container of the base image (its own Python), as the invoking user, with only this
store writable; it appears under its key by one rename once whole, so a folder there is always complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from runner.environment.lock import cache_dir, write_whole

ENV_PATH = "/opt/env"  # where a run sees its environment
STORE_PATH = "/store"  # where a build sees the store
VERSION = "5"  # bump when what goes into an environment's folder changes (the script below)
SCRIPT = """set -eu
env="/store/envs/$BUILD_NAME"
if [ -n "$SEED" ]; then  # a stored one's folder is being linked there meanwhile (link_seed): wait for it
  end=$(($(date +%s) + 600))
  while [ ! -s /build/seeded ] && [ "$(date +%s)" -lt "$end" ]; do sleep 0.02 2>/dev/null || sleep 1; done
  if [ ! -s /build/seeded ]; then echo "[runner] the stored environment $SEED was not linked in 600 s" >&2; exit 1; fi
fi
if [ "$(cat /build/seeded 2>/dev/null)" = linked ]; then  # uv adds what the lock adds to the stored one's
  uv pip install --no-deps --python "$env/bin/python" -r /build/added.lock
else  # none to start from, or links refused here: a venv of its own
  if [ -s /build/seeded ]; then echo "[runner] a venv of its own: $(cat /build/seeded)"; fi
  rm -rf "$env"
  uv venv --quiet --relocatable --python /usr/bin/python3 "$env"
  uv pip sync --python "$env/bin/python" /build/requirements.lock
fi
"$env/bin/python" -I /build/bytecode.py "$env" /store/uv /store/bytecode > /tmp/compiled
if [ -s /tmp/compiled ]; then echo "[runner] bytecode compiled once for: $(tr '\\n' ' ' < /tmp/compiled)"; fi
rm -f "$env/requirements.lock" "$env/build.id"  # never written through a link into another environment's
cp /build/requirements.lock "$env/requirements.lock"
echo "$BUILD_ID" > "$env/build.id"
"""


@functools.cache
def bytecode_script() -> str:
    """bytecode.py's text: run in each build, and part of each environment's key (read once per process)."""
    return Path(__file__).with_name("bytecode.py").read_text()


def seed(build_id: str, lock: str) -> str | None:
    """The stored environment a new one starts from, if any: built by the same pieces (`build_id`: base image, uv,
    this module's script and bytecode step), its lock's entries all in `lock` (the same versions of the same
    files: uv keeps an installed version without checking its hashes, and only adds to it, so nothing removed
    leaves compiled files behind), the most of them. Linking its folder is one call; uv linking each of its
    packages anew took seconds (TensorFlow's ~20,000 files)."""
    wanted = entries(lock)
    best, most = None, 0
    for env in (root() / "envs").iterdir():
        if not re.fullmatch(r"[0-9a-f]{16}", env.name):  # being built, or being removed
            continue
        try:
            if (env / "build.id").read_text().strip() != build_id:
                continue
            seeded = (env / "requirements.lock").read_text()
        except OSError:
            continue
        if any(line.startswith(("-e", "--editable")) for line in seeded.splitlines()):
            continue  # an editable package the new lock may drop: uv only adds, and would keep it
        have = entries(seeded)
        if have and have <= wanted and len(have) > most:
            best, most = env.name, len(have)
    return best


def link_seed(seed: str, build: Path, lock: str, key: str) -> None:
    """The stored environment `seed`'s folder linked whole where `key`'s build makes its own (one `cp`: TensorFlow's
    ~20,000 files), here while the engine starts the build's container; what the lock adds to the seed's in
    `build`/added.lock, and `build`/seeded saying "linked" once done (or "refused": then a venv of its own)."""
    said = "refused"
    try:
        seeded = (folder(seed) / "requirements.lock").read_text()
        options = [line for line in lock.splitlines() if line.startswith("-")]
        added = sorted(entries(lock) - entries(seeded))
        (build / "added.lock").write_text("".join(f"{line}\n" for line in [*options, *added]))
        partial = root() / "envs" / partial_name(key)
        # A killed build's, of a process with the same pid: cp would nest the seed in it.
        shutil.rmtree(partial, ignore_errors=True)
        linked = subprocess.run(
            ["cp", "-a", "--link", str(folder(seed)), str(partial)], capture_output=True, text=True
        )
        if linked.returncode == 0:
            for own in ("requirements.lock", "build.id"):  # its own files, not links to write through
                (partial / own).unlink()
            said = "linked"
        else:
            said = f"refused: {(linked.stderr.strip().splitlines() or ['cp failed'])[-1]}"
    except OSError:  # the seed gone meanwhile (gc waits for builds, but a folder may be removed by hand)
        pass
    finally:
        (build / "seeded").write_text(said)


def entries(lock: str) -> set[str]:
    """A lock's requirements, each whole: its line with its continuations (hashes), comments and options left out."""
    found, entry = set(), ""
    for line in lock.splitlines():
        text = "" if line.lstrip().startswith("#") else line.split(" #", 1)[0].strip()
        entry += " " + text.removesuffix("\\")
        if not text.endswith("\\"):
            if entry.strip() and not entry.strip().startswith("-"):
                found.add(" ".join(entry.split()))
            entry = ""
    return found


def root() -> Path:
    folder = cache_dir() / "store"
    (folder / "envs").mkdir(parents=True, exist_ok=True)
    (folder / "uv").mkdir(exist_ok=True)
    return folder


def folder(key: str) -> Path:
    return root() / "envs" / key


@contextlib.contextmanager
def one_build() -> Iterator[None]:
    """Held while an environment is built: one at a time, so that no build links a cached package's folder while
    another compiles its bytecode there."""
    with open(root() / ".build.lock", "a") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        yield


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


def _note(key: str, name: str, what: dict[str, object]) -> None:
    # Whole or absent: a note half written must not read as another.
    write_whole(root() / "users" / key / name, json.dumps(what))


def claim_process(key: str) -> None:
    """Note that this process is preparing a run with environment `key` (written while the store is held, so that
    gc cannot take it between its build or reuse and the run's own note: `claim`)."""
    _note(
        key, f"pid-{socket.gethostname()}-{os.getpid()}", {"host": socket.gethostname(), "pid": os.getpid()}
    )


def claim(key: str, run_root: Path) -> None:
    """Note that the run in `run_root` was prepared with environment `key` (gc keeps it while that run needs it),
    in place of this process's note."""
    _note(key, hashlib.sha256(str(run_root).encode()).hexdigest()[:16], {"run": str(run_root)})
    (root() / "users" / key / f"pid-{socket.gethostname()}-{os.getpid()}").unlink(missing_ok=True)


def _still_needs(what: dict[str, object], written: float) -> bool:
    """Whether the noted process is alive (another machine's: for a day), or the noted run may still use its
    environment: it has not ended, or it ended otherwise than FINISHED with a checkpoint kept (`runner resume`
    starts it again)."""
    if "pid" in what:
        if what.get("host") != socket.gethostname():
            return time.time() - written < 86400
        try:
            os.kill(int(str(what["pid"])), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    run = Path(str(what["run"]))
    if not run.is_dir():
        return False
    ended = run / "ended.json"
    if not ended.exists():
        return True
    checkpoint = run / "checkpoint"
    finished = json.loads(ended.read_text()).get("status") == "FINISHED"
    return not finished and checkpoint.is_dir() and any(checkpoint.iterdir())


def needed(key: str) -> bool:
    """Whether a process or run noted with environment `key` may still use it (`_still_needs`); notes of those past
    it are dropped. A note that cannot be read keeps the environment."""
    users = root() / "users" / key
    for note in sorted(users.iterdir()) if users.is_dir() else []:
        if note.name.startswith("."):
            continue
        try:
            if _still_needs(json.loads(note.read_text()), note.stat().st_mtime):
                return True
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
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
            going = env
            if not env.name.startswith("."):
                # Out of its name first: half removed, it is never taken for a whole one.
                going = env.with_name(f".gc-{env.name}-{os.getpid()}")
                try:
                    os.rename(env, going)
                except OSError:
                    continue
                envs += 1  # the leftovers of a build or of a removal count as bytes only
            freed += _unique_bytes(going)
            shutil.rmtree(going, ignore_errors=True)
            shutil.rmtree(store / "users" / env.name, ignore_errors=True)
        archives = store / "uv" / "archive-v0"
        for archive in sorted(archives.iterdir()) if archives.is_dir() else []:
            if archive.is_symlink() or not archive.is_dir() or not _unlinked(archive):
                continue
            freed += _unique_bytes(archive)
            shutil.rmtree(archive, ignore_errors=True)
            for mark in (store / "bytecode").glob(f"{archive.name}.*"):
                mark.unlink(missing_ok=True)
    return envs, freed
