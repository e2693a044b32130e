"""The env store's notes of who needs an environment: what `runner gc` keeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner.backends.docker import envstore


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def env(key: str) -> Path:
    folder = envstore.folder(key)
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    return folder


def run_folder(tmp_path: Path, ended: str | None, checkpoint: bool = False) -> Path:
    run = tmp_path / "runs" / f"{ended}-{checkpoint}"
    (run / "checkpoint").mkdir(parents=True)
    if ended:
        (run / "ended.json").write_text(json.dumps({"status": ended}))
    if checkpoint:
        (run / "checkpoint" / "state").write_text("x")
    return run


@pytest.mark.parametrize(
    ("ended", "checkpoint", "kept"),
    [(None, False, True), ("FINISHED", True, False), ("FAILED", True, True), ("FAILED", False, False)],
)
def test_a_run_keeps_its_environment_while_it_may_start_or_resume(tmp_path, ended, checkpoint, kept) -> None:
    folder = env("a")
    envstore.claim("a", run_folder(tmp_path, ended, checkpoint))
    assert envstore.gc(set())[0] == (0 if kept else 1)
    assert folder.is_dir() == kept


def test_a_preparing_process_keeps_it_until_its_run_has_its_own_note(tmp_path) -> None:
    folder = env("a")
    envstore.claim_process("a")  # this process: alive
    assert envstore.gc(set())[0] == 0 and folder.is_dir()
    envstore.claim("a", tmp_path / "gone")  # the run's note replaces the process's; its folder is gone
    assert envstore.gc(set())[0] == 1 and not folder.exists()


def test_a_dead_process_note_is_dropped_and_an_unreadable_note_keeps(tmp_path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    folder = env("a")
    users = envstore.root() / "users" / "a"
    users.mkdir(parents=True)
    (users / "pid-dead").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout)}))
    (users / "broken").write_text("{not json")
    assert envstore.gc(set())[0] == 0 and folder.is_dir()  # the broken note keeps it
    (users / "broken").unlink()
    assert envstore.gc(set())[0] == 1 and not folder.exists()  # a dead process's note does not


def test_a_mounted_environment_is_kept_and_a_removed_one_leaves_no_name(tmp_path) -> None:
    kept, dropped = env("a"), env("b")
    assert envstore.gc({str(kept)})[0] == 1
    assert kept.is_dir() and not dropped.exists()
    assert sorted(p.name for p in (envstore.root() / "envs").iterdir()) == ["a"]
