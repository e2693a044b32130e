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

import json
import socket
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

PORT_IN_CONTAINER = 8888
SESSION = "session.json"  # in the run directory, owner-only: {"port", "token"}
CHECK_EVERY = 5.0  # seconds between the owner's questions to the server
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
        f"--ServerApp.shutdown_no_activity_timeout={idle_timeout}",
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
    return port, f"[runner] port {wanted} is taken on 127.0.0.1: JupyterLab gets port {port}\n"


def url(access: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{access['port']}/lab?token={access['token']}"


def read(run_dir: Any) -> dict[str, Any] | None:
    try:
        found = json.loads((run_dir / SESSION).read_text())
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
    except (OSError, ValueError, urllib.error.URLError):
        return False


def idle_reason(access: dict[str, Any], idle_timeout: int) -> str | None:
    """'idle: ...' once the server has had no activity, no busy kernel and no open connection for the timeout;
    None while it is used, or while it cannot be asked (it is starting, or busy)."""
    try:
        status = ask(access, "/api/status")
        kernels = ask(access, "/api/kernels?no_track_activity=1")  # asking is not using
    except (OSError, ValueError, urllib.error.URLError):
        return None
    if status.get("connections") or any(k.get("execution_state") == "busy" for k in kernels):
        return None
    last = datetime.fromisoformat(str(status["last_activity"]).replace("Z", "+00:00")).timestamp()
    if time.time() - last < idle_timeout:
        return None
    return f"idle: no activity for {idle_timeout} s"


def pull(
    code: Path, manifest: dict[str, list[int]], project: Path, since: float
) -> tuple[list[str], list[str]]:
    """Copy what the session wrote in its working directory (what differs from `manifest`, the copy as staged)
    into the project. A project file changed after `since` (the session's start) is newer than the session's
    view of it: left alone. Returns (copied, refused), relative paths."""
    import shutil

    copied, refused = [], []
    for path in sorted(code.rglob("*")):
        rel = path.relative_to(code).as_posix()
        if (
            path.is_symlink()
            or not path.is_file()
            or rel.startswith(".ipynb_checkpoints/")
            or "/.ipynb_checkpoints/" in rel
        ):
            continue
        info = path.stat()
        if manifest.get(rel) == [info.st_size, info.st_mtime_ns]:
            continue  # as staged: the session did not write it
        target = project / rel
        if target.is_symlink() or (target.exists() and not target.is_file()):
            refused.append(rel)
            continue
        if target.is_file():
            if target.read_bytes() == path.read_bytes():
                continue
            if target.stat().st_mtime > since:
                refused.append(rel)
                continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        copied.append(rel)
    return copied, refused


def token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


def write(run_dir: Any, port: int) -> dict[str, Any]:
    from runner.shim import write_json

    access = {"port": port, "token": token()}
    write_json(run_dir / SESSION, access, private=True)
    return access
