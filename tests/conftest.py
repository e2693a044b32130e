"""Shared fixtures: a real project in a temp dir (git repo), its data remote, a browser, the SLURM cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM, DRIVER, FLAGS, READER, ROOT, cluster_account, dvc, git


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A fresh project: a git repository of one commit, outside this one, holding this repository's examples
    (conf/ and models/) as a researcher's project would hold its own."""
    proj = tmp_path / "proj a'b"  # hostile characters: spaces and quotes must survive every path
    proj.mkdir()
    shutil.copy(ROOT / ".gitignore", proj / ".gitignore")
    for folder in ("conf", "models"):
        shutil.copytree(ROOT / folder, proj / folder, ignore=shutil.ignore_patterns("__pycache__"))
    git(proj, "init", "-q")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return proj


@pytest.fixture
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
        monkeypatch.setenv(var, "t")
    for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(var, "t@t")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return tmp_path / "remote store"


@pytest.fixture
def dproject(project: Path, remote: Path) -> Path:
    """A project with DVC and a local-directory remote of its own, and the reader script committed."""
    dvc(project, "init", "-q")
    dvc(project, "remote", "add", "-d", "store", str(remote))
    (project / "read.py").write_text(READER)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "dvc")
    return project


@pytest.fixture
def browser(tmp_path: Path):
    if not (shutil.which(CHROMIUM) and shutil.which(DRIVER)):
        if os.environ.get("RUNNER_REQUIRE_ALL"):
            raise AssertionError("chromium and chromium-driver are missing: ./setup.sh installs them")
        pytest.skip("no Chromium here; ./setup.sh installs Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The cluster's environment (SLURM_CONF), the cluster started (or found up) by the project's script; its
    tracking server's first user's account (alice's MLFLOW_TRACKING_USERNAME and PASSWORD) in this process's
    environment meanwhile (the tests' own MLflow calls), and her name, never her password, in the cluster's
    environment: SLURM keeps a job's environment, and no password may be there."""
    if os.geteuid() != 0 and not os.environ.get("RUNNER_REQUIRE_ALL"):
        pytest.skip("the cluster's daemons run as root; scripts/cluster.sh up starts them")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = os.environ.get("RUNNER_CLUSTER_DIR", "/tmp/runner-cluster")
    alice = cluster_account("alice")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in alice.items():
            patch.setenv(name, value)
        environ = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_PASSWORD"}
        yield {**environ, "SLURM_CONF": f"{folder}/etc/slurm.conf"}


@pytest.fixture(params=["local", "docker"])
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend that runs on this machine, in turn: the lifecycle's conformance cases run against both."""
    from tests.helpers import docker_engine

    if request.param == "docker":
        docker_engine()
    return str(request.param)
