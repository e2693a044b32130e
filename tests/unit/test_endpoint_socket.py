"""A run's tracking endpoint holds its port from the moment the port is chosen: no other run's endpoint can take it,
and the run's first calls, made before its owner serves them, wait for the answer instead of being refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# In a process of its own: MLflow's server app keeps its store in module globals.
SCRIPT = """\
import http.client, json, sys
from mlflow import MlflowClient
from runner.tracking.endpoint import Endpoint, listen

store = sys.argv[1]
client = MlflowClient(store)
run_id = client.create_run(client.create_experiment("e")).info.run_id
listener = listen("127.0.0.1")
port = listener.getsockname()[1]
seen = {}
try:
    listen("127.0.0.1", port).close()
    seen["second_listen"] = "taken"
except OSError:
    seen["second_listen"] = "refused"
early = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
early.request("GET", "/api/2.0/mlflow/runs/get?run_id=" + run_id, headers={"Authorization": "Bearer t0ken"})
endpoint = Endpoint(store, listener, run_id, "t0ken", ())
answer = early.getresponse()
seen["early"] = [answer.status, json.loads(answer.read())["run"]["info"]["run_id"] == run_id]
endpoint.stop()
print(json.dumps(seen))
"""


def test_the_port_is_held_from_its_choice_and_early_calls_are_answered(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, store], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"second_listen": "refused", "early": [200, True]}
