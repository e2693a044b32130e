"""Sweeps through the real launcher plugin and Hydra's sweepers, local backend, real MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import all_runs, interrupt_when_started, run_cli

pytestmark = pytest.mark.integration

TINY = ("backend=local", "env.requirements=[]")
# Exits 3 for seed 2 unless the project holds a file named `fixed` (the code snapshot is the working dir).
FLAKY = 'command="python -c \\"import os, sys; sys.exit(3 if ${train.seed} == 2 and not os.path.exists(\'fixed\') else 0)\\""'


def parent_and_children(project: Path):
    runs = all_runs(project)
    parents = [r for r in runs if r.data.tags.get("runner.role") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], kids


def test_two_by_two_keras_sweep(project: Path) -> None:
    proc = run_cli(
        project,
        "-m",
        "+experiment=keras_mlp",
        "backend=local",
        "train.epochs=1",
        "train.learning_rate=0.01,0.001",
        "model.dropout=0.25,0.5",
        "sweep.objective=test_accuracy",
        check=True,
    )
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["runner.sweeper"] == "basic"
    assert "train.learning_rate=0.01,0.001" in parent.data.tags["runner.sweep.overrides"]
    assert [k.info.status for k in kids] == ["FINISHED"] * 4
    pairs = {(k.data.params["train.learning_rate"], k.data.params["model.dropout"]) for k in kids}
    assert pairs == {("0.01", "0.25"), ("0.01", "0.5"), ("0.001", "0.25"), ("0.001", "0.5")}
    assert {k.data.tags["runner.sweep_id"] for k in kids} == {parent.data.tags["runner.sweep_id"]}
    assert all("test_accuracy" in k.data.metrics for k in kids)
    # each member ran on its own CPUs (2 slots on a 2-core machine, more elsewhere)
    assert "TEST_ACCURACY" in proc.stdout and proc.stdout.count("FINISHED") >= 5

    table = json.loads(
        run_cli(
            project, "compare", "--sweep", parent.data.tags["runner.sweep_id"], "--json", check=True
        ).stdout
    )
    assert table["objective"] == "test_accuracy"
    assert set(table["params"]) == {"train.learning_rate", "model.dropout"}
    values = [row["metrics"]["test_accuracy"] for row in table["rows"]]
    assert values == sorted(values, reverse=True) and len(values) == 4


def test_failing_member_is_reported_at_once_others_finish_parent_failed(project: Path) -> None:
    proc = run_cli(project, "-m", *TINY, FLAKY, "train.seed=1,2,3")
    assert proc.returncode == 1
    assert "member 2/3 FAILED: train.seed=2" in proc.stdout
    assert "    | [runner] run" in proc.stdout  # the last lines of its log, shown with the failure
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["runner.sweep.failed"] == "1"
    assert sorted((k.data.params["train.seed"], k.info.status) for k in kids) == [
        ("1", "FINISHED"),
        ("2", "FAILED"),
        ("3", "FINISHED"),
    ]
    assert "STATUS" in proc.stdout.splitlines()[-5]  # the summary table ends the output

    # resume runs only the member that did not finish, under the same parent
    (project / "fixed").write_text("")
    run_cli(project, "sweep", "resume", parent.data.tags["runner.sweep_id"], check=True)
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FINISHED"
    assert sorted(k.data.params["train.seed"] for k in kids) == ["1", "2", "2", "3"]


def test_fail_fast_stops_the_others(project: Path) -> None:
    cmd = "command=\"sh -c 'if [ ${train.seed} = 1 ]; then exit 5; fi; sleep 60'\""
    proc = run_cli(project, "-m", *TINY, cmd, "train.seed=1,2", "sweep.fail_fast=true", "sweep.parallel=2")
    assert proc.returncode == 1
    _, kids = parent_and_children(project)
    by_seed = {k.data.params["train.seed"]: k for k in kids}
    assert by_seed["1"].info.status == "FAILED"
    assert by_seed["2"].info.status == "KILLED"
    assert by_seed["2"].data.tags["runner.reason"] == "fail_fast: member 1 failed"


def test_sigint_kills_every_member_and_the_parent(project: Path) -> None:
    token = f"member-{time.time_ns()}"  # names this test's processes on a shared machine
    cmd = f"command=\"sh -c 'echo started {token}; sleep 120'\""
    code, out, _ = interrupt_when_started(
        project, "-m", *TINY, cmd, "train.seed=1,2", "sweep.parallel=2", runs=2
    )
    assert code == 130, out
    parent, kids = parent_and_children(project)
    assert parent.info.status == "KILLED"
    assert [k.info.status for k in kids] == ["KILLED", "KILLED"]
    assert not subprocess.run(["pgrep", "-f", token], capture_output=True, text=True).stdout.strip()


def test_optuna_three_trials_are_three_children(project: Path) -> None:
    score = 'command="python -c \\"import mlflow; mlflow.log_metric(\'score\', -(${train.learning_rate} - 0.05) ** 2)\\""'
    run_cli(
        project,
        "-m",
        *TINY,
        score,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "train.learning_rate=interval(0.001,0.1)",
        "sweep.objective=score",
        check=True,
    )
    parent, kids = parent_and_children(project)
    assert parent.data.tags["runner.sweeper"] == "optuna"
    assert len(kids) == 3 and all(k.info.status == "FINISHED" for k in kids)
    assert len({k.data.params["train.learning_rate"] for k in kids}) == 3
    assert all(k.data.metrics["score"] <= 0 for k in kids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("train.learnin_rate=0.1,0.2",), "Unknown key 'train.learnin_rate'. Did you mean 'learning_rate'?"),
        (
            ("train.epochs=2,abc",),
            "train.epochs: Value 'abc' of type 'str' could not be converted to Float",
        ),
        (("train.seed=1,2", "sweep.parallel=0"), "sweep.parallel: 0 must be at least 1"),
        (
            ("+experiment=keras_mlp", "train.seed=1,2", "sweep.objective=val_acc"),
            "sweep.objective: 'val_acc' is never logged by this model",
        ),
        (("hydra/sweeper=optuna", "train.learning_rate=interval(0.1,0.2)"), "set sweep.objective"),
        (("train.epochs=1,2", "no_such_group=x"), "Unknown key 'no_such_group'."),
        # What the runner's composition leaves to Hydra: refused before the sweep's parent run exists.
        (("--no-such-flag", "train.seed=1,2"), "'--no-such-flag' is not a flag Hydra takes"),
        (
            ("train.seed=1,2", "hydra.sweeper.nope=1"),
            "Hydra refuses the sweep: Could not override 'hydra.sweeper.nope' (Key 'nope' not in 'BasicSweeperConf')",
        ),
        (
            ("train.seed=1,2", "hydra/sweeper=nope"),
            "Could not find 'hydra/sweeper/nope'. Available: basic, optuna",
        ),
        (
            ("train.seed=1,2", "hydra.run.dir=["),
            "Hydra refuses the sweep: no viable alternative at input '['",
        ),
    ],
)
def test_bad_sweeps_fail_before_any_run(project: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_cli(project, "-m", "backend=local", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert all_runs(project) == []


def test_objective_never_logged_in_command_mode_fails_the_trial(project: Path) -> None:
    proc = run_cli(
        project,
        "-m",
        *TINY,
        "command=echo no-metric",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=1",
        "train.learning_rate=interval(0.1,0.2)",
        "sweep.objective=score",
    )
    parent, kids = parent_and_children(project)
    assert [k.info.status for k in kids] == ["FAILED"]
    assert kids[0].data.tags["runner.reason"] == "sweep.objective 'score' was never logged"
    assert parent.info.status == "FAILED", proc.stdout
    assert "sweep.objective 'score' was never logged" in proc.stdout


def test_a_sweep_whose_terminal_died_ends_lost_once_its_members_end(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cli = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runner",
            "-m",
            *TINY,
            "command=\"sh -c 'echo started; sleep 4'\"",
            "train.seed=1,2",
        ],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    logs = project / ".runner" / "runs"
    while sum("started" in p.read_text() for p in logs.glob("*/run.log")) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.kill(cli.pid, signal.SIGKILL)  # the sweep's driver dies; its two members go on under their owners
    cli.wait()
    while len(list(logs.glob("*/ended.json"))) < 2 and time.time() < deadline:
        time.sleep(0.3)
    parent, kids = parent_and_children(project)
    assert parent.info.status == "RUNNING"  # until a runner command looks
    run_cli(project, "ls", check=True)
    parent, kids = parent_and_children(project)
    assert sorted(k.info.status for k in kids) == ["FINISHED", "FINISHED"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["runner.reason"].startswith("lost: the sweep's runner process ended")
    assert f"runner sweep resume {parent.data.tags['runner.sweep_id']}" in parent.data.tags["runner.reason"]


def test_a_sweep_in_a_project_with_its_own_conf(project: Path) -> None:
    """`runner init` gives a project its own conf/: the runner's groups join Hydra's search path, and a sweep
    there runs as anywhere (it ended 'unrecognized arguments' when the search path came before `-m`)."""
    for folder in ("conf", "models"):  # a project of its own, as `runner init` finds one
        shutil.rmtree(project / folder)
    run_cli(project, "init", check=True)
    assert (project / "conf" / "experiment" / "example.yaml").is_file()
    refused = run_cli(project, "-m", *TINY, "command=python -c pass", "train.seed=1,2", "hydra.sweeper.x=1")
    assert refused.returncode == 2 and "Hydra refuses the sweep" in refused.stderr
    assert all_runs(project) == []  # no parent run left FAILED behind
    run_cli(project, "-m", *TINY, "command=python -c pass", "train.seed=1,2", check=True)
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FINISHED" and parent.data.params == {}
    assert sorted((k.data.params["train.seed"], k.info.status) for k in kids) == [
        ("1", "FINISHED"),
        ("2", "FINISHED"),
    ]
    # A member records its command and the value swept, not the trainer's defaults it never read.
    assert not [p for k in kids for p in k.data.params if p.startswith(("model.", "train.epochs", "sweep."))]
