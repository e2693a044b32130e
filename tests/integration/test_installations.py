"""Any project, any number of installations: the runner installed from its wheel into virtual environments, as
users have it. A project's own package named `runner` is never imported by the agent; two installations keep an
agent each, used alternately; the folder of an installation that is gone does not stay behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.harness.shim import alive
from tests.helpers import build_wheel, git

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def install(wheel: Path, env: Path) -> Path:
    """A fresh virtual environment with the runner from its wheel (the heavy dependencies from this Python's)."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env)], check=True
    )
    python = str(env / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index"]
    # Installed here whatever this Python has (the checkout on PYTHONPATH, an editable install).
    env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([*pip, "--ignore-installed", str(wheel)], check=True, capture_output=True, env=env_vars)
    return env


@pytest.fixture
def agents(tmp_path: Path):
    """The user's agent folder, the test's own; its agents are gone with the test."""
    path = tmp_path / "agents"
    yield path
    for pid in agent_pids(path).values():
        os.kill(pid, signal.SIGKILL)


def agent_pids(agents: Path) -> dict[Path, int]:
    """The live agents under the user's agent folder, by their own folder."""
    found = {}
    for record in agents.rglob("agent.json"):
        pid = int(json.loads(record.read_text())["pid"])
        if alive(pid, None):
            found[record.parent] = pid
    return found


def runner(venv: Path, cwd: Path, agents: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `runner` command, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", RUNNER_AGENT_DIR=str(agents))
    return subprocess.run(
        [str(venv / "bin" / "runner"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def mine(tmp_path: Path) -> Path:
    """Someone's project: a git repository with a training script."""
    proj = tmp_path / "my-study"
    proj.mkdir()
    (proj / "train.py").write_text("print('training')\n")
    git(proj, "init", "-q")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "mine")
    return proj


def test_a_project_with_a_runner_package_of_its_own_is_never_imported(
    wheel: Path, mine: Path, agents: Path, tmp_path: Path
) -> None:
    venv = install(wheel, tmp_path / "venv")
    marker = tmp_path / "imported"
    (mine / "runner").mkdir()
    (mine / "runner" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    first = runner(venv, mine, agents, "ls")
    assert first.returncode == 0, first.stderr
    began = time.monotonic()
    second = runner(venv, mine, agents, "ls")
    took = time.monotonic() - began
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("ID ")
    assert took < 5, took  # the warm agent answered
    assert not marker.exists()  # the project's package ran in no runner process


def test_two_installations_used_alternately_keep_an_agent_each(
    wheel: Path, mine: Path, agents: Path, tmp_path: Path
) -> None:
    venvs = [install(wheel, tmp_path / name) for name in ("one", "two")]
    for venv in venvs:
        assert runner(venv, mine, agents, "ls").returncode == 0
    warm = agent_pids(agents)
    assert len(warm) == 2, warm
    for venv in venvs * 2:
        proc = runner(venv, mine, agents, "ls")
        assert proc.returncode == 0, proc.stderr
    assert agent_pids(agents) == warm  # neither agent was stopped nor replaced


def test_the_folder_of_an_installation_that_is_gone_is_removed(
    wheel: Path, mine: Path, agents: Path, tmp_path: Path
) -> None:
    kept, gone = install(wheel, tmp_path / "kept"), install(wheel, tmp_path / "gone")
    for venv in (kept, gone):
        assert runner(venv, mine, agents, "ls").returncode == 0
    assert len(list(agents.iterdir())) == 2
    for pid in agent_pids(agents).values():  # both agents end (as an idle one does) ...
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(gone)  # ... and one virtual environment is removed
    assert runner(kept, mine, agents, "ls").returncode == 0  # the next agent to start clears its folder
    (left,) = agents.iterdir()
    assert json.loads((left / "installation.json").read_text())["python"] == str(kept / "bin" / "python")
    assert list(agent_pids(agents)) == [left]
