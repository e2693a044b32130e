"""The built-in trainer's checkpoints, run as a run runs it: SIGTERM saves and stops (exit 143); the next attempt
continues where it stopped, mid-epoch included, and ends with the numbers of a run never stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.compose.load import compose_config

ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 6


@dataclass
class Attempt:
    returncode: int
    stdout: str
    records: list[dict[str, object]]

    def metric(self, name: str) -> dict[int, float]:
        return {int(r["s"]): float(r["v"]) for r in self.records if r.get("m") == name}  # type: ignore[arg-type]

    def names(self) -> set[str]:
        return {str(r["m"]) for r in self.records if "m" in r}


def start(
    base: Path, name: str, checkpoints: Path | None, attempt: int = 1, backend: str = "tensorflow"
) -> tuple[subprocess.Popen[str], Path]:
    folder = base / name
    (folder / "spool").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_CHECKPOINT_DIR"}
    env |= {
        "PYTHONPATH": str(ROOT),
        "RUNNER_CONFIG": str(base / "config.yaml"),
        "RUNNER_OUTPUT": str(folder / "output"),
        "RUNNER_SPOOL": str(folder / "spool"),
        "RUNNER_ATTEMPT": str(attempt),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "KERAS_BACKEND": backend,
    }
    if checkpoints:
        env["RUNNER_CHECKPOINT_DIR"] = str(checkpoints)
    cmd = [sys.executable, "-m", "runner.harness.train"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ), folder


@dataclass
class Runs:
    plain: Attempt  # without checkpoints, never stopped
    first: Attempt  # stopped by SIGTERM once 2 epochs were spooled
    second: Attempt  # its 2nd attempt
    base: Path


def records(folder: Path) -> list[dict[str, object]]:
    path = folder / "spool" / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def finish(proc: subprocess.Popen[str], folder: Path) -> Attempt:
    stdout, _ = proc.communicate(timeout=300)
    return Attempt(proc.returncode, stdout, records(folder))


# Keras on JAX dispatches batch hooks apart from the training loop where none must be waited for: the harness's
# callbacks keep it so (its checks run as the next batch begins), and a resumed run is still exact there.
@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def runs(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Runs:
    backend = request.param
    base = tmp_path_factory.mktemp(f"ckpt-{backend}")
    overrides = [
        "+experiment=keras_mlp",
        f"train.epochs={EPOCHS}",
        "train.batch_size=16",
        "dataset.n_train=2000",
    ]
    OmegaConf.save(compose_config(ROOT, overrides), base / "config.yaml")
    plain = finish(*start(base, "plain", None, backend=backend))
    proc, folder = start(base, "first", base / "checkpoint", backend=backend)
    deadline = time.monotonic() + 240
    while len({r.get("s") for r in records(folder) if r.get("m") == "loss"}) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    first = finish(proc, folder)
    second = finish(*start(base, "second", base / "checkpoint", attempt=2, backend=backend))
    return Runs(plain, first, second, base)


def test_sigterm_saves_a_checkpoint_and_stops(runs: Runs) -> None:
    first, base = runs.first, runs.base
    assert first.returncode == 143, first.stdout
    stopped = re.search(
        r"\[runner\] checkpoint saved after (\d+) epochs.*: stopping \(SIGTERM\)", first.stdout
    )
    assert stopped, first.stdout
    assert sorted(first.metric("loss")) == list(
        range(int(stopped[1]))
    )  # the epochs it trained, no partial one
    assert not {"train_seconds", "test_loss"} & first.names()  # no end of training, no evaluation
    assert not (base / "first" / "output" / "model.keras").exists()
    assert any((base / "checkpoint").rglob("*.weights.h5"))


def test_the_next_attempt_continues_and_ends_as_an_uninterrupted_run(runs: Runs) -> None:
    plain, first, second = runs.plain, runs.first, runs.second
    assert second.returncode == 0, second.stdout
    done = len(first.metric("loss"))
    assert f"[runner] resuming from the checkpoint at epoch {done}" in second.stdout
    assert sorted(second.metric("loss")) == list(range(done, EPOCHS))  # each epoch spooled once overall
    for name in ("loss", "accuracy"):  # a deterministic CPU run: the same numbers, to the last bit
        assert first.metric(name) | second.metric(name) == plain.metric(name)
    assert second.metric("test_loss") == plain.metric("test_loss")
    assert "train_seconds" in second.names()


def test_no_checkpoint_folder_no_checkpoint(runs: Runs) -> None:
    plain, base = runs.plain, runs.base
    assert plain.returncode == 0, plain.stdout
    assert sorted(plain.metric("loss")) == list(range(EPOCHS))
    assert "checkpoint" not in plain.stdout
    assert not list((base / "plain").rglob("*.weights.h5")) and not list((base / "plain").rglob("state.json"))
