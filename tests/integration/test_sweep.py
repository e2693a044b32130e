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
from mlflow import MlflowClient

from tests.helpers import RESUMABLE, all_runs, interrupt_when_started, run_cli, store

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
    assert "STATUS" in proc.stdout.splitlines()[-6]  # the summary table ends the output, with its account
    assert "trials 3: runs 3, reused 0, pruned 0, failed 1" in proc.stdout.splitlines()[-2]

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


def test_a_sweep_outlives_its_terminal_and_its_driver(project: Path) -> None:
    """The terminal's runner killed -9 once two members started, then the sweep's driver killed -9: the next
    runner command gives the sweep a new driver, which follows the members going and starts the rest; every
    member runs once and the sweep ends FINISHED."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    sleep = "command=\"sh -c 'echo started; sleep 3'\""
    cli = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, sleep, "train.seed=1,2,3,4", "sweep.parallel=2"],
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
    os.kill(cli.pid, signal.SIGKILL)  # the terminal's runner: the sweep goes on under its driver
    cli.wait()
    (folder,) = (project / ".runner" / "sweeps").iterdir()
    os.kill(json.loads((folder / "driver.json").read_text())["pid"], signal.SIGKILL)
    time.sleep(1)
    run_cli(project, "ls", check=True)  # a new driver takes the sweep over
    attached = run_cli(project, "attach", folder.name, timeout=300)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert "taken over" in attached.stdout
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FINISHED"
    assert sorted((k.data.params["train.seed"], k.info.status) for k in kids) == [
        (str(s), "FINISHED") for s in range(1, 5)
    ]
    assert parent.data.tags["runner.sweep.runs"] == "4"


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


def busy(kids: list, slots: int) -> float:
    """Sum of member durations / (slots x the sweep's span): 1.0 when no slot ever waits."""
    start = min(k.info.start_time for k in kids)
    end = max(k.info.end_time for k in kids)
    return sum(k.info.end_time - k.info.start_time for k in kids) / (slots * (end - start))


def test_optuna_trials_of_uneven_length_keep_both_slots_busy_with_the_terminal_gone(project: Path) -> None:
    """8 trials from 0.4 s to 8 s on 2 slots, the terminal's runner killed -9 once two members started: the sweep's
    driver asks for a new trial as soon as a slot frees (Hydra's sweeper waited for the slower of each pair), tells
    each trial as its member ends, and ends the sweep FINISHED with every trial accounted for."""
    work = 'command="python -c \\"import time, mlflow; time.sleep(${train.epochs} / 50); mlflow.log_metric(\'score\', ${train.epochs})\\""'
    args = ("hydra/sweeper=optuna", "hydra.sweeper.n_trials=8", "hydra.sweeper.sampler.seed=3")
    space = ("train.epochs=range(20,420,40)", "sweep.objective=score", "sweep.parallel=2")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    cli = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", *TINY, work, *args, *space],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    sweeps = project / ".runner" / "sweeps"
    while time.time() < deadline and "member 2/8 started" not in "".join(
        p.read_text() for p in sweeps.glob("*/sweep.log")
    ):
        time.sleep(0.1)
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait()
    (folder,) = sweeps.iterdir()
    proc = run_cli(project, "attach", folder.name, timeout=300, check=True)
    parent, kids = parent_and_children(project)
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert int(tags["runner.sweep.trials"]) == 8
    reused = json.loads(tags["runner.sweep.reuses"])
    assert int(tags["runner.sweep.runs"]) + len(reused) == 8 and int(tags["runner.sweep.reused"]) == len(
        reused
    )
    assert len(kids) == int(tags["runner.sweep.runs"]) and all(k.info.status == "FINISHED" for k in kids)
    assert busy(kids, 2) >= 0.9, busy(kids, 2)
    top = max(k.data.metrics["score"] for k in kids)
    (best,) = [k for k in kids if k.info.run_id == tags["runner.sweep.best_run"]]
    assert best.data.metrics["score"] == top == float(tags["runner.sweep.best_value"])
    assert json.loads(tags["runner.sweep.best_params"]) == {
        "train.epochs": float(best.data.params["train.epochs"])
    }
    for k in kids:  # each member shown with its own value
        assert f"train.epochs={float(k.data.params['train.epochs']):g} (run {k.info.run_id})" in proc.stdout
    for member, run_id in reused:  # a trial that repeated a finished one's values: that run answers for it
        (answering,) = [k for k in kids if k.info.run_id == run_id]
        assert str(member) in answering.data.tags["runner.sweep.reused_by"].split(",")
        assert " REUSED " in next(ln for ln in proc.stdout.splitlines() if ln.startswith(f"{member:>3}  "))
    assert f"best: member {tags['runner.sweep.best_member']} (run {best.info.run_id})" in proc.stdout


def test_a_median_pruner_stops_diverging_trials(project: Path) -> None:
    """Learning rates above 1 make the loss grow each epoch: the median pruner stops those trials, which end KILLED
    `pruned` with their epochs so far; the sweep says what that saved."""
    script = (
        "import time, mlflow\n"
        "lr = float(__import__('sys').argv[1])\n"
        "for epoch in range(12):\n"
        "    mlflow.log_metric('loss', (1 + lr) ** epoch if lr > 1 else 1 / (1 + epoch), step=epoch)\n"
        "    time.sleep(0.5)\n"
    )
    (project / "fit.py").write_text(script)
    proc = run_cli(
        project,
        "-m",
        *TINY,
        'command="python fit.py ${train.learning_rate}"',
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=6",
        "train.learning_rate=choice(0.01,0.02,0.03,2.0,3.0,4.0)",
        "sweep.objective=loss",
        "sweep.direction=minimize",
        "sweep.pruner=median",
        "sweep.parallel=1",
        check=True,
    )
    parent, kids = parent_and_children(project)
    pruned = [k for k in kids if k.info.status == "KILLED"]
    assert pruned and all(k.data.tags["runner.reason"] == "pruned" for k in pruned), proc.stdout
    assert all(float(k.data.params["train.learning_rate"]) > 1 for k in pruned)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["runner.sweep.pruned"] == str(len(pruned))
    assert "PRUNED" in proc.stdout and "of compute saved" in proc.stdout
    table = json.loads(
        run_cli(
            project, "compare", "--sweep", parent.data.tags["runner.sweep_id"], "--json", check=True
        ).stdout
    )
    statuses = [row["status"] for row in table["rows"]]
    assert statuses == ["FINISHED"] * (len(kids) - len(pruned)) + ["PRUNED"] * len(pruned)  # pruned ones last


def test_a_detached_sweep_is_followed_and_stopped_by_its_id(project: Path) -> None:
    """`detach=true` returns once the sweep's driver has it; `runner logs SWEEP_ID` shows its lines and `runner stop
    SWEEP_ID` ends every member, then the parent, KILLED."""
    sleep = "command=\"sh -c 'echo started; sleep 120'\""
    proc = run_cli(
        project, "-m", *TINY, sleep, "train.seed=1,2,3", "sweep.parallel=2", "detach=true", check=True
    )
    sweep_id = proc.stdout.split("[sweep ")[1].split("]")[0]
    assert f"runner attach {sweep_id}" in proc.stdout and f"runner stop {sweep_id}" in proc.stdout
    logs = project / ".runner" / "runs"
    deadline = time.time() + 120
    while sum("started" in p.read_text() for p in logs.glob("*/run.log")) < 2 and time.time() < deadline:
        time.sleep(0.2)
    said = run_cli(project, "logs", sweep_id, check=True).stdout
    assert "member 1/3 started: train.seed=1" in said and "member 2/3 started: train.seed=2" in said
    stopped = run_cli(project, "stop", sweep_id, check=True).stdout
    assert f"Sweep {sweep_id} stopped: it ends KILLED" in stopped
    parent, kids = parent_and_children(project)
    assert parent.info.status == "KILLED"
    assert sorted(k.info.status for k in kids) == ["KILLED", "KILLED"]  # the third never started
    assert all(k.data.tags["runner.reason"] == "stopped by runner stop" for k in kids)
    assert run_cli(project, "attach", sweep_id).returncode == 1  # it has ended: the table, then its ending


def test_a_member_its_machine_lost_goes_on_as_that_member(project: Path) -> None:
    """Every process of a running member killed (its owner, its shim, its code: as a machine's restart would):
    with `resources.max_attempts=2` it takes its next attempt as the same child run, and the sweep waits for it;
    no member is run twice, and each epoch is in its history once."""
    (project / "train.py").write_text(RESUMABLE)
    proc = run_cli(
        project,
        "-m",
        *TINY,
        "command=python train.py 10 0.4",
        "train.seed=1,2",
        "sweep.parallel=2",
        "resources.max_attempts=2",
        "detach=true",
        check=True,
    )
    sweep_id = proc.stdout.split("[sweep ")[1].split("]")[0]
    logs = project / ".runner" / "runs"
    deadline = time.time() + 180
    while not (hit := [p.parent for p in logs.glob("*/run.log") if '"step": 3}' in p.read_text()]):
        assert time.time() < deadline, "no member reached its fourth epoch"
        time.sleep(0.2)
    folder = hit[0]
    os.kill(json.loads((folder / "owner.json").read_text())["pid"], signal.SIGKILL)
    os.killpg(json.loads((folder / "process.json").read_text())["pid"], signal.SIGKILL)
    attached = run_cli(project, "attach", sweep_id, timeout=300)
    assert attached.returncode == 0, attached.stdout + attached.stderr
    parent, kids = parent_and_children(project)
    assert parent.info.status == "FINISHED" and parent.data.tags["runner.sweep.runs"] == "2"
    assert sorted(k.info.status for k in kids) == ["FINISHED", "FINISHED"]
    (lost,) = [k for k in kids if k.info.run_id == folder.name]
    assert lost.data.tags["runner.attempt"] == "2"
    assert lost.data.tags["runner.attempt.1"].startswith("FAILED: lost"), lost.data.tags
    history = MlflowClient(store(project)).get_metric_history(folder.name, "loss")
    assert sorted(m.step for m in history) == list(range(10))
