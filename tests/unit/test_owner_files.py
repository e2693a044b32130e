"""Run ids from the command line name a run directory of this project, and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import RunnerError
from runner.runs.owner import find_run_dir


@pytest.mark.parametrize("given", ["..", ".", "", "../runs", "/etc", "ab/../cd", "a" * 300])
def test_a_run_id_cannot_name_anything_outside_the_runs(tmp_path: Path, given: str) -> None:
    (tmp_path / ".runner" / "runs" / "abcdef12").mkdir(parents=True)
    with pytest.raises(RunnerError, match="No run") as caught:
        find_run_dir(tmp_path, given)
    assert "runner ls" in str(caught.value)


def test_a_unique_start_names_the_run_and_an_ambiguous_one_is_refused(tmp_path: Path) -> None:
    runs = tmp_path / ".runner" / "runs"
    for name in ("abcdef12", "abcd9999", "ffff0000"):
        (runs / name).mkdir(parents=True)
    assert find_run_dir(tmp_path, "abcde").root == runs / "abcdef12"
    assert find_run_dir(tmp_path, "ffff0000").root == runs / "ffff0000"
    with pytest.raises(RunnerError, match="start of 2 runs' ids"):
        find_run_dir(tmp_path, "abcd")


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64 * 1024])
def test_secrets_are_masked_however_the_output_is_cut(size: int) -> None:
    from runner.harness.shim import Scrubber

    text = b"token=hunter22 and again hunter22hunter22; short=abc\r\n" * 3 + b"ends with hunt"
    scrubber = Scrubber(["hunter22", "abc"])  # "abc" is too short to be a secret worth masking
    out = b"".join(scrubber.feed(text[i : i + size]) for i in range(0, len(text), size)) + scrubber.end()
    assert out == text.replace(b"hunter22", b"***")
    assert b"hunter22" not in out and out.endswith(b"ends with hunt")


def test_reconcile_asks_slurm_once_for_every_live_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import socket

    from runner.backends.slurm import jobs
    from runner.runs import owner
    from runner.runs.rundir import LIVE, RunDir

    live = tmp_path / LIVE
    live.mkdir(parents=True)
    for i in range(3):
        run = RunDir.of(tmp_path, f"run{i}")
        run.root.mkdir(parents=True)
        run.state.write_text(json.dumps({"backend": "slurm", "host": socket.gethostname()}))
        run.slurm_job.write_text(json.dumps({"job": f"9_{i}"}))
        (live / f"run{i}").write_text(str(run.root))
    asked = []

    def call(*argv: str, timeout: float = 60) -> object:
        asked.append(argv)
        out = "9_0|RUNNING|0:0|None\n9_[1-2%1]|PENDING|0:0|JobArrayTaskLimit\n"
        return type("Proc", (), {"returncode": 0, "stdout": out, "stderr": ""})()

    monkeypatch.setattr(jobs, "_call", call)
    # Every job is queued or running: each run is its job's, and none is adopted here.
    assert owner.reconcile(tmp_path) == []
    assert [a[:3] for a in asked] == [("sacct", "-j", "9_0,9_1,9_2")]
