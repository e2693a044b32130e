"""End to end with the local backend against a real MLflow store in a temp project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import all_runs, artifacts, git, only_run, read_artifact, run_cli, store

pytestmark = pytest.mark.integration

TINY = ("backend=local", "env.requirements=[]")  # the harness's own packages only: quick to build


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
    assert not [
        k for k in run.data.params if k.startswith(("jupyter.", "sweep.")) or k in ("command", "mode")
    ]
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


def test_a_command_run_records_what_it_reads_not_the_trainers_config(project: Path) -> None:
    run_cli(project, "run", *TINY, "--", "python", "-c", "print(1)", check=True)
    run = only_run(project)
    params = run.data.params
    unread = ("model.", "dataset.", "train.", "evaluate", "jupyter.", "sweep.")
    assert not [k for k in params if k.startswith(unread)], sorted(params)
    assert params["command"] == "python -c 'print(1)'" and params["backend.name"] == "local"
    assert params["env.requirements"] == "[]" and {"data", "resources.memory", "tracking.uri"} <= set(params)
    assert "units: 64" in read_artifact(project, run.info.run_id, "config.yaml")  # the whole config, as ever


HYDRA_APP = """import hydra, mlflow

@hydra.main(config_path="appconf", config_name="app", version_base=None)
def main(cfg):
    mlflow.log_param("app.optim.name", "its-own")  # a key the record would log too: the run's value stays
    print("lr", cfg.optim.lr)

main()
"""


def test_a_hydra_apps_own_config_becomes_app_params(project: Path) -> None:
    (project / "app.py").write_text(HYDRA_APP)
    (project / "appconf").mkdir()
    (project / "appconf" / "app.yaml").write_text("optim:\n  lr: 0.01\n  name: adam\nlayers: [1, 2]\n")
    (project / "outputs" / "old" / ".hydra").mkdir(parents=True)  # committed: not this run's
    (project / "outputs" / "old" / ".hydra" / "config.yaml").write_text("stale: 1\n")
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "app")
    run_cli(project, "run", *TINY, "--", "python", "app.py", "optim.lr=0.5", check=True)
    run = only_run(project)
    params = run.data.params
    assert params["app.optim.lr"] == "0.5" and params["app.layers"] == "[1, 2]"
    assert params["app.optim.name"] == "its-own" and "app.stale" not in params
    assert params["command"] == "python app.py optim.lr=0.5"
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "[runner] app.*: 3 params from workdir/outputs/" in log
    assert "app.optim.name: the run logged other values already; those are kept" in log


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
    said = run_cli(project, *TINY, "command=echo hello-from-run", check=True).stdout
    run = only_run(project)
    run_id = run.info.run_id
    # No experiment named: filed under the project's name, and said, listed and tagged as that one name.
    experiment = MlflowClient(store(project)).get_experiment(run.info.experiment_id)
    assert experiment.name == project.name == run.data.tags["runner.experiment"]
    assert f"[runner] run {run_id} ({project.name}, backend=local)" in said
    rows = json.loads(run_cli(project, "ls", "--json", check=True).stdout)
    assert [(r["id"], r["experiment"], r["status"]) for r in rows] == [(run_id, project.name, "FINISHED")]
    table = run_cli(project, "ls", check=True).stdout
    assert run_id in table and "FINISHED" in table and f" {project.name} " in table and "default" not in table
    ours = run_cli(project, "ls", "--json", "--experiment", project.name, check=True).stdout
    assert [r["id"] for r in json.loads(ours)] == [run_id]
    assert "hello-from-run" in run_cli(project, "logs", run_id, check=True).stdout
    missing = run_cli(project, "logs", "0" * 32)
    assert missing.returncode == 2 and "runner ls" in missing.stderr


def test_the_runners_experiments_open_in_mlflows_model_training_view(project: Path) -> None:
    client = MlflowClient(store(project))
    # One made by an earlier runner, without the kind; and one of the user's own, begun by a run of theirs.
    earlier = client.create_experiment("earlier")
    client.create_run(earlier, tags={"runner.experiment": "earlier"})
    theirs = client.create_experiment("theirs")
    client.create_run(theirs)
    for name in ("new", "earlier", "theirs"):
        run_cli(project, *TINY, "command=echo ok", f"tracking.experiment={name}", check=True)
    kinds = {e.name: e.tags.get("mlflow.experimentKind") for e in client.search_experiments()}
    assert kinds == {
        "new": "custom_model_development",
        "earlier": "custom_model_development",
        "theirs": None,
        "Default": None,
    }


def test_hydra_flags_still_work(project: Path) -> None:
    cfg = run_cli(project, "+experiment=keras_mlp", "--cfg", "job", check=True).stdout
    assert "epochs: 20.0" in cfg
    assert "runner" in run_cli(project, "--help", check=True).stdout.lower()


def test_the_runners_files_stay_out_of_git_status(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "train.py").write_text("print('trained')\n")
    git(fresh, "init", "-q")
    git(fresh, "add", "-A")
    git(fresh, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "mine")
    for _ in range(2):
        run_cli(fresh, "run", *TINY, "--", "python", "train.py", check=True)
    assert {p.name for p in fresh.iterdir()} >= {".runner", "mlflow.db"}
    assert git(fresh, "status", "--porcelain", "--ignored=no") == ""
    assert not (fresh / ".gitignore").exists()
    exclude = (fresh / ".git" / "info" / "exclude").read_text()
    assert [line for line in exclude.splitlines() if line.startswith((".runner", "mlflow", "mlruns"))] == [
        ".runner/",
        "mlflow.db*",
        "mlruns/",
    ]  # once, however many runs


def test_only_what_git_does_not_ignore_yet_is_excluded(tmp_path: Path) -> None:
    from runner.runs.gitexclude import exclude_own_files

    repo, outside = tmp_path / "repo", tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("/.runner/\n")
    exclude_own_files(repo)
    exclude_own_files(repo)
    exclude = (repo / ".git" / "info" / "exclude").read_text()
    assert exclude.endswith("# the runner's records and state\nmlflow.db*\nmlruns/\n")
    assert exclude.count("mlflow.db*") == 1
    assert (repo / ".gitignore").read_text() == "/.runner/\n"
    exclude_own_files(outside)  # outside a repository: nothing written, no error
    assert list(outside.iterdir()) == []
