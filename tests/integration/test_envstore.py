"""Environments stored once (the Docker backend's env store): a package version's files exist once however many
environments hold it, a seen environment builds nothing, a run cannot change its environment, and `runner gc` frees
a dropped environment's own packages only."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import all_runs, docker_engine, read_artifact, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.docker]

SMALL = ("backend=docker", "env.requirements=[six]")
MORE = ("backend=docker", "env.requirements=[six,tabulate]")  # one small package more


def newest(project: Path):
    return max(all_runs(project), key=lambda r: r.info.start_time)


def site(env: Path) -> Path:
    (found,) = env.glob("lib/python3*/site-packages")
    return found


def disk(*folders: Path) -> int:
    """Bytes on disk under `folders`, a file linked from several counted once (as `du` does)."""
    out = subprocess.run(
        ["du", "-s", "-c", "--block-size=1", *map(str, folders)], capture_output=True, text=True
    )
    return int(out.stdout.splitlines()[-1].split()[0])


def archives_holding(store: Path, name: str) -> list[Path]:
    return [d for d in (store / "uv" / "archive-v0").iterdir() if any(d.glob(f"{name}-*.dist-info"))]


def built_on(small: Path, more: Path, said: str) -> None:
    """`more` was built on `small`'s files (each one linked, uv adding the package more), which stay as they were."""
    assert f"on environment {small.name}'s packages" in said, said
    assert "tabulate" not in (small / "requirements.lock").read_text()
    assert not list(site(small).glob("tabulate*")) and list(site(more).glob("tabulate*"))
    assert (small / "requirements.lock").stat().st_ino != (more / "requirements.lock").stat().st_ino
    assert (small / "build.id").read_text() == (more / "build.id").read_text()


def test_an_environment_costs_what_it_adds_and_gc_frees_only_a_dropped_ones_packages(
    project: Path, tmp_path: Path
) -> None:
    engine = docker_engine()
    env = {"RUNNER_CACHE": str(tmp_path / "runner cache")}
    store = tmp_path / "runner cache" / "store"
    (project / "small.py").write_text("import six\n")
    (project / "more.py").write_text("import six, tabulate\n")
    run_cli(project, *SMALL, "command='python small.py'", env=env, check=True)
    small = Path(newest(project).data.tags["runner.env.folder"])
    proc = run_cli(project, *MORE, "command='python more.py'", env=env, check=True)
    more = Path(newest(project).data.tags["runner.env.folder"])
    assert small != more and small.parent == more.parent == store / "envs"
    built_on(small, more, proc.stdout)

    # One file, two names: the package both hold, its bytecode too (compiled once, in the shared cache).
    assert (site(small) / "six.py").stat().st_ino == (site(more) / "six.py").stat().st_ino
    (pyc,) = (site(small) / "__pycache__").glob("six.*.pyc")
    assert pyc.stat().st_ino == (site(more) / "__pycache__" / pyc.name).stat().st_ino
    assert (
        disk(small, more) - disk(small) < 2_000_000
    )  # tabulate and the folder's own small parts, not a copy

    # The second run of the new environment builds nothing.
    built = more.stat().st_mtime_ns
    proc = run_cli(project, *MORE, "command='python more.py'", env=env, check=True)
    again = newest(project)
    assert again.data.tags["runner.env.reused"] == "true"
    assert again.data.tags["runner.env.folder"] == str(more) and more.stat().st_mtime_ns == built
    assert f"environment {more.name}: reused" in proc.stdout and "building" not in proc.stdout

    # Read-only in a run: a file changed there would change every environment linking it.
    (project / "change_env.py").write_text("import pathlib, six\npathlib.Path(six.__file__).write_text('')\n")
    proc = run_cli(project, *MORE, "command='python change_env.py'", env=env)
    assert proc.returncode != 0
    assert "Read-only file system" in read_artifact(project, newest(project).info.run_id, "run.log")

    # A run that failed with a checkpoint kept may be resumed: its environment is kept for it.
    (project / "fails.py").write_text(
        "import idna, os\nopen(os.environ['RUNNER_CHECKPOINT_DIR'] + '/s', 'w')\nexit(3)\n"
    )
    assert run_cli(
        project, "backend=docker", "env.requirements=[idna]", "command='python fails.py'", env=env
    ).returncode
    failed = newest(project)
    assert failed.info.status == "FAILED"
    resumable = Path(failed.data.tags["runner.env.folder"])

    # gc while a run of the smaller environment goes on: the dropped one's own package goes, the shared stays.
    run_cli(project, *SMALL, "command='sleep 300'", "detach=true", env=env, check=True)
    running = newest(project).info.run_id
    try:
        deadline = time.time() + 60
        while not engine.containers.list(filters={"label": f"runner.run_id={running}"}):
            assert time.time() < deadline, "the detached run's container never started"
            time.sleep(0.5)
        tabulate_archives = archives_holding(store, "tabulate")
        assert tabulate_archives
        proc = run_cli(project, "gc", env=env, check=True)
        assert "Removed 1 environment folder(s)" in proc.stdout, proc.stdout
        assert small.is_dir() and resumable.is_dir() and not more.exists()
        assert archives_holding(store, "tabulate") == []
        assert archives_holding(store, "six") and (site(small) / "six.py").stat().st_nlink >= 2
    finally:
        run_cli(project, "stop", running, env=env)
