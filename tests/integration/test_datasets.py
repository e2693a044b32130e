"""Datasets on a real git + DVC repository in a temp dir: versions, listing, mounts, clones, chaining."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from runner.datasets.repo import DataRepo
from tests.helpers import (
    all_runs,
    data,
    docker_engine,
    dvc,
    folder,
    git,
    only_run,
    read_artifact,
    run_cli,
    store,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("git_identity")]

LOCAL = ("backend=local", "env.requirements=[]")


V1 = {"a.txt": "one", "sub/b.txt": "bee"}
V2 = {"a.txt": "ONE", "sub/b.txt": "bee", "c.txt": "sea"}


def two_versions(project: Path, tmp_path: Path) -> None:
    src = folder(tmp_path / "src", V1)
    assert data(project, "add", "toy", str(src), "-m", "first cut").stdout.strip() == "toy@1"
    shutil.rmtree(src)
    folder(src, V2)
    assert data(project, "add", "toy", str(src)).stdout.strip() == "toy@2"


def dvc_md5_of(folder_path: Path, tmp_path: Path) -> str:
    """What `dvc add` reports for this folder on its own, in a repository of its own."""
    repo = tmp_path / "check"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir()
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    shutil.copytree(folder_path, repo / "d")
    dvc(repo, "add", "-q", "d")
    return str(yaml.safe_load((repo / "d.dvc").read_text())["outs"][0]["md5"])


def test_add_versions_dedupe_and_list(dproject: Path, tmp_path: Path, remote: Path) -> None:
    two_versions(dproject, tmp_path)
    again = data(dproject, "add", "toy", str(tmp_path / "src"))
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "toy@2"
    assert "identical to the latest version toy@2" in again.stdout
    (tmp_path / "one.csv").write_text("x,y\n1,2\n")
    assert data(dproject, "add", "single", str(tmp_path / "one.csv")).stdout.strip() == "single@1"

    assert git(dproject, "tag", "-l", "data/*").split() == ["data/single/v1", "data/toy/v1", "data/toy/v2"]
    assert git(dproject, "status", "--porcelain", "data.dvc", ".dvc") == ""  # committed
    assert git(dproject, "show", "data/toy/v1:data.dvc") != git(dproject, "show", "data/toy/v2:data.dvc")
    listing = json.loads(data(dproject, "ls", "--json").stdout)
    assert [(v["name"], v["number"], v["files"], v["size"]) for v in listing] == [
        ("single", 1, 1, 8),
        ("toy", 1, 2, 6),
        ("toy", 2, 3, 9),
    ]
    toy1 = listing[1]
    assert (
        toy1["message"] == "first cut" and toy1["rev"] == git(dproject, "rev-parse", "data/toy/v1^{}").strip()
    )
    assert listing[2]["md5"] == dvc_md5_of(tmp_path / "src", tmp_path)  # src holds v2 now
    table = data(dproject, "ls", "toy").stdout
    assert "toy@1" in table and "toy@2" in table and "single" not in table and toy1["md5"] in table
    unknown = data(dproject, "ls", "tyo")
    assert unknown.returncode == 2 and "Did you mean 'toy'? Datasets: single, toy." in unknown.stderr
    assert any(remote.rglob("*.dir"))  # pushed to the project's remote


def test_first_add_initialises_dvc_and_the_default_remote(project: Path, tmp_path: Path) -> None:
    env_cache = tmp_path / "cache"
    os.environ["RUNNER_CACHE"] = str(env_cache)
    try:
        out = data(project, "add", "toy", str(folder(tmp_path / "src", V1)))
    finally:
        del os.environ["RUNNER_CACHE"]
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "toy@1"  # DVC's own hints are not printed
    config = (project / ".dvc" / "config").read_text()
    assert f"url = {env_cache / 'dvc-remote'}" in config and "remote = runner" in config
    assert ".dvc/config" in git(project, "show", "--name-only", "--format=", "HEAD")
    assert any((env_cache / "dvc-remote").rglob("*.dir"))


def test_bad_adds_change_nothing(dproject: Path, tmp_path: Path) -> None:
    head = git(dproject, "rev-parse", "HEAD")
    for args, message in [
        (("toy", str(tmp_path / "nope")), "does not exist"),
        (("to/y", str(tmp_path)), "is not allowed"),
        (("toy", str(folder(tmp_path / "empty", {}))), "holds no files"),
        (("toy",), "Give a PATH or --from-run"),
    ]:
        proc = data(dproject, "add", *args)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert git(dproject, "rev-parse", "HEAD") == head and not (dproject / "data.dvc").exists()


def test_mount_each_version_locally_and_record_it(dproject: Path, tmp_path: Path) -> None:
    two_versions(dproject, tmp_path)
    run_cli(dproject, *LOCAL, "command=python read.py /input/toy", "data=[toy@latest]", check=True)
    run = only_run(dproject)
    assert json.loads(read_artifact(dproject, run.info.run_id, "output/seen.json")) == {"/input/toy": V2}
    tags = run.data.tags
    v2 = json.loads(data(dproject, "ls", "--json").stdout)[1]
    assert (tags["runner.data"], tags["runner.data.toy.version"]) == ("toy@2:/input/toy", "2")
    assert tags["runner.data.toy.md5"] == v2["md5"] == dvc_md5_of(tmp_path / "src", tmp_path)
    assert tags["runner.data.toy.rev"] == v2["rev"]
    assert (tags["runner.data.toy.files"], tags["runner.data.toy.size"]) == ("3", "9")
    (inp,) = MlflowClient(store(dproject)).get_run(run.info.run_id).inputs.dataset_inputs
    assert (inp.dataset.name, inp.dataset.digest, inp.dataset.source_type) == ("toy", v2["md5"], "dvc")

    # the read-only copy, once per checksum, hard-linked from the DVC cache
    copy = dproject / ".runner" / "datasets" / v2["md5"].removesuffix(".dir")
    linked = dproject / ".runner" / "runs" / run.info.run_id / "input" / "toy"
    assert linked.is_symlink() and linked.resolve() == copy
    assert stat.S_IMODE(copy.stat().st_mode) == 0o555
    assert stat.S_IMODE((copy / "a.txt").stat().st_mode) == 0o444 and (copy / "a.txt").stat().st_nlink >= 2

    # version 1 by number and by git rev, at a mount point of its own
    rev = git(dproject, "rev-parse", "data/toy/v1^{}").strip()
    for version in ("1", rev[:10]):
        run_cli(
            dproject,
            *LOCAL,
            "command=python read.py /data/old",
            f"data=[toy@{version}:/data/old]",
            check=True,
        )
        run = latest_run(dproject)
        assert json.loads(read_artifact(dproject, run.info.run_id, "output/seen.json")) == {"/data/old": V1}
        assert run.data.tags["runner.data.toy.version"] == "1"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("data=[nope@1]", "Unknown dataset 'nope'. Datasets: toy."),
        ("data=[toy@7]", "Dataset 'toy' has no version '7'. Versions: toy@1, toy@2"),
        ("data=[toy@no-such-rev]", "Dataset 'toy' has no version 'no-such-rev'"),
        ("data=[toy:/input]", "'toy:/input' has no version"),
        ("data=[toy@1:/harness]", "taken in a local run's directory"),
    ],
)
def test_bad_mounts_fail_before_a_run(dproject: Path, tmp_path: Path, entry: str, message: str) -> None:
    two_versions(dproject, tmp_path)
    proc = run_cli(dproject, *LOCAL, "command=true", entry)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert all_runs(dproject) == []


def latest_run(project: Path):
    return max(all_runs(project), key=lambda r: r.info.start_time)


def clone(project: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(dest)], check=True)
    return dest


def test_a_clone_without_the_cache_pulls_from_the_remote(dproject: Path, tmp_path: Path) -> None:
    two_versions(dproject, tmp_path)
    copy = clone(dproject, tmp_path)
    assert not (copy / ".dvc" / "cache").exists()
    assert "toy@2" in data(copy, "ls").stdout  # versions are tags: no data needed to list them
    run_cli(copy, *LOCAL, "command=python read.py /input", "data=[toy@1:/input]", check=True)
    run = only_run(copy)
    assert json.loads(read_artifact(copy, run.info.run_id, "output/seen.json")) == {"/input": V1}
    assert any((copy / ".dvc" / "cache").rglob("*"))
    # and the clone can make the next version (its data/ is pulled first, so nothing else is lost)
    assert data(copy, "add", "more", str(folder(tmp_path / "m", {"m": "m"}))).stdout.strip() == "more@1"
    assert sorted(p.name for p in (copy / "data").iterdir()) == ["more", "toy"]


def test_a_run_waits_for_another_runs_fetch(dproject: Path, tmp_path: Path) -> None:
    """Runs that fetch at once (a sweep's members): one waits for the other's fetch, however long it takes,
    where DVC's own lock gives up after 3 s."""
    two_versions(dproject, tmp_path)
    copy = clone(dproject, tmp_path)
    repo = DataRepo(copy)
    with ThreadPoolExecutor(max_workers=1) as pool:
        with repo.lock(), repo.dvc.lock:  # as a fetch in progress holds them
            started = time.monotonic()
            waiting = pool.submit(
                run_cli, copy, *LOCAL, "command=python read.py /input", "data=[toy@1:/input]", check=True
            )
            time.sleep(6)
            assert not waiting.done(), waiting.exception()
        waiting.result()
    assert time.monotonic() - started > 6
    run = only_run(copy)
    assert json.loads(read_artifact(copy, run.info.run_id, "output/seen.json")) == {"/input": V1}


def test_missing_or_damaged_remote_data_is_refused(dproject: Path, tmp_path: Path, remote: Path) -> None:
    two_versions(dproject, tmp_path)
    v1 = json.loads(data(dproject, "ls", "--json").stdout)[0]
    a_txt = next(p for p in (remote / "files" / "md5").rglob("*") if p.is_file() and p.read_text() == "one")
    a_txt.chmod(0o644)
    a_txt.write_text("two")  # damaged in the remote
    copy = clone(dproject, tmp_path)
    proc = run_cli(copy, *LOCAL, "command=true", "data=[toy@1]")
    assert proc.returncode == 2 and "a.txt has md5" in proc.stderr and "nothing was mounted" in proc.stderr
    assert all_runs(copy) == []
    assert not (copy / ".runner" / "datasets" / v1["md5"].removesuffix(".dir")).exists()

    shutil.rmtree(remote)  # gone from the remote too
    proc = run_cli(copy, *LOCAL, "command=true", "data=[toy@1]")
    assert proc.returncode == 2 and f"the DVC remote 'store ({remote})'" in proc.stderr
    assert all_runs(copy) == []


def test_from_run_round_trips_a_runs_output(dproject: Path, tmp_path: Path) -> None:
    (dproject / "make.py").write_text(
        "import os, pathlib\nout = pathlib.Path(os.environ['RUNNER_OUTPUT'])\n"
        "(out / 'parts').mkdir()\n(out / 'parts' / 'p.txt').write_text('made')\n"
    )
    run_cli(dproject, *LOCAL, "command=python make.py", check=True)
    run_id = only_run(dproject).info.run_id
    assert data(dproject, "add", "made", "--from-run", run_id).stdout.strip() == "made@1"
    (made,) = json.loads(data(dproject, "ls", "made", "--json").stdout)
    assert made["from_run"] == run_id and made["files"] == 1
    assert f"(run {run_id})" in data(dproject, "ls", "made").stdout
    # the run directory gone: the MLflow artifacts are used instead, and give the same version
    shutil.rmtree(dproject / ".runner" / "runs" / run_id)
    again = data(dproject, "add", "made", "--from-run", run_id)
    assert again.stdout.splitlines()[-1] == "made@1" and "identical" in again.stdout
    run_cli(dproject, *LOCAL, "command=python read.py /input/made", "data=[made@1]", check=True)
    last = latest_run(dproject)
    assert json.loads(read_artifact(dproject, last.info.run_id, "output/seen.json")) == {
        "/input/made": {"parts/p.txt": "made"}
    }
    bad = data(dproject, "add", "made", "--from-run", "0" * 32)
    assert bad.returncode == 2 and "No run 0000" in bad.stderr


def test_import_checks_published_checksums_and_kaggle_layout(dproject: Path, tmp_path: Path) -> None:
    fake = folder(
        tmp_path / "mirror",
        {
            "train-images-idx3-ubyte.gz": "x",
            "train-labels-idx1-ubyte.gz": "x",
            "t10k-images-idx3-ubyte.gz": "x",
            "t10k-labels-idx1-ubyte.gz": "x",
        },
    )
    proc = data(dproject, "import", "mnist", "--from", str(fake))
    assert proc.returncode == 2 and "but the published sum is" in proc.stderr
    assert not (dproject / "data.dvc").exists() and git(dproject, "tag", "-l") == ""

    header = ",".join(f"pixel{i}" for i in range(784))
    kaggle = folder(
        tmp_path / "kaggle",
        {
            "train.csv": f"label,{header}\n3,{','.join(['0'] * 784)}\n",
            "test.csv": f"{header}\n{','.join(['0'] * 784)}\n",
        },
    )
    assert data(dproject, "import", "digits", "--from", str(kaggle)).stdout.strip() == "digits@1"
    (digits,) = json.loads(data(dproject, "ls", "digits", "--json").stdout)
    assert digits["files"] == 2 and "Kaggle digit-recognizer" in digits["message"]
    (kaggle / "test.csv").write_text("id,pixels\n")
    proc = data(dproject, "import", "digits", "--from", str(kaggle))
    assert proc.returncode == 2 and "not Kaggle's digit-recognizer layout" in proc.stderr


@pytest.mark.docker
def test_docker_mounts_each_version_read_only(dproject: Path, tmp_path: Path) -> None:
    docker_engine()
    two_versions(dproject, tmp_path)
    docker_run = ("backend=docker", "env.requirements=[]")
    run_cli(
        dproject,
        *docker_run,
        "+env.variables.TRY_WRITE=1",
        "command=python read.py /input",
        "data=[toy@1:/input]",
        check=True,
    )
    seen = json.loads(read_artifact(dproject, only_run(dproject).info.run_id, "output/seen.json"))
    assert seen == {"/input": V1, "write": "Read-only file system"}
    run_cli(dproject, *docker_run, "command=python read.py /input/toy", "data=[toy@2]", check=True)
    seen = json.loads(read_artifact(dproject, latest_run(dproject).info.run_id, "output/seen.json"))
    assert seen == {"/input/toy": V2}
