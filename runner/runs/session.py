"""mode=jupyter: a session is a run whose command is JupyterLab, in a container of the run's own environment (with
JupyterLab installed on top, once per content hash), its data mounts, /output and record; it stops itself when
nobody uses it.

Idleness is Jupyter's own account of it: kernels it culls after `resources.idle_timeout` without activity
(`MappingKernelManager.cull_*`), and a server that shuts itself down with no kernel and no activity for as long
(`ServerApp.shutdown_no_activity_timeout`). Jupyter checks the latter only once a minute, so the run's owner also
asks the server (`/api/status`, `/api/kernels`) every few seconds and stops the session once it has had no
activity, no busy kernel and no open connection for the timeout: the ending is recorded KILLED with the reason
`idle`. The server's own shutdown still holds if the owner is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from runner.runs.rundir import RunDir

PORT_IN_CONTAINER = 8888
CHECK_EVERY = 5.0  # seconds between the owner's questions to the server
SAME, REFUSED = "same", "refused"  # what a pull did with a file, besides copying it
TOKEN_VARIABLE = "JUPYTER_TOKEN"  # Jupyter Server reads its token from it: never on its command line


def command(idle_timeout: int) -> list[str]:
    """JupyterLab in the container: on all of the container's addresses (the engine publishes the port on the
    host's 127.0.0.1 only), rooted at the run's working directory, culling idle kernels and stopping itself."""
    interval = max(1, min(60, idle_timeout // 2))
    return [
        "jupyter", "lab", "--no-browser", "--ip=0.0.0.0", f"--port={PORT_IN_CONTAINER}",
        "--ServerApp.root_dir=/code",
        "--allow-root",  # the container runs as the invoking user: root where root started it
        "--ServerApp.allow_remote_access=True",  # requests arrive from the engine's gateway; the token still holds
        # Its own shutdown, a little later than the owner's (which checks more often): the record says `idle`.
        f"--ServerApp.shutdown_no_activity_timeout={idle_timeout + 2 * int(CHECK_EVERY)}",
        f"--MappingKernelManager.cull_idle_timeout={idle_timeout}",
        f"--MappingKernelManager.cull_interval={interval}",
        "--MappingKernelManager.cull_connected=False",
        f"--TerminalManager.cull_inactive_timeout={idle_timeout}",
        f"--TerminalManager.cull_interval={interval}",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip


def port_for(wanted: int) -> tuple[int, str | None]:
    """`wanted` if it is free on 127.0.0.1, else another free one, with a line saying so."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
            return wanted, None
        except OSError:
            pass
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    return port, port_taken(wanted, port)


def port_taken(wanted: int, port: int) -> str | None:
    """The line that says a session got `port` for the `wanted` one (None where it got the one it wanted)."""
    return (
        None
        if port == wanted
        else f"[runner] port {wanted} is taken on 127.0.0.1: JupyterLab gets port {port}\n"
    )


def url(access: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{access['port']}/lab?token={access['token']}"


def read(run_dir: RunDir) -> dict[str, Any] | None:
    try:
        found = json.loads(run_dir.session.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def ask(access: dict[str, Any], path: str, timeout: float = 5) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{access['port']}{path}", headers={"Authorization": f"token {access['token']}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def answers(access: dict[str, Any]) -> bool:
    try:
        ask(access, "/api/status", timeout=2)
        return True
    except Exception:  # not up yet (or never): whoever asks decides how long to wait
        return False


def idle_reason(access: dict[str, Any], idle_timeout: int) -> str | None:
    """'idle: ...' once the server has had no activity, no busy kernel and no open connection for the timeout;
    None while it is used, or while it cannot be asked (it is starting, or busy)."""
    try:
        status = ask(access, "/api/status")
        kernels = ask(access, "/api/kernels?no_track_activity=1")  # asking is not using
        busy = any(isinstance(k, dict) and k.get("execution_state") == "busy" for k in kernels)
        if status.get("connections") or busy:
            return None
        last = datetime.fromisoformat(str(status["last_activity"]).replace("Z", "+00:00")).timestamp()
    except Exception:  # a server starting, busy or half gone: it is not known to be idle
        return None
    if time.time() - last < idle_timeout:
        return None
    return f"idle: no activity for {idle_timeout} s"


def pull(
    code: Path, manifest: dict[str, list[int]], project: Path, since: float, ledger: dict[str, str]
) -> tuple[list[str], list[str]]:
    """Copy what the session wrote in its working directory (what differs from `manifest`, the copy as staged)
    into the project; `ledger` (path -> sha256 of what an earlier pull copied) is updated. A project file changed
    after `since` (the session's start), other than by a pull, is newer than the session's view of it: left alone.
    The run wrote these files and is untrusted: only regular files (never through a link, on either side), never
    into a hidden folder (.git, .runner, a .venv: code the host runs) nor a folder the runner never stages, as
    plain 0644 files, within the workdir limits. Returns (copied, refused), relative paths."""
    from runner.tracking.record import WORKDIR_LIMIT

    copied: list[str] = []
    refused: list[str] = []
    total = 0
    real_project = os.path.realpath(project)
    for rel, path in _files(code):
        if len(copied) >= WORKDIR_LIMIT[0]:
            continue
        content = _written(path, manifest.get(rel), WORKDIR_LIMIT[1] - total)
        if content is None:  # not a plain file, or as staged: the session did not write it
            continue
        if content is False:  # over the size limit
            refused.append(rel)
            continue
        total += len(content)
        placed = _place(Path(real_project, rel), real_project, content, since, ledger.get(rel))
        if placed == REFUSED:
            refused.append(rel)
        elif placed != SAME:
            ledger[rel] = placed
            copied.append(rel)
    return copied, refused


def _files(code: Path) -> Iterator[tuple[str, str]]:
    """(relative path, path) of each file of the run's copy that a pull may bring back: none in a hidden folder or
    one the runner never stages, none hidden itself."""
    from runner.tracking.code import EXCLUDED

    for folder, dirs, files in os.walk(code):  # os.walk never follows links to folders
        rel_folder = os.path.relpath(folder, code)
        kept = (d for d in dirs if os.path.normpath(os.path.join(rel_folder, d)) not in EXCLUDED)
        dirs[:] = sorted(d for d in kept if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.normpath(os.path.join(rel_folder, name)), os.path.join(folder, name)


def _written(path: str, staged: list[int] | None, room: int) -> bytes | Literal[False] | None:
    """The content of a plain file the session wrote (never through a link); None for a link, another kind of
    file or one as staged; False when it is larger than `room`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # a link, or gone
        return None
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or staged == [info.st_size, info.st_mtime_ns]:
            return None
        if info.st_size > room:
            return False
        return source.read()


def _place(target: Path, root: str, content: bytes, since: float, pulled: str | None) -> str:
    """Write `content` at `target` (a fresh 0644 file moved into place) and return its sha256; SAME when the
    project holds it already; REFUSED where it is not ours to write: a link on the way or in place, or a project
    file changed after `since` that is not what the last pull (`pulled`) wrote."""
    parent = os.path.dirname(target)
    if not _plain_folder(parent, root):  # a link on the way: not ours to follow
        return REFUSED
    digest = hashlib.sha256(content).hexdigest()
    if os.path.lexists(target):
        if target.is_symlink() or not target.is_file():
            return REFUSED
        mine = hashlib.sha256(target.read_bytes()).hexdigest()
        if mine == digest:
            return SAME
        if target.stat().st_mtime > since and pulled != mine:
            return REFUSED
    os.makedirs(parent, exist_ok=True)
    temporary = Path(parent, f".{target.name}.pull-{os.getpid()}")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), "wb") as out:
        out.write(content)
    os.replace(temporary, target)
    return digest


def _plain_folder(path: str, root: str) -> bool:
    """True when `path` is `root` or under it with no link on the way (the part that exists yet)."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return os.path.realpath(path) == path and (path == root or path.startswith(root + os.sep))


def token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def write(run_dir: RunDir, port: int) -> dict[str, Any]:
    from runner.harness.shim import write_json

    access = {"port": port, "token": token()}
    write_json(run_dir.session, access, private=True)
    return access
