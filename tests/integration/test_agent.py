"""The agent every command is forked from (runner.agent): its folder must be the user's own, an agent of
other code is replaced, it leaves when idle, one that cannot start is reported at once, and the client that
starts a command imports no MLflow.

Each test uses an agent folder of its own (RUNNER_AGENT_DIR), so the agent it starts is its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runner
from runner.agent.wire import installation
from runner.harness.shim import alive
from tests.helpers import run_cli

NOBODY = 65534


def cli(project: Path, folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    full.update(RUNNER_AGENT_DIR=str(folder), **env)
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=project,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def home(folder: Path) -> Path:
    """The agent folder of this checkout's installation, in the user's."""
    return folder / installation()


def agent_pid(folder: Path) -> int:
    return int(json.loads((home(folder) / "agent.json").read_text())["pid"])


def running(pid: int) -> bool:
    return alive(pid, None)


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while running(pid) and time.time() < deadline:
        time.sleep(0.1)
    return not running(pid)


@pytest.fixture
def folder(tmp_path: Path):
    path = tmp_path / "agent"
    yield path
    if (home(path) / "agent.json").exists():  # the test's own agent: gone with the test
        pid = agent_pid(path)
        if running(pid):
            os.kill(pid, 9)


def test_a_folder_of_another_user_is_refused_in_one_line(project: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    proc = cli(project, theirs, "ls")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"runner: the agent folder {theirs} belongs to uid {NOBODY}, not to you (uid {os.getuid()}): refusing "
        "to use it. Remove it, or set RUNNER_AGENT_DIR to a folder of your own."
    ]
    assert list(theirs.iterdir()) == []  # nothing made there


def test_a_folder_open_to_others_or_a_link_is_refused(project: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    proc = cli(project, shared, "ls")
    assert proc.returncode == 1
    assert (
        f"is open to other users (mode 777): refusing to use it. Close it with: chmod 700 {shared}"
        in proc.stderr
    )
    link = tmp_path / "link"
    link.symlink_to(shared)
    proc = cli(project, link, "ls")
    assert proc.returncode == 1
    assert "is not a folder (a link or a file)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(shared.iterdir()) == []


def test_another_user_cannot_reach_the_agent(project: Path, folder: Path) -> None:
    cli(project, folder, "ls")
    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        f"    s.connect({str(home(folder) / 'agent.sock')!r})\n"
        "except PermissionError:\n"
        "    sys.exit(3)\n"
    )
    python = "/usr/bin/python3"  # the system's: one another user may run
    proc = subprocess.run([python, "-c", probe], user=NOBODY, capture_output=True, timeout=60)
    assert proc.returncode == 3, proc.stderr


def test_an_agent_of_other_code_is_replaced(project: Path, folder: Path) -> None:
    assert cli(project, folder, "ls").returncode == 0
    first = agent_pid(folder)
    source = Path(runner.__file__).parent / "errors.py"  # the code changes (an edit, an upgrade) ...
    before = source.stat()
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        proc = cli(project, folder, "ls")
    finally:
        os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert proc.returncode == 0, proc.stderr
    assert agent_pid(folder) != first  # ... and the command ran in an agent of the new code
    assert wait_gone(first)  # the old one left once told


def test_the_agent_leaves_when_idle(project: Path, folder: Path) -> None:
    assert cli(project, folder, "ls", RUNNER_AGENT_IDLE="1").returncode == 0
    pid = agent_pid(folder)
    assert wait_gone(pid, timeout=30)
    assert not (home(folder) / "agent.sock").exists()
    assert cli(project, folder, "ls").returncode == 0  # the next command starts another
    assert agent_pid(folder) != pid


def test_the_client_imports_no_mlflow_and_the_command_keeps_its_terminal(project: Path, folder: Path) -> None:
    cli(project, folder, "ls")  # the agent is up
    proc = cli(project, folder, "ls", "--json", PYTHONPROFILEIMPORTTIME="1")
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "runner.agent.client" in imported
    heavy = {
        m for m in imported if m.split(".")[0] in ("mlflow", "hydra", "docker", "omegaconf", "sqlalchemy")
    }
    assert heavy == set()
    assert json.loads(proc.stdout) == []  # the command's own output, on the client's stdout


def test_exit_code_stderr_and_working_folder_are_the_commands(project: Path) -> None:
    (project / "src").mkdir()
    proc = run_cli(project / "src", "train.epoch=3")  # from a sub-folder, as a user would
    assert proc.returncode == 2
    assert proc.stderr.startswith("runner: Unknown key 'train.epoch'. Did you mean 'epochs'?")
    assert proc.stdout == ""


def test_a_socket_that_answers_nothing_is_not_trusted(project: Path, folder: Path) -> None:
    folder.mkdir(mode=0o700)
    home(folder).mkdir(mode=0o700)
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(home(folder) / "agent.sock"))  # something else holds the agent's socket and says nothing
    silent.listen(1)
    try:
        proc = cli(project, folder, "ls", "--json")
    finally:
        silent.close()
    assert proc.returncode == 0, proc.stderr  # an agent of ours took the socket over
    assert json.loads(proc.stdout) == []


def test_an_agent_that_cannot_start_is_reported_at_once_with_its_reason(
    project: Path, folder: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"  # a dependency that fails to import: the agent dies warming up
    (broken / "mlflow").mkdir(parents=True)
    (broken / "mlflow" / "__init__.py").write_text("raise RuntimeError('this mlflow is broken')\n")
    path = os.pathsep.join([str(broken), *filter(None, [os.environ.get("PYTHONPATH")])])
    began = time.monotonic()
    proc = cli(project, folder, "ls", PYTHONPATH=path)
    took = time.monotonic() - began
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    log = home(folder) / "agent.log"
    assert lines[0] == f"runner: the agent could not start: it exited with code 1. The end of its log, {log}:"
    assert lines[-1] == "  RuntimeError: this mlflow is broken"
    assert 1 < len(lines) <= 6
    assert took < 10, took  # not the minute a live agent is given to answer
