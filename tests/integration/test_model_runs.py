"""Each model experiment trains a few steps on tiny data through the runner (local backend) and lands
FINISHED with its artifacts; the same config twice gives bitwise-identical metrics."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.harness.train import TIMING
from runner.mnist.to_csv import convert
from runner.vqa.synth import generate
from tests.helpers import all_runs, artifacts, only_run, read_artifact, run_cli, store, tiny_idx

pytestmark = pytest.mark.integration

LOCAL = ("backend=local", "data=[]")  # tiny data inside the project instead of a mount


def finished(project: Path, proc) -> object:
    run = only_run(project)
    assert run.info.status == "FINISHED", proc.stdout[-3000:] + proc.stderr[-3000:]
    return run


@pytest.mark.parametrize("experiment", ["mnist_cnn", "mnist_cnn_long"])
def test_mnist_cnn_on_idx_archives(project: Path, experiment: str) -> None:
    tiny_idx(project / "mnist_tiny", n_train=40, n_test=10)
    proc = run_cli(project, f"+experiment={experiment}", *LOCAL, "dataset.path=mnist_tiny", "train.epochs=1")
    run = finished(project, proc)
    assert run.data.params["model.parameters"] == "6692810"
    assert run.data.params["data_info.layout"] == "idx"
    assert 0.0 <= run.data.metrics["test_accuracy"] <= 1.0
    assert {"output/model.keras", "output/prediction.csv", "output/confusion_matrix.png"} <= artifacts(
        project, run.info.run_id
    )
    rows = list(csv.reader(io.StringIO(read_artifact(project, run.info.run_id, "output/prediction.csv"))))
    assert rows[0] == ["ImageId", "Label"] and [r[0] for r in rows[1:]] == [str(i) for i in range(1, 11)]
    assert all(r[1] in "0123456789" for r in rows[1:])


def test_seed_two_step_workflow_on_kaggle_csv(project: Path) -> None:
    """Step one: a command-mode run writes the CSVs from the IDX archives; step two trains on them."""
    tiny_idx(project / "mnist_tiny", n_train=70, n_test=10)
    run_cli(
        project, *LOCAL, "command=python -m runner.mnist.to_csv --from mnist_tiny --to /output", check=True
    )
    step_one = only_run(project)
    assert {"output/train.csv", "output/test.csv"} <= artifacts(project, step_one.info.run_id)

    convert(str(project / "mnist_tiny"), str(project / "mnist_csv"))
    (project / "mnist_csv" / "test_labels.csv").unlink()  # Kaggle's test.csv: no answers at all
    proc = run_cli(
        project,
        "+experiment=mnist_cnn_seed",
        *LOCAL,
        "dataset.path=mnist_csv",
        "train.steps=4",
        "train.batch_size=20",
    )
    run = next(r for r in all_runs(project) if r.info.run_id != step_one.info.run_id)
    assert run.info.status == "FINISHED", proc.stdout[-3000:] + proc.stderr[-3000:]
    assert run.data.params["data_info.layout"] == "csv"
    history = MlflowClient(store(project)).get_metric_history(run.info.run_id, "val_accuracy")
    # 4 steps of 20 on 50 training rows (20 of 70 held out, 3 batches an epoch): stopped in the 2nd epoch
    assert len(history) == 2
    assert "test_accuracy" not in run.data.metrics  # nothing to score against
    prediction = read_artifact(project, run.info.run_id, "output/prediction.csv").splitlines()
    assert prediction[0] == "ImageId,Label" and len(prediction) == 11


@pytest.mark.parametrize(("model", "params"), [("vqa_bow", "8676328"), ("vqa_lstm", "13707240")])
def test_vqa_vgg(project: Path, model: str, params: str) -> None:
    generate(project / "vqa_tiny", images=20, seed=3)
    proc = run_cli(
        project, "+experiment=vqa_vgg", f"model={model}", *LOCAL, "dataset.path=vqa_tiny", "train.epochs=1"
    )
    run = finished(project, proc)
    assert run.data.params["model.parameters"] == params
    metrics = run.data.metrics
    for name in ("accuracy", "accuracy_yes_no", "accuracy_number", "accuracy_other", "majority_accuracy"):
        assert 0.0 <= metrics[f"test_{name}"] <= 1.0
    results = json.loads(read_artifact(project, run.info.run_id, "output/results.json"))
    questions = json.loads((project / "vqa_tiny" / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())
    assert sorted(r["question_id"] for r in results) == sorted(
        q["question_id"] for q in questions["questions"]
    )
    assert all(set(r) == {"question_id", "answer"} and isinstance(r["answer"], str) for r in results)


def test_bad_dataset_fails_with_one_clear_line(project: Path) -> None:
    (project / "empty").mkdir()
    (project / "empty" / "readme.md").write_text("x")
    proc = run_cli(project, "+experiment=mnist_cnn", *LOCAL, "dataset.path=empty")
    assert proc.returncode != 0
    run = only_run(project)
    assert run.info.status == "FAILED"
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "runner.harness.train: empty: found readme.md; expected the MNIST IDX archives" in log
    assert "Traceback" not in log


def test_bad_model_value_fails_before_the_data_is_read(project: Path) -> None:
    proc = run_cli(project, "+experiment=vqa_vgg", "model=vqa_lstm", *LOCAL, "model.image_norm=max")
    assert proc.returncode != 0
    run = only_run(project)
    assert run.info.status == "FAILED"
    log = read_artifact(project, run.info.run_id, "run.log")
    assert "runner.harness.train: model.image_norm: 'max'; expected one of l2, none." in log
    assert "[data]" not in log and "Traceback" not in log  # no dataset at /input/vqa: never reached


def test_same_config_twice_gives_bitwise_identical_metrics(project: Path) -> None:
    tiny_idx(project / "mnist_tiny", n_train=60, n_test=10)
    args = ("+experiment=mnist_cnn_seed", *LOCAL, "dataset.path=mnist_tiny", "train.steps=4", "train.seed=7")
    for _ in range(2):
        run_cli(project, *args, check=True)
    client = MlflowClient(store(project))
    first, second = (
        {
            name: [m.value for m in client.get_metric_history(r.info.run_id, name)]
            for name in r.data.metrics
            if name not in ("duration_s", *TIMING)
        }
        for r in sorted(all_runs(project), key=lambda r: r.info.start_time)
    )
    assert {"loss", "val_loss", "val_accuracy", "test_accuracy"} <= set(first)
    assert first == second
