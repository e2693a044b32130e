"""What a full filesystem is taken to be, and the line that says so."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from runner.runs import space


def raised(exc: BaseException, cause: BaseException) -> BaseException:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise exc from inner
    except BaseException as outer:
        return outer


def test_a_full_disk_is_found_through_what_it_caused(tmp_path: Path) -> None:
    enospc = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "f"))
    assert space.is_full(raised(RuntimeError("staging failed"), enospc))
    assert space.is_full(raised(RuntimeError("store"), sqlite3.OperationalError("database or disk is full")))
    assert space.is_full(RuntimeError("500 Server Error: write /var/lib/docker/x: no space left on device"))
    assert not space.is_full(raised(RuntimeError("x"), OSError(errno.EACCES, "Permission denied")))
    assert space.full_path(raised(RuntimeError("x"), enospc)) == tmp_path / "f"


def test_the_line_names_the_filesystem_and_the_store_file(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    error = space.as_error(sqlite3.OperationalError("database or disk is full"), tmp_path, lambda: store)
    assert error is not None and error.exit_code == 1
    line = str(error)
    assert line.startswith(f"no space left on the filesystem at {space.mount_of(tmp_path)} (")
    assert f"which holds {store}" in line and "`runner gc` frees what no run uses" in line
    assert "\n" not in line
    assert space.as_error(ValueError("no"), tmp_path, lambda: store) is None


def test_the_biggest_runs_are_named_biggest_first(tmp_path: Path) -> None:
    runs = tmp_path / ".runner" / "runs"
    for name, n in (("small", 10), ("big", 3000), ("mid", 500)):
        (runs / name).mkdir(parents=True)
        (runs / name / "f").write_bytes(bytes(n))
    assert [r for r, _ in space.biggest_runs(tmp_path, 2)] == ["big", "mid"]
