"""End to end with the local backend against a real MLflow store in a temp project."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import all_runs, git, interrupt_when_started, run_cli, store

pytestmark = pytest.mark.integration

TINY = ("backend=local", "env.requirements=[]")  # the harness's own packages only: quick to build


def only_run(project: Path):
    runs = all_runs(project)
    assert len(runs) == 1, [r.info.status for r in runs]
    return runs[0]


def artifacts(project: Path, run_id: str, path: str = "") -> set[str]:
    client = MlflowClient(store(project))
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifacts(project, run_id, f.path) if f.is_dir else {f.path}
    return out


def read_artifact(project: Path, run_id: str, path: str) -> str:
    return Path(MlflowClient(store(project)).download_artifacts(run_id, path)).read_text()


def test_keras_mlp_end_to_end(project: Path) -> None:
    proc = run_cli(
        project, "+experiment=keras_mlp", "backend=local", "train.epochs=3", "train.seed=5", check=True
    )
    assert "Epoch 3/3" in proc.stdout  # streamed live to the terminal
    run = only_run(project)
    client = MlflowClient(store(project))
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "3.0"
    assert run.data.params["model.units"] == "64"
    assert run.data.params["model.parameters"] == "5569"
    assert run.data.tags["mlflow.source.git.commit"] == git(project, "rev-parse", "HEAD").strip()
    assert run.data.tags["runner.git.dirty"] == "false"
    assert run.data.tags["runner.experiment"] == "keras_mlp"
    assert run.data.tags["runner.seed"] == "5"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert {"config.yaml", "run.log", "requirements.lock", "packages.txt", "output/model.keras"} <= artifacts(
        project, run.info.run_id
    )
    assert "epochs: 3.0" in read_artifact(project, run.info.run_id, "config.yaml")
    assert "keras==" in read_artifact(project, run.info.run_id, "packages.txt")
    assert "Epoch 3/3" in read_artifact(project, run.info.run_id, "run.log")


def test_command_mode_records_outputs_diff_and_user_metrics(project: Path) -> None:
    (project / "train.py").write_text(
        "import os, mlflow\n"
        "open(os.path.join(os.environ['RUNNER_OUTPUT'], 'result.txt'), 'w').write('42')\n"
        "mlflow.log_metric('custom', 1.5)\n"
        "print('cwd', os.getcwd())\n"
    )
    run_cli(project, *TINY, "command=python train.py", check=True)
    run = only_run(project)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["custom"] == 1.5  # the user's own mlflow call logged into the same run
    assert run.data.tags["runner.git.dirty"] == "true"
    assert "+open(os.path.join" in read_artifact(project, run.info.run_id, "code.diff")
    assert read_artifact(project, run.info.run_id, "output/result.txt") == "42"
    assert f"cwd {project / '.runner' / 'runs' / run.info.run_id / 'code'}" in read_artifact(
        project, run.info.run_id, "run.log"
    )


def test_second_run_of_an_env_builds_nothing(project: Path) -> None:
    for _ in range(2):
        run_cli(project, *TINY, "command=echo ok", check=True)
    first, second = sorted(all_runs(project), key=lambda r: r.info.start_time)
    assert first.data.tags["runner.env.id"] == second.data.tags["runner.env.id"]
    assert second.data.tags["runner.env.reused"] == "true"


def test_crash_is_failed_with_exit_code_and_log(project: Path) -> None:
    proc = run_cli(project, *TINY, "command=\"python -c 'import sys; print(1234); sys.exit(3)'\"")
    assert proc.returncode != 0
    run = only_run(project)
    assert run.info.status == "FAILED"
    assert run.data.tags["runner.exit_code"] == "3"
    assert run.data.tags["runner.reason"] == "exit code 3"
    assert "1234" in read_artifact(project, run.info.run_id, "run.log")


def test_timeout_is_killed_with_reason(project: Path) -> None:
    proc = run_cli(project, *TINY, "resources.timeout=2", "command=sleep 60")
    assert proc.returncode != 0
    run = only_run(project)
    assert run.info.status == "KILLED"
    assert run.data.tags["runner.reason"] == "timeout after 2 s"
    assert run.data.metrics["duration_s"] < 30


def test_sigint_is_killed_and_keeps_log_and_outputs(project: Path) -> None:
    slow = f"slow_{time.time_ns()}.py"  # a name no other process on a shared machine has
    (project / slow).write_text(
        "import os, time\n"
        "open(os.path.join(os.environ['RUNNER_OUTPUT'], 'partial.txt'), 'w').write('half')\n"
        "print('started', flush=True)\n"
        "time.sleep(120)\n"
    )
    code, out, _ = interrupt_when_started(project, *TINY, f"command=python {slow}")
    assert code != 0, out
    run = only_run(project)
    assert run.info.status == "KILLED"
    assert run.data.tags["runner.reason"] == "interrupted"
    assert "started" in read_artifact(project, run.info.run_id, "run.log")
    assert read_artifact(project, run.info.run_id, "output/partial.txt") == "half"
    left = subprocess.run(["pgrep", "-f", slow], capture_output=True, text=True).stdout
    assert not left.strip(), "the run's process outlived the interrupt"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("+experiment=nope",),
            "Unknown experiment 'nope'. Available: keras_mlp, mnist_cnn, mnist_cnn_long, mnist_cnn_seed, vqa_vgg.",
        ),
        (("+experiment=keras_mlp", "train.epoch=3"), "Unknown key 'train.epoch'. Did you mean 'epochs'?"),
        (
            ("+experiment=keras_mlp", "train.epochs=abc"),
            "train.epochs: Value 'abc' of type 'str' could not be",
        ),
        (("+experiment=keras_mlp", "backend=slurmm"), "Unknown backend 'slurmm'."),
        (("+experiment=keras_mlp", "backend.name=???"), "Missing required value: backend.name"),
        ((*TINY, "env.requirements_file=nope.txt"), "env.requirements_file: nope.txt does not exist"),
        ((*TINY, 'env.requirements=["no-such-package-zzz-runner==1"]'), "Requirements do not resolve"),
        ((*TINY, "env.secrets=[RUNNER_TEST_UNSET_SECRET]"), "RUNNER_TEST_UNSET_SECRET not set"),
        ((*TINY, "command=python -c 'print(1)'"), "Cannot parse the overrides"),
        (
            (*TINY, "env.gpu=true"),
            "env.gpu=true, but this host has no NVIDIA GPU",
        ),  # no GPU in CI: a real refusal
    ],
)
def test_bad_input_one_line_no_run(project: Path, args: tuple[str, ...], message: str) -> None:
    proc = run_cli(project, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert all_runs(project) == []
    assert (
        not list((project / ".runner" / "runs").glob("*"))
        if (project / ".runner" / "runs").exists()
        else True
    )


def test_ls_and_logs(project: Path) -> None:
    run_cli(project, *TINY, "command=echo hello-from-run", check=True)
    run_id = only_run(project).info.run_id
    rows = json.loads(run_cli(project, "ls", "--json", check=True).stdout)
    assert [(r["id"], r["status"]) for r in rows] == [(run_id, "FINISHED")]
    table = run_cli(project, "ls", check=True).stdout
    assert run_id in table and "FINISHED" in table
    assert "hello-from-run" in run_cli(project, "logs", run_id, check=True).stdout
    missing = run_cli(project, "logs", "0" * 32)
    assert missing.returncode == 2 and "runner ls" in missing.stderr


def test_hydra_flags_still_work(project: Path) -> None:
    cfg = run_cli(project, "+experiment=keras_mlp", "--cfg", "job", check=True).stdout
    assert "epochs: 20.0" in cfg
    assert "runner" in run_cli(project, "--help", check=True).stdout.lower()
