"""Which stored environment a new one is built from: uv only adds to it and keeps an installed version without
checking its hashes, so its lock's entries must all be in the new lock, whole, and it must be built by the same
pieces (base image, uv, build script); the largest such one."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.backends.docker import envstore

BUILD = "b" * 64


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def lock(*pins: str, digest: str = "0") -> str:
    return "# made by uv\n" + "".join(
        f"{pin} \\\n    --hash=sha256:{digest * 64}\n    # via x\n" for pin in pins
    )


def stored(name: str, *pins: str, build: str = BUILD, digest: str = "0") -> None:
    folder = envstore.root() / "envs" / name
    folder.mkdir(parents=True)
    (folder / "requirements.lock").write_text(lock(*pins, digest=digest))
    (folder / "build.id").write_text(build + "\n")


def test_the_largest_environment_whose_packages_are_all_wanted() -> None:
    stored("a" * 16, "numpy==2.0.0")
    stored("b" * 16, "numpy==2.0.0", "keras==3.5.0")
    stored("c" * 16, "numpy==2.0.0", "keras==3.5.0", "pandas==2.2.0")  # pandas is not wanted
    assert envstore.seed(BUILD, lock("numpy==2.0.0", "keras==3.5.0", "tabulate==0.9.0")) == "b" * 16


def test_none_with_another_version_other_files_other_pieces_or_unfinished() -> None:
    stored("a" * 16, "numpy==1.26.4")  # a version the new one does not have: uv would replace it
    stored("b" * 16, "numpy==2.0.0", build="f" * 64)  # another base image, uv or build script
    stored("c" * 16, "numpy==2.0.0", digest="9")  # the same version, other files (another index)
    stored(f".build-{'d' * 16}-123", "numpy==2.0.0")  # being built
    assert envstore.seed(BUILD, lock("numpy==2.0.0", "tabulate==0.9.0")) is None


def test_none_holding_an_editable_package() -> None:
    stored("a" * 16, "numpy==2.0.0")
    (envstore.root() / "envs" / ("a" * 16) / "requirements.lock").write_text(
        "-e file:///src/mine\n" + lock("numpy==2.0.0")
    )  # the new lock may drop it, and uv would keep it
    assert envstore.seed(BUILD, lock("numpy==2.0.0", "tabulate==0.9.0")) is None


def test_an_environment_of_before_build_ids_is_passed_over() -> None:
    folder = envstore.root() / "envs" / ("d" * 16)
    folder.mkdir(parents=True)
    # Built before environments named the pieces that built them.
    (folder / "requirements.lock").write_text(lock("numpy==2.0.0"))
    assert envstore.seed(BUILD, lock("numpy==2.0.0")) is None


def test_the_seed_linked_whole_and_what_the_lock_adds(tmp_path: Path) -> None:
    stored("a" * 16, "numpy==2.0.0")
    package = envstore.root() / "envs" / ("a" * 16) / "lib" / "numpy" / "core.py"
    package.parent.mkdir(parents=True)
    package.write_text("x = 1\n")
    build = tmp_path / "build"
    build.mkdir()
    partial = envstore.root() / "envs" / envstore.partial_name("e" * 16)
    (partial / "left").mkdir(
        parents=True
    )  # a killed build's, of a process with this pid: cp would nest in it
    wanted = "--index-url https://example.org/simple\n" + lock("numpy==2.0.0", "tabulate==0.9.0")
    envstore.link_seed("a" * 16, build, wanted, "e" * 16)
    assert (build / "seeded").read_text() == "linked"
    # Only what the seed lacks, options kept: uv installs that much, without resolving anew.
    assert (build / "added.lock").read_text() == (
        f"--index-url https://example.org/simple\ntabulate==0.9.0 --hash=sha256:{'0' * 64}\n"
    )
    assert sorted(p.name for p in partial.iterdir()) == ["lib"]
    # A link, not a copy.
    assert (partial / "lib" / "numpy" / "core.py").stat().st_ino == package.stat().st_ino
    assert not (partial / "requirements.lock").exists() and not (partial / "build.id").exists()
    assert (envstore.root() / "envs" / ("a" * 16) / "requirements.lock").exists()  # the seed unchanged


def test_a_seed_gone_meanwhile_is_said_refused(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    envstore.link_seed("a" * 16, build, lock("numpy==2.0.0"), "e" * 16)
    # The build makes a venv of its own, and says why.
    assert (build / "seeded").read_text().startswith("refused")
