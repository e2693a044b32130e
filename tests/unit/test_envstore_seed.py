"""Which stored environment a new one is built from: uv only adds to it, so its packages must all be in the new
lock, on the same base image; the largest such one."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.docker import envstore

BASE = "sha256:" + "b" * 64


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def lock(*pins: str) -> str:
    return "".join(f"{pin} \\\n    --hash=sha256:{'0' * 64}\n" for pin in pins)


def stored(name: str, *pins: str, base: str = BASE) -> None:
    folder = envstore.root() / "envs" / name
    folder.mkdir(parents=True)
    (folder / "requirements.lock").write_text(lock(*pins))
    (folder / "base.id").write_text(base + "\n")


def test_the_largest_environment_whose_packages_are_all_wanted() -> None:
    stored("a" * 16, "numpy==2.0.0")
    stored("b" * 16, "numpy==2.0.0", "keras==3.5.0")
    stored("c" * 16, "numpy==2.0.0", "keras==3.5.0", "pandas==2.2.0")  # pandas is not wanted
    assert envstore.seed(BASE, lock("numpy==2.0.0", "keras==3.5.0", "tabulate==0.9.0")) == "b" * 16


def test_none_with_another_version_another_base_or_unfinished() -> None:
    stored("a" * 16, "numpy==1.26.4")  # a version the new one does not have: uv would replace it
    stored("b" * 16, "numpy==2.0.0", base="sha256:" + "f" * 64)  # another base image's Python
    stored(f".build-{'c' * 16}-123", "numpy==2.0.0")  # being built
    assert envstore.seed(BASE, lock("numpy==2.0.0", "tabulate==0.9.0")) is None


def test_an_environment_of_before_base_ids_is_passed_over() -> None:
    folder = envstore.root() / "envs" / ("d" * 16)
    folder.mkdir(parents=True)
    (folder / "requirements.lock").write_text(
        lock("numpy==2.0.0")
    )  # built before environments named their base
    assert envstore.seed(BASE, lock("numpy==2.0.0")) is None
