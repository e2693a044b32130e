"""The Docker backend on the real engine: fresh containers, cached env images, limits and endings."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import (
    all_runs,
    artifacts,
    docker_engine,
    interrupt_when_started,
    only_run,
    read_artifact,
    run_cli,
    store,
)

pytestmark = [pytest.mark.integration, pytest.mark.docker]

TINY = ("backend=docker", "env.requirements=[]")  # the harness's own packages only


@pytest.fixture(autouse=True)
def engine():
    return docker_engine()


def containers_of(client, run_id: str) -> list:
    return client.containers.list(all=True, filters={"label": f"runner.run_id={run_id}"})


def env_images(client) -> dict[str, str]:
    return {i.id: i.attrs["Created"] for i in client.images.list(filters={"label": "runner.image.kind=env"})}


def test_keras_mlp_in_a_container(project: Path, engine) -> None:
    proc = run_cli(project, "+experiment=keras_mlp", "train.epochs=2", check=True)
    assert "Epoch 2/2" in proc.stdout
    run = only_run(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["runner.backend"] == "docker"
    # The environment is a folder of the store, mounted on the harness image (the base with the runner's pieces).
    assert run.data.tags["runner.image"].startswith("runner-harness:")
    assert run.data.tags["runner.image.id"] == engine.images.get(run.data.tags["runner.image"]).id
    assert (Path(run.data.tags["runner.env.folder"]) / "bin" / "python").is_symlink()
    assert run.data.tags["runner.image.base"].startswith("runner-base:bookworm@sha256:")
    assert [m.step for m in MlflowClient(store(project)).get_metric_history(run.info.run_id, "loss")] == [
        0,
        1,
    ]
    assert "test_accuracy" in run.data.metrics
    assert {"output/model.keras", "run.log", "requirements.lock"} <= artifacts(project, run.info.run_id)
    assert containers_of(engine, run.info.run_id) == []  # removed after the run


def test_container_layout_user_and_tracking(project: Path, engine) -> None:
    (project / "probe.py").write_text(
        "import os, mlflow\n"
        "ro = os.access('/code', os.W_OK)\n"
        "try:\n    open('/code/x', 'w').write('written'); ro = 'writable'\nexcept OSError:\n    ro = 'read-only'\n"
        "open('/output/probe.txt', 'w').write(f\"{os.getcwd()} {ro} {os.getuid()}:{os.getgid()}\")\n"
        "mlflow.log_metric('from_user_code', 7.0)\n"
    )
    run_cli(project, *TINY, "command=python probe.py", check=True)
    run = only_run(project)
    assert run.info.status == "FINISHED"
    assert (
        read_artifact(project, run.info.run_id, "output/probe.txt")
        == f"/code writable {os.getuid()}:{os.getgid()}"
    )
    assert read_artifact(project, run.info.run_id, "workdir/x") == "written"  # kept, as a file of its own
    assert not (project / "x").exists()  # the run wrote into its own copy of the code, not the project
    out = project / ".runner" / "runs" / run.info.run_id / "output" / "probe.txt"
    assert (out.stat().st_uid, out.stat().st_gid) == (os.getuid(), os.getgid())
    assert run.data.metrics["from_user_code"] == 7.0  # a user's own mlflow call lands in the same run


def test_second_run_builds_nothing_and_code_changes_never_rebuild(project: Path, engine) -> None:
    run_cli(project, *TINY, "command=echo one", check=True)
    before = env_images(engine)
    (project / "extra.py").write_text("X = 1\n")  # a code change
    run_cli(project, *TINY, "command=echo two", check=True)
    assert env_images(engine) == before  # no image built or re-tagged
    first, second = sorted(all_runs(project), key=lambda r: r.info.start_time)
    assert first.data.tags["runner.image.id"] == second.data.tags["runner.image.id"]
    assert second.data.tags["runner.env.reused"] == "true"


def test_env_change_builds_a_new_image_with_setup_baked_in(project: Path, engine) -> None:
    stamp = f"setup-{time.time_ns()}"
    run_cli(
        project,
        *TINY,
        f"env.setup=['echo {stamp} > /opt/env/stamp']",
        "command=cat /opt/env/stamp",
        check=True,
    )
    run = only_run(project)
    assert run.data.tags["runner.env.reused"] == "false"
    assert stamp in read_artifact(project, run.info.run_id, "run.log")


def test_memory_limit_oom_is_failed_oomkilled(project: Path, engine) -> None:
    hog = "python -c 'b = [bytearray(16 << 20) for _ in range(64)]'"  # 1 GiB against a 96 MiB limit
    run_cli(project, *TINY, "resources.memory=96m", f'command="{hog}"')
    run = only_run(project)
    assert run.info.status == "FAILED"
    assert run.data.tags["runner.reason"] == "OOMKilled"
    assert containers_of(engine, run.info.run_id) == []


def test_keep_container_labels_it_with_the_run_id(project: Path, engine) -> None:
    run_cli(project, *TINY, "backend.keep_container=true", "command=echo kept", check=True)
    run = only_run(project)
    kept = containers_of(engine, run.info.run_id)
    try:
        assert len(kept) == 1 and kept[0].labels["runner.container.kind"] == "run"
    finally:
        for c in kept:
            c.remove(force=True)


def test_secrets_reach_the_run_by_name_and_are_never_recorded(project: Path, engine, monkeypatch) -> None:
    secret = "s3cr3t-value-4711"
    monkeypatch.setenv("RUNNER_TEST_TOKEN", secret)
    check = 'command="sh -c \'printf %s \\"$RUNNER_TEST_TOKEN\\" | sha256sum > /output/m\'"'
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *TINY, "env.secrets=[RUNNER_TEST_TOKEN]", check],
        cwd=project,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
    )
    assert proc.returncode == 0, proc.stderr
    run = only_run(project)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    assert read_artifact(project, run.info.run_id, "output/m").split()[0] == digest  # the run saw the value
    recorded = [
        *run.data.params.values(),
        *run.data.tags.values(),
        read_artifact(project, run.info.run_id, "run.log"),
        read_artifact(project, run.info.run_id, "config.yaml"),
    ]
    assert not any(secret in text for text in recorded)


def test_ca_bundle_is_what_runs_trust(project: Path, engine, tmp_path: Path) -> None:
    fetch = 'command="python -c \'import urllib.request as u; u.urlopen(\\"https://pypi.org/simple/six/\\", timeout=30)\'"'
    run_cli(project, *TINY, fetch, check=True)  # the host's CA (PIP_CERT) makes the proxy trusted
    # A real CA bundle of one public root (Mozilla's, as Debian ships it), without the proxy's CA.
    root = sorted(Path("/usr/share/ca-certificates/mozilla").glob("*.crt"))[0]
    other = tmp_path / "one-root.pem"
    other.write_text(root.read_text())
    proc = run_cli(project, *TINY, f"env.ca_bundle={other}", fetch)
    assert proc.returncode == 1
    failed = [r for r in all_runs(project) if r.info.status == "FAILED"]
    assert "CERTIFICATE_VERIFY_FAILED" in read_artifact(project, failed[0].info.run_id, "run.log")


def test_parallel_runs_lose_no_metric(project: Path, engine, tmp_path: Path) -> None:
    n = 150
    (project / "many.py").write_text(
        "from mlflow import MlflowClient\nimport os\nc = MlflowClient()\n"
        f"for i in range({n}):\n    c.log_metric(os.environ['MLFLOW_RUN_ID'], 'm', float(i), step=i)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    outs = [tmp_path / f"out{i}.txt" for i in range(3)]
    procs = []
    for out in outs:
        with out.open("wb") as sink:
            cmd = [sys.executable, "-m", "runner", *TINY, "command=python many.py"]
            procs.append(subprocess.Popen(cmd, cwd=project, env=env, stdout=sink, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=600) for p in procs]
    owners = [log.read_text(errors="replace") for log in (project / ".runner" / "runs").glob("*/owner.log")]
    said = [out.read_text(errors="replace")[-3000:] for out in outs] + [log[-3000:] for log in owners if log]
    assert codes == [0, 0, 0], "\n".join(said)
    client = MlflowClient(store(project))
    runs = all_runs(project)
    assert len(runs) == 3
    for run in runs:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "m")) == list(range(n))


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            (*TINY, "env.gpu=true", "command=echo x"),
            {},
            "env.gpu=true, but this Docker engine has no NVIDIA runtime",
        ),
        (
            (*TINY, "env.image=runner-no-such-base:1", "command=echo x"),
            {},
            "runner image base --tag runner-no-such-base:1",
        ),
        (
            (*TINY, "command=echo x"),
            {"DOCKER_HOST": "unix:///nonexistent.sock"},
            "No Docker engine answers at unix:///nonexistent.sock. Start one",
        ),
        ((*TINY, "resources.memory=lots"), {}, "resources.memory: 'lots' is not a size"),
        (
            (*TINY, "env.requirements_file=floyd_requirements.txt"),
            {},
            "floyd_requirements.txt does not exist",
        ),
        ((*TINY, 'env.requirements=["tensorflow-cpu==0.0.1"]'), {}, "Requirements do not resolve"),
    ],
)
def test_bad_input_fails_before_anything(project: Path, engine, args, env, message) -> None:
    before = {c.id for c in engine.containers.list(all=True)}
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=project,
        env={**base, **env},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert all_runs(project) == []
    assert {c.id for c in engine.containers.list(all=True)} == before


def test_sweep_of_containers_each_on_its_own_cpus(project: Path, engine) -> None:
    cmd = "command=\"sh -c 'cat /sys/fs/cgroup/cpuset/cpuset.cpus /sys/fs/cgroup/cpuset.cpus.effective > /output/cpus 2>/dev/null; true'\""
    run_cli(project, "-m", *TINY, cmd, "train.seed=1,2", "train.epochs=1,2", "sweep.parallel=2", check=True)
    runs = all_runs(project)
    parent = next(r for r in runs if r.data.tags.get("runner.role") == "sweep")
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and [k.info.status for k in kids] == ["FINISHED"] * 4
    cpus = {read_artifact(project, k.info.run_id, "output/cpus").strip() for k in kids}
    host = len(os.sched_getaffinity(0))
    assert len(cpus) == min(2, host), cpus  # two slots, each its own CPU set
    assert all(containers_of(engine, k.info.run_id) == [] for k in kids)


def test_sigint_to_a_container_sweep_leaves_no_container(project: Path, engine) -> None:
    cmd = "command=\"sh -c 'echo started; sleep 300'\""
    code, out, _ = interrupt_when_started(
        project, "-m", *TINY, cmd, "train.seed=1,2", "sweep.parallel=2", runs=2
    )
    assert code == 130, out
    runs = all_runs(project)
    assert sorted(r.info.status for r in runs) == ["KILLED"] * 3  # the parent and both members
    assert [c for r in runs for c in containers_of(engine, r.info.run_id)] == []


def test_gc_removes_what_the_runner_made_and_says_how_much(project: Path, engine) -> None:
    # Kept last among the Docker tests: it removes every env image no container uses.
    # An image of its own (env.setup), a container of it kept.
    run_cli(
        project,
        *TINY,
        'env.setup=["echo kept"]',
        "backend.keep_container=true",
        "command=echo kept",
        check=True,
    )
    kept_run = only_run(project)
    kept = containers_of(engine, kept_run.info.run_id)
    assert len(kept) == 1
    used_env = kept_run.data.tags["runner.image"]
    # A second environment that no container uses once its run is over: gc's to remove.
    run_cli(project, *TINY, 'env.setup=["echo another environment"]', "command=echo other", check=True)
    unused_env = next(
        r.data.tags["runner.image"] for r in all_runs(project) if r.info.run_id != kept_run.info.run_id
    )
    assert unused_env != used_env
    # Not the runner's, all made from runner images (they inherit those images' labels): each must survive.
    foreign = [
        engine.containers.create("runner-base:bookworm", ["true"]),
        engine.containers.create(used_env, ["true"]),
        engine.containers.run("runner-base:bookworm", ["sleep", "300"], detach=True, init=True),
    ]
    user_image = foreign[1].commit("runner-gc-test-user", "1")  # a user's own image derived from an env image
    # A harness image no env image builds on any more (the runner's in-run packages of an older version).
    maker = engine.containers.run("runner-base:bookworm", ["sh", "-c", "echo stale > /stale"], detach=True)
    maker.wait()
    stale = maker.commit("runner-harness", "stale", changes=["LABEL runner.image.kind=harness"])
    maker.remove()
    try:
        proc = run_cli(project, "gc", check=True)
        # The kept one at least (a machine may hold ended runner containers of other projects: gc takes those too).
        said = re.search(
            r"Removed (\d+) container\(s\) and [1-9]\d* image\(s\); freed [\d.]+ MB", proc.stdout
        )
        assert said and int(said.group(1)) >= 1, proc.stdout
        assert containers_of(engine, kept_run.info.run_id) == []
        for container in foreign:
            container.reload()  # raises NotFound if gc removed it
        assert foreign[2].status == "running"
        assert engine.images.get(user_image.id).tags == ["runner-gc-test-user:1"]
        # Every env image no container uses is gone; the one a foreign container uses is kept.
        assert {i.id for i in engine.images.list(name="runner-env")} == {engine.images.get(used_env).id}
        assert unused_env not in {t for i in engine.images.list(name="runner-env") for t in i.tags}
        # The harness image a kept env image is built on stays; one nothing builds on goes.
        harness_images = {i.id for i in engine.images.list(name="runner-harness")}
        assert kept_run.data.tags["runner.image.harness"] in harness_images and stale.id not in harness_images
    finally:
        for container in foreign:
            container.remove(force=True)
        engine.images.remove(user_image.id, force=True)
