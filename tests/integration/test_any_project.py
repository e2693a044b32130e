"""A researcher's own project, outside this repository, with the runner installed from a built wheel (not
editable: a file the wheel lacks fails these tests): `runner init`, `runner run -- CMD`, requirements found by
name, what the run writes kept, a readable log, the project's own model builder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import all_runs, artifacts, build_wheel, docker_engine, git, only_run, read_artifact

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the runner installed from its wheel. The heavy dependencies (MLflow,
    TensorFlow) come from the interpreter's own site-packages; the runner itself only from the wheel."""
    where = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(where)
    # The runner alone: a project's own models package and its examples' configs are never shadowed by it.
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert "models" not in tops and "conf" not in tops, tops
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("runner/conf/experiment/")]
    env = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], check=True)
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    found = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import runner; print(runner.__file__)"],
        cwd=where,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert found.startswith(str(env)), found  # the wheel's copy, not this checkout
    return env


@pytest.fixture
def mine(tmp_path: Path) -> Path:
    """Someone's project: a git repository with a training script, nothing of the runner in it."""
    proj = tmp_path / "my-study"
    proj.mkdir()
    (proj / ".gitignore").write_text("__pycache__/\n")
    git(proj, "init", "-q")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git(proj, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "mine")
    return proj


def runner(venv: Path, cwd: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The installed `runner` command, as a user types it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PYTHONPATH"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [str(venv / "bin" / "runner"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_init_writes_a_starter_conf_and_refuses_to_overwrite(venv: Path, mine: Path) -> None:
    first = runner(venv, mine, "init")
    assert first.returncode == 0, first.stderr
    assert (mine / "conf" / "experiment" / "example.yaml").read_text().startswith("# @package _global_")
    ignored = (mine / ".gitignore").read_text()
    assert "__pycache__/" in ignored and all(p in ignored for p in ("mlflow.db", "mlruns/", ".runner/"))
    assert git(mine, "status", "--porcelain").splitlines() == [" M .gitignore", "?? conf/"]
    before = (mine / "conf" / "experiment" / "example.yaml").read_text()
    again = runner(venv, mine, "init")
    assert again.returncode == 2
    assert "conf exists already (conf/experiment/example.yaml): nothing was changed" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    assert (mine / "conf" / "experiment" / "example.yaml").read_text() == before
    # The example experiment composes from the installed package's groups and the project's own.
    shown = runner(venv, mine, "+experiment=example", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert "command: python train.py" in shown.stdout


def test_init_outside_a_git_repository_says_how_to_make_one(venv: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = runner(venv, plain, "init")
    assert proc.returncode == 2
    assert "is not a git repository" in proc.stderr and "git init" in proc.stderr
    assert list(plain.iterdir()) == []


def test_run_a_script_as_it_is(venv: Path, mine: Path) -> None:
    docker_engine()
    (mine / "floyd_requirements.txt").write_text("tabulate==0.9.0\n")
    (mine / "train.py").write_text(
        "import json, os, sys, tabulate\n"
        "os.makedirs('checkpoints', exist_ok=True)\n"
        "open('checkpoints/last.txt', 'w').write('epoch 3')\n"  # into its working directory, as Kaggle scripts do
        "open('/output/predictions.csv', 'w').write('id,label\\n1,7\\n')\n"
        "print(json.dumps(sys.argv[1:]))\n"
        "print(tabulate.__version__)\n"
    )
    args = ["--name", "a b", "--quote", "it's", "$HOME", "${HOME}", "x\\"]
    proc = runner(venv, mine, "run", "env.requirements=[]", "--", "python", "train.py", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run(mine)
    assert run.info.status == "FINISHED"
    log = read_artifact(mine, run.info.run_id, "run.log")
    assert json.dumps(args) in log  # every argument exactly as typed: no shell, no second quoting
    assert "0.9.0" in log  # the package named only in floyd_requirements.txt
    assert run.data.tags["runner.requirements_file"] == "floyd_requirements.txt"
    kept = artifacts(mine, run.info.run_id)
    assert {"output/predictions.csv", "workdir/checkpoints/last.txt"} <= kept
    assert not {p for p in kept if p.startswith("workdir/") and not p.startswith("workdir/checkpoints/")}
    assert not (mine / "checkpoints").exists()  # the project itself is untouched
    from mlflow import MlflowClient

    from tests.helpers import store

    experiment = MlflowClient(store(mine)).get_experiment(run.info.experiment_id)
    assert experiment.name == "my-study"


def test_a_failed_script_keeps_what_it_wrote(venv: Path, mine: Path) -> None:
    docker_engine()
    (mine / "train.py").write_text(
        "open('partial.txt', 'w').write('three epochs in')\nraise SystemExit('out of patience')\n"
    )
    proc = runner(venv, mine, "run", "env.requirements=[]", "--", "python", "train.py")
    assert proc.returncode == 1
    run = only_run(mine)
    assert (run.info.status, run.data.tags["runner.exit_code"]) == ("FAILED", "1")
    assert read_artifact(mine, run.info.run_id, "workdir/partial.txt") == "three epochs in"
    assert run.data.tags["runner.requirements_file"] == "none"


def test_the_stored_log_is_what_a_terminal_would_show(venv: Path, mine: Path) -> None:
    docker_engine()
    # A progress bar drawn as Keras and tqdm draw it on a terminal: carriage-return redraws and colours.
    (mine / "bars.py").write_text(
        "import sys\n"
        "for i in range(1, 6):\n"
        "    sys.stdout.write(f'\\r{i}/5 [' + '=' * i + ' ' * (5 - i) + ']'); sys.stdout.flush()\n"
        "print()\n"
        "print('\\x1b[1m\\x1b[32mdone\\x1b[0m')\n"
    )
    runner(venv, mine, "run", "env.requirements=[]", "--", "python", "bars.py")
    run = only_run(mine)
    from mlflow import MlflowClient

    from tests.helpers import store

    # As bytes: reading text would turn each carriage return into a newline on the way.
    stored = Path(MlflowClient(store(mine)).download_artifacts(run.info.run_id, "run.log")).read_bytes()
    assert b"\r" not in stored and b"\x1b" not in stored
    assert b"\n5/5 [=====]\ndone\n" in stored
    assert stored.count(b"/5 [") == 1  # the bar once, not once per redraw
    raw = (mine / ".runner" / "runs" / run.info.run_id / "run.log").read_bytes()
    assert b"\r1/5 [=    ]\r2/5" in raw  # `runner logs -f` shows what came, as it came


def test_the_projects_own_model_builder_through_an_experiment(venv: Path, mine: Path) -> None:
    docker_engine()
    (mine / "mypkg").mkdir()
    (mine / "mypkg" / "__init__.py").write_text("")
    (mine / "mypkg" / "nets.py").write_text(
        "import keras\n\n\n"
        "def tiny(input_dim: int = 20, hidden: int = 8):\n"
        "    return keras.Sequential([keras.Input((input_dim,)), keras.layers.Dense(hidden, activation='relu'),\n"
        "                             keras.layers.Dense(1, activation='sigmoid')])\n"
    )
    # The project's own groups sit beside the installed package's: a model of its own, an experiment using it.
    for group in ("model", "experiment"):
        (mine / "conf" / group).mkdir(parents=True)
    (mine / "conf" / "model" / "tiny.yaml").write_text("_target_: mypkg.nets.tiny\nhidden: 4\n")
    (mine / "conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny\n"
        "allow_targets: [mypkg]\n"
        "train:\n  epochs: 1\n"
    )
    proc = runner(venv, mine, "+experiment=mine")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run(mine)
    assert run.info.status == "FINISHED"
    assert run.data.params["model._target_"] == "mypkg.nets.tiny"
    assert "test_accuracy" in run.data.metrics
    refused = runner(venv, mine, "+experiment=mine", "allow_targets=[mypkg,mypkg.nope]")
    assert refused.returncode == 2
    assert "allow_targets: 'mypkg.nope' is not a module of the project" in refused.stderr
    assert len(all_runs(mine)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "--"), "runner run: nothing after '--' to run. Usage: runner run [OVERRIDES...] -- COMMAND"),
        (
            ("run", "-m", "train.epochs=1,2", "--", "python", "x.py"),
            "runner run: a sweep (-m) changes config",
        ),
        (("+experiment=x", "allow_targets=[os]"), "Unknown experiment 'x'"),
        (
            ("run", "allow_targets=[runner.harness.train]", "--", "true"),
            "allow_targets: 'runner.harness.train' is not a module of the",
        ),
    ],
)
def test_bad_input_says_how_in_one_line(venv: Path, mine: Path, args: tuple[str, ...], message: str) -> None:
    proc = runner(venv, mine, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert all_runs(mine) == []


def test_outside_any_project_it_says_how_to_make_one(venv: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = runner(venv, plain, "run", "--", "python", "train.py")
    assert proc.returncode == 2
    assert "is not inside a project" in proc.stderr and "git init" in proc.stderr
    assert list(plain.iterdir()) == []


KERAS_FIT = """import numpy as np
import keras{extra}

rng = np.random.default_rng(0)
x = rng.random((200, 8)).astype("float32")
y = (x.sum(axis=1) > 4).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
model.fit(x, y, epochs=4, validation_split=0.2)
"""


def steps(project: Path, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    from tests.helpers import store

    return sorted(m.step for m in MlflowClient(store(project)).get_metric_history(run_id, key))


def test_an_unchanged_keras_script_records_its_epochs(venv: Path, mine: Path) -> None:
    """MLflow's own autologging, on without a line changed; off with autolog=false; never twice for a script
    that turns it on itself."""
    docker_engine()
    (mine / "fit.py").write_text(KERAS_FIT.format(extra=""))
    (mine / "own.py").write_text(KERAS_FIT.format(extra="\nimport mlflow\n\nmlflow.autolog()"))
    for args in (
        ["fit.py"],
        ["own.py"],
        ["autolog=false", "--", "python", "fit.py"],
        ["autolog.models=true", "--", "python", "fit.py"],
    ):
        cmd = ["run", "--", "python", *args] if len(args) == 1 else ["run", *args]
        proc = runner(venv, mine, *cmd)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    plain, own, off, models = sorted(all_runs(mine), key=lambda r: r.info.start_time)
    for run in (plain, own):
        assert run.info.status == "FINISHED"
        # One point per epoch, each epoch once.
        assert steps(mine, run.info.run_id, "loss") == [0, 1, 2, 3]
        assert steps(mine, run.info.run_id, "val_loss") == [0, 1, 2, 3]
        assert run.data.params["epochs"] == "4"
    assert "model_summary.txt" in artifacts(mine, plain.info.run_id)  # an artifact the run's MLflow logged
    assert "loss" not in off.data.metrics and "epochs" not in off.data.params
    # Models only when asked: the model MLflow's integration logs, its files in the store.
    from mlflow import MlflowClient

    from tests.helpers import store

    client = MlflowClient(store(mine))
    logged = client.search_logged_models([plain.info.experiment_id])
    assert [m.source_run_id for m in logged] == [models.info.run_id]
    assert "MLmodel" in {f.path for f in client.list_logged_model_artifacts(logged[0].model_id)}
    # The run's environment is the project's: the runner's in-run packages are recorded apart.
    lock = read_artifact(mine, plain.info.run_id, "requirements.lock")
    assert "keras==" in lock and "mlflow-skinny" not in lock and "hydra-core" not in lock
    assert "mlflow-skinny==" in read_artifact(mine, plain.info.run_id, "harness.lock")


def test_a_scikit_learn_script_gets_its_training_score(venv: Path, mine: Path) -> None:
    docker_engine()
    (mine / "requirements.txt").write_text("scikit-learn\n")
    (mine / "fit.py").write_text(
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "x, y = load_iris(return_X_y=True)\n"
        "print(LogisticRegression(max_iter=500).fit(x, y).score(x, y))\n"
    )
    proc = runner(venv, mine, "run", "env.requirements=[]", "--", "python", "fit.py")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run(mine)
    assert run.data.metrics["training_score"] > 0.9
    assert run.data.params["max_iter"] == "500"


def test_a_project_pinning_the_runners_own_packages_gets_its_versions(venv: Path, mine: Path) -> None:
    """hydra-core, omegaconf, pydantic and protobuf pinned older than the runner's: the project resolves alone."""
    docker_engine()
    pins = ["hydra-core==1.3.2", "omegaconf==2.3.0", "pydantic==1.10.21", "protobuf==3.20.3"]
    (mine / "requirements.txt").write_text("\n".join(pins) + "\n")
    (mine / "conf_app").mkdir()
    (mine / "conf_app" / "app.yaml").write_text("lr: 0.5\nlayers: 3\n")
    (mine / "app.py").write_text(
        "import hydra, omegaconf, pydantic, google.protobuf\n\n\n"
        "@hydra.main(config_path='conf_app', config_name='app', version_base=None)\n"
        "def main(cfg):\n"
        "    print('versions', hydra.__version__, omegaconf.__version__, pydantic.VERSION,"
        " google.protobuf.__version__, cfg.lr)\n\n\n"
        "main()\n"
    )
    proc = runner(venv, mine, "run", "env.requirements=[]", "--", "python", "app.py", "lr=0.25")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = only_run(mine)
    assert run.info.status == "FINISHED"
    assert "versions 1.3.2 2.3.0 1.10.21 3.20.3 0.25" in read_artifact(mine, run.info.run_id, "run.log")
    locked = read_artifact(mine, run.info.run_id, "requirements.lock")
    assert all(pin in locked for pin in pins) and "mlflow" not in locked
    assert (run.data.params["app.lr"], run.data.params["app.layers"]) == ("0.25", "3")  # the app's own config
