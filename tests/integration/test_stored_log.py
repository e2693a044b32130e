"""The run's log in its record (run.log) is what a terminal finally showed: each progress bar once, at its last
state, however many times it was redrawn; the log in the run's folder keeps every redraw, as it came. Past
resources.log_limit, both keep the log's head and tail, and say how much of its middle was dropped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.tracking.logtext import log_the_log
from tests.helpers import docker_engine, only_run, read_artifact, run_cli, run_dir, store

pytestmark = pytest.mark.integration

EPOCHS = 4

# An unchanged Keras fit with its default progress bar; the callback only slows the steps down, so the bar is
# redrawn many times in each epoch (Keras redraws at most every 0.05 s).
FIT = f"""\
import time
import numpy as np
import keras

x = np.random.default_rng(0).normal(size=(1000, 8)).astype("float32")
y = (x.sum(axis=1) > 0).astype("float32")
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
slow = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: time.sleep(0.01))
model.fit(x, y, epochs={EPOCHS}, batch_size=16, validation_split=0.2, callbacks=[slow])
print("trained")
"""


def test_tqdm_bars_are_stored_once_each(tmp_path: Path) -> None:
    from tqdm import tqdm

    iterations, epochs = 200, 3
    logfile = tmp_path / "run.log"
    with open(logfile, "w", encoding="utf-8") as out:
        for epoch in range(epochs):
            for _ in tqdm(range(iterations), desc=f"epoch {epoch}", file=out, mininterval=0, ascii=True):
                pass
    assert logfile.read_bytes().count(b"\r") > iterations * epochs  # redrawn at every step
    client = MlflowClient(store(tmp_path))
    run_id = client.create_run(client.create_experiment("bars")).info.run_id

    log_the_log(client, run_id, logfile)

    lines = read_artifact(tmp_path, run_id, "run.log").splitlines()
    assert len(lines) == epochs, lines[:10]
    for epoch, line in enumerate(lines):
        assert line.startswith(f"epoch {epoch}: 100%|##########| {iterations}/{iterations} ["), line


def test_a_keras_fit_is_stored_a_line_per_epoch(project: Path) -> None:
    (project / "fit.py").write_text(FIT)
    run_cli(project, "run", "backend=local", "--", "python", "fit.py", check=True)
    run = only_run(project)
    raw = (project / ".runner" / "runs" / run.info.run_id / "run.log").read_bytes()
    assert raw.count(b"\r") > 4 * EPOCHS and b"\x08" in raw  # the bar was redrawn, as on a terminal

    text = read_artifact(project, run.info.run_id, "run.log")
    lines = text.splitlines()
    mine = lines[lines.index("Epoch 1/4") : lines.index("trained") + 1]
    # Each epoch: its heading and its bar at the end, with the validation's figures.
    assert len(mine) == 2 * EPOCHS + 1, mine
    bars = [line for line in mine if "val_loss" in line]
    assert [b.split(" ", 1)[0] for b in bars] == ["50/50"] * EPOCHS, bars
    assert len(lines) < len(mine) + 30  # the runner's own lines and the libraries' start-up, nothing per step
    assert "\r" not in text and "\x08" not in text and "\x1b" not in text

    # `runner logs` gives the log as it came: on a terminal the bar redraws as it did while the run went on.
    shown = subprocess.run(
        [sys.executable, "-m", "runner", "logs", run.info.run_id],
        cwd=project,
        capture_output=True,
        check=True,
    ).stdout
    assert shown == raw


LINES = 20000  # 51 bytes each: about 1 MB, sixteen times the limit below
CHATTY = "for i in range(20000): print(f'line {i:05d} ' + 'x' * 40)"
BACKENDS = ["local", pytest.param("docker", marks=pytest.mark.docker)]


def line(i: int) -> str:
    return f"line {i:05d} " + "x" * 40


def kept_and_dropped(text: str) -> tuple[list[int], int, list[int]]:
    """The numbers of the run's lines a log shows before the line saying how much was dropped, the bytes it says
    were, and the numbers after it; every line of the run's shown whole."""
    said = re.findall(r"^\[runner\] (\d+) bytes of the log's middle were dropped \(resources.log_limit=64k\); its last "
                      r"\d+ bytes follow$", text, re.M)  # fmt: skip
    assert len(said) == 1, said
    head, tail = text.split("bytes of the log's middle were dropped")
    numbers = [[int(m) for m in re.findall(r"^line (\d{5}) x{40}$", part, re.M)] for part in (head, tail)]
    return numbers[0], int(said[0]), numbers[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_log_past_its_limit_keeps_its_head_and_tail(project: Path, backend: str) -> None:
    if backend == "docker":
        docker_engine()
    proc = run_cli(project, "run", f"backend={backend}", "env.requirements=[]", "resources.log_limit=64k", "--",
                   "python", "-c", CHATTY, check=True)  # fmt: skip
    run = only_run(project)
    assert run.info.status == "FINISHED"  # the run went on past its limit
    # On the terminal: the head, the line saying the limit passed, then at the end what was dropped and the tail.
    assert (
        "[runner] the log passed resources.log_limit=64k: its middle is dropped, its last 32k are kept"
        in proc.stdout
    )
    assert line(0) in proc.stdout and line(LINES - 1) in proc.stdout

    raw = (run_dir(project, run.info.run_id) / "run.log").read_bytes()
    shown = subprocess.run([sys.executable, "-m", "runner", "logs", run.info.run_id], cwd=project,
                           capture_output=True, check=True).stdout  # fmt: skip
    assert shown == raw
    assert 60_000 < len(raw) < 64 * 1024 + 4096  # about the limit: the runner's own lines besides
    head, dropped, tail = kept_and_dropped(raw.decode())
    assert head == list(range(len(head))) and tail == list(range(LINES - len(tail), LINES))
    assert dropped == (LINES - len(head) - len(tail)) * len(line(0) + "\n")  # exactly the lines not shown
    assert len(head) > 300 and 600 < len(tail) < 650  # half the limit each (the head shares its half)
    assert not (run_dir(project, run.info.run_id) / "run.log.tail").exists()

    # The record's run.log: the same head, the same count, the same tail.
    assert kept_and_dropped(read_artifact(project, run.info.run_id, "run.log")) == (head, dropped, tail)


def test_a_log_within_its_limit_is_kept_whole(project: Path) -> None:
    run_cli(project, "run", "backend=local", "env.requirements=[]", "resources.log_limit=64k", "--", "python", "-c",
            "for i in range(1000): print(f'line {i:05d} ' + 'x' * 40)", check=True)  # fmt: skip
    run = only_run(project)
    raw = (run_dir(project, run.info.run_id) / "run.log").read_text()
    for text in (raw, read_artifact(project, run.info.run_id, "run.log")):
        assert re.findall(r"^line (\d{5}) x{40}$", text, re.M) == [f"{i:05d}" for i in range(1000)]
        assert "resources.log_limit" not in text and "dropped" not in text
