"""Only the harness travels into a run, and it stands on its own: every in-run module imports from a copy
of it alone, and nothing of the host side (backends, owner, agent, MLflow) is in it or pulled in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner.launch import stage

IN_RUN = (
    "runner.harness.train",
    "runner.loaders",
    "runner.harness.batches",
    "runner.harness.checkpoint",
    "runner.harness.spool",
    "runner.mnist.loader",
    "runner.mnist.report",
    "runner.vqa.loader",
    "runner.vqa.report",
)


def test_the_harness_imports_from_its_copy_alone(tmp_path: Path) -> None:
    stage.copy_to(tmp_path)
    script = (
        "import importlib, json, sys\n"
        f"for name in {IN_RUN!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({'file': sys.modules['runner'].__file__,\n"
        "    'runner': sorted(m for m in sys.modules if m.split('.')[0] == 'runner'),\n"
        "    'host': sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'docker', 'sqlalchemy'))}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "KERAS_BACKEND": "tensorflow"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["file"] == str(tmp_path / "runner" / "__init__.py")  # the copy, not the installed package
    assert found["host"] == []
    copied = {p.relative_to(tmp_path / "runner").parts[0] for p in (tmp_path / "runner").rglob("*.py")}
    assert copied == set(stage.MODULES)
    assert not {"backends", "runs", "agent", "launch", "tracking", "cli", "compose"} & copied
