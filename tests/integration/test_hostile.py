"""Untrusted runs and configs: what a run writes cannot pull host files into the record, and config values
that would reach mounts or the record are refused in one line, before any run exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import all_runs, docker_engine, run_cli
from tests.integration.test_local_run import artifacts, only_run, read_artifact

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["docker", "local"])
def test_links_in_the_output_are_never_followed_into_the_record(
    project: Path, tmp_path: Path, backend: str
) -> None:
    if backend == "docker":
        docker_engine()
    secret = tmp_path / "host-secret.txt"
    secret.write_text("the host's secret")
    (project / "links.sh").write_text(
        'cd "$RUNNER_OUTPUT"\n'
        f"ln -s '{secret}' leak\n"  # a host file, named from inside the run
        f"ln -s '{tmp_path}' leakdir\n"
        "mkdir sub && echo kept > sub/result.txt\n"
    )
    run_cli(project, f"backend={backend}", "env.requirements=[]", "command=sh links.sh", check=True)
    run = only_run(project)
    kept = artifacts(project, run.info.run_id, "output") | artifacts(project, run.info.run_id, "output/sub")
    assert "output/sub/result.txt" in kept
    assert not {"output/leak", "output/leakdir"} & kept
    assert read_artifact(project, run.info.run_id, "output/sub/result.txt").strip() == "kept"
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "output/leak: a link or special file, not kept" in log
    assert "the host's secret" not in log


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("+env.variables={A@B%:1}",), "'env.variables.A@B%' cannot name a recorded param"),
        (
            ("env.ca_bundle=/var/run/docker.sock",),
            "/var/run/docker.sock is not a regular file",
        ),
        (("env.ca_bundle=key.pem",), "is not a CA bundle (PEM certificates, no private key)"),
        # Hydra builds nested nodes too: a target inside the model value is checked like the model's own.
        (
            ("+model.extra={_target_:builtins.exec,_args_:[x]}", "command=null"),
            "model.extra._target_ 'builtins.exec' is not allowed (Hydra would build it)",
        ),
        (("dataset._target_=os.system", "command=null"), "dataset._target_ 'os.system' is not allowed"),
        (("train.batch_size=0",), "train.batch_size: 0 must be at least 1."),
        (("evaluate=5",), "evaluate: '5' is not a report node."),
        # A local run maps mounts into its run directory: a mount may not take the owner's files there.
        (
            ("data=[mnist@1:/settled.json]",),
            "data: mount point '/settled.json' is taken in a local run's directory",
        ),
        (("data=[mnist@1:/record/x]",), "data: mount point '/record/x' is taken in a local run's directory"),
    ],
)
def test_config_values_that_would_reach_a_mount_or_the_record_are_refused(
    project: Path, args: tuple[str, ...], message: str
) -> None:
    (project / "key.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n-----BEGIN PRIVATE KEY-----\ny\n")
    proc = run_cli(project, "backend=local", "command=true", *args)  # the last command= wins
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert all_runs(project) == []


def test_a_container_run_has_no_capability_and_cannot_gain_one(project: Path) -> None:
    docker_engine()
    command = "command=\"grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status\""
    run_cli(project, "backend=docker", "env.requirements=[]", command, check=True)
    log = read_artifact(project, only_run(project).info.run_id, "run.log")
    assert "CapEff:\t0000000000000000" in log
    assert "CapPrm:\t0000000000000000" in log
    assert "NoNewPrivs:\t1" in log
