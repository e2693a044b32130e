"""A full filesystem: one line naming it and what frees space, nothing half-made, and the record caught up once
there is room again. Each test mounts a small filesystem (tmpfs) of its own for the project or its store."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import all_runs, artifacts, docker_engine, git, run_cli, store

pytestmark = pytest.mark.integration

FILL_OUTPUT = "import os\nf = open(os.environ['RUNNER_OUTPUT'] + '/big', 'wb')\nfor _ in range(200): f.write(bytes(1 << 20))"


@pytest.fixture
def small(tmp_path: Path) -> Iterator[Path]:
    """A 96 MB filesystem of the test's own."""
    if os.geteuid() != 0 and not os.environ.get("RUNNER_REQUIRE_ALL"):
        pytest.skip("mounting a filesystem takes root")
    mount = tmp_path / "small fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def moved(project: Path, to: Path) -> Path:
    """The project, moved onto `to`."""
    target = to / project.name
    shutil.copytree(project, target, symlinks=True)
    return target


def fill(where: Path, leave_mb: int) -> Path:
    """A file that leaves `leave_mb` MB of `where`'s filesystem free."""
    st = os.statvfs(where)
    filler = where / "filler"
    with open(filler, "wb") as fh:
        fh.truncate(0)
        fh.write(bytes(max(0, st.f_bavail * st.f_frsize - (leave_mb << 20))))
    return filler


def said_once(proc: subprocess.CompletedProcess[str], mount: Path) -> str:
    """The runner's own words: one line, naming the full filesystem and what frees space, no traceback."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"runner: no space left on the filesystem at {mount}"), lines[0]
    assert "`runner gc` frees what no run uses" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("full", ["run folder", "store", "image cache"])
def test_a_full_filesystem_refuses_a_run_in_one_line_before_anything_exists(
    project: Path, small: Path, full: str
) -> None:
    env, holds = {}, small / "cache"
    if full == "run folder":
        project = moved(project, small)
        holds = project / ".runner" / "runs"
    elif full == "store":
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{small / 'mlflow.db'}"}
        run_cli(project, "ls", env=env, check=True)  # the store made while there is room
        holds = small / "mlflow.db"
    else:
        env = {"RUNNER_CACHE": str(holds)}
    fill(small, 4)
    proc = run_cli(project, "backend=local", "env.requirements=[]", "command=echo hi", env=env)
    assert proc.returncode == 1
    line = said_once(proc, small)
    assert f"which holds {holds}" in line
    assert not list((project / ".runner" / "runs").glob("*"))  # no run folder
    uri = env.get("MLFLOW_TRACKING_URI", store(project))
    assert (
        MlflowClient(uri).search_runs([e.experiment_id for e in MlflowClient(uri).search_experiments()]) == []
    )


def test_a_run_that_fills_its_output_waits_for_room_and_its_record_catches_up(
    project: Path, small: Path
) -> None:
    """Its /output (in the run's folder) filled from inside the container: the terminal ends with one line; the
    record stays RUNNING while nothing can be written, then says FAILED with the run's own exit code once there
    is room, and the container is gone."""
    docker_engine()
    project = moved(project, small)
    proc = run_cli(project, "run", "backend=docker", "env.requirements=[]", "--", "python", "-c", FILL_OUTPUT)
    assert proc.returncode == 1
    line = said_once(proc, small)
    (run,) = all_runs(project)
    run_id = run.info.run_id
    assert (
        f"run {run_id} waits for room to record its ending" in line
        and f"the biggest runs here: {run_id}" in line
    )
    assert run.info.status == "RUNNING"
    (project / ".runner" / "runs" / run_id / "output" / "big").unlink()
    deadline = time.time() + 120
    while (run := MlflowClient(store(project)).get_run(run_id)).info.status == "RUNNING":
        assert time.time() < deadline, "the record never caught up"
        run_cli(project, "ls", check=True)
        time.sleep(1)
    assert run.info.status == "FAILED" and run.data.tags["runner.exit_code"] == "1", run.data.tags
    left = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=runner.run_id={run_id}"], capture_output=True, text=True
    )
    assert left.stdout.split() == []


def test_outputs_past_the_room_left_are_said_and_the_run_finishes(project: Path, small: Path) -> None:
    """A run that wrote more than its record has room to keep: FINISHED, what fitted kept, what did not said in
    its log and its record, and no half-copied artifact."""
    project = moved(project, small)
    git(project, "status")  # still a repository where it was moved
    code = (
        "import os\nout = os.environ['RUNNER_OUTPUT']\nopen(out + '/small', 'w').write('kept')\n"
        "open(out + '/zbig', 'wb').write(bytes(60 << 20))"
    )
    proc = run_cli(project, "run", "backend=local", "env.requirements=[]", "--", "python", "-c", code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = all_runs(project)
    assert run.info.status == "FINISHED"
    said = run.data.tags["runner.outputs.not_kept"]
    assert said.startswith(
        "output/zbig (63 MB) and what follows not kept: no room for it on the filesystem at"
    ), said
    assert "output/zbig (63 MB) and what follows not kept" in proc.stdout
    kept = artifacts(project, run.info.run_id, "output")
    assert "output/small" in kept and "output/zbig" not in kept, kept


def test_runner_gc_frees_the_folders_of_runs_deleted_from_the_record(project: Path) -> None:
    kept, gone = (
        run_cli(
            project, "backend=local", "env.requirements=[]", "command=echo hi", check=True
        ).stdout.split()[2]
        for _ in range(2)
    )
    MlflowClient(store(project)).delete_run(gone)
    said = run_cli(project, "gc", check=True).stdout
    assert "runs: Removed the folders of 1 deleted run(s)" in said, said
    runs = project / ".runner" / "runs"
    assert (runs / kept).is_dir() and not (runs / gone).exists()
