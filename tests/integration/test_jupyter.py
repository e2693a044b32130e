"""mode=jupyter against the real engine: JupyterLab in the run's own environment and data, reached with its token
only, a cell run through the kernel protocol (data mount read, /output written, a metric logged into the session's
run), the session stopping itself when idle with its notebook kept, `runner stop`, `runner notebook pull`, and the
bad input of the issue (an unknown mode, a timeout of 0, the port taken, Jupyter failing to start)."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import websocket
from mlflow import MlflowClient

from tests.helpers import all_runs, data, docker_engine, folder, git, run_cli, store, wait_for_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("git_identity")]

SMALL = ("backend=docker", "env.requirements=[]", "mode=jupyter")


def start(project: Path, *args: str) -> tuple[str, str, dict]:
    """A detached session: (run id, the URL with its token, {port, token})."""
    docker_engine()
    proc = run_cli(project, *SMALL, "detach=true", *args, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"JupyterLab is up: (http://127\.0\.0\.1:(\d+)/lab\?token=(\S+))", proc.stdout)
    assert found, proc.stdout
    run_id = re.search(r"run (\w{32}) started in the background", proc.stdout).group(1)  # type: ignore[union-attr]
    return run_id, found.group(1), {"port": int(found.group(2)), "token": found.group(3), "out": proc.stdout}


def http(url: str, token: str | None = None, method: str = "GET", body: object = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    data_ = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data_, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def execute(access: dict, code: str) -> str:
    """Run `code` in a new kernel of the session through Jupyter's kernel protocol (its websocket); its output."""
    base = f"127.0.0.1:{access['port']}"
    status, body = http(f"http://{base}/api/kernels", access["token"], "POST", {"name": "python3"})
    assert status == 201, body
    kernel = json.loads(body)["id"]
    ws = websocket.create_connection(
        f"ws://{base}/api/kernels/{kernel}/channels",
        header=[f"Authorization: token {access['token']}"],
        timeout=120,
    )
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
              "version": "5.3"}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
               "stop_on_error": True}  # fmt: skip
    ws.send(json.dumps({"header": header, "parent_header": {}, "metadata": {}, "content": content,
                        "channel": "shell", "buffers": []}))  # fmt: skip
    out = []
    while True:
        message = json.loads(ws.recv())
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            out.append(message["content"]["text"])
        elif message["msg_type"] == "error":
            out.append(f"ERROR {message['content']['ename']}: {message['content']['evalue']}")
        elif message["msg_type"] == "execute_reply":
            break
    ws.close()
    return "".join(out)


def ended(project: Path, run_id: str, timeout: float) -> object:
    client = MlflowClient(store(project))
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.get_run(run_id)
        if run.info.status != "RUNNING":
            return run
        time.sleep(1)
    raise AssertionError(f"session {run_id} still RUNNING after {timeout} s")


def containers(run_id: str) -> list:
    return docker_engine().containers.list(all=True, filters={"label": f"runner.run_id={run_id}"})


NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                       "source": "print(1)"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}  # fmt: skip


def test_a_session_works_on_its_data_records_to_its_run_and_stops_itself_when_idle(
    dproject: Path,
    tmp_path: Path,
) -> None:
    assert (
        data(dproject, "add", "toy", str(folder(tmp_path / "src", {"a.txt": "from the data"}))).returncode
        == 0
    )
    (dproject / "notes.txt").write_text("the project's own\n")
    git(dproject, "add", "-A")
    git(dproject, "commit", "-qm", "notes")
    run_id, url, access = start(dproject, "data=[toy@1:/data]", "resources.idle_timeout=20")
    listed = run_cli(dproject, "ls").stdout
    assert run_id in listed and f"JupyterLab: {url}" in listed and "RUNNING" in listed

    assert http(url)[0] == 200
    assert http(f"http://127.0.0.1:{access['port']}/api/contents", access["token"])[0] == 200
    assert http(f"http://127.0.0.1:{access['port']}/api/contents")[0] == 403  # no token, nothing
    assert http(f"http://127.0.0.1:{access['port']}/api/contents?token=wrong")[0] == 403
    assert access["token"] not in (dproject / ".runner" / "runs" / run_id / "run.log").read_text()  # masked

    said = execute(
        access,
        "import os, mlflow\n"
        "print(os.environ['MLFLOW_RUN_ID'])\n"  # (MLflow's first call takes it out of the environment)
        "print(open('/data/a.txt').read())\n"
        "open('/output/x', 'w').write('written in a cell')\n"
        "open('notes.txt', 'w').write('changed in the session')\n"
        "mlflow.log_metric('cell_metric', 2.5)\n",
    )
    assert "from the data" in said and run_id in said, said
    status, _ = http(
        f"http://127.0.0.1:{access['port']}/api/contents/analysis.ipynb", access["token"], "PUT",
        {"type": "notebook", "format": "json", "content": NOTEBOOK},
    )  # fmt: skip
    assert status in (200, 201)
    (dproject / "notes.txt").write_text("edited here meanwhile\n")  # newer than the session's view of it

    last_use = time.time()
    run = ended(dproject, run_id, timeout=20 + 30)  # within the idle timeout and 30 s of the last use
    assert run.info.status == "KILLED" and run.data.tags["runner.reason"].startswith("idle"), run.data.tags
    assert time.time() - last_use < 20 + 30
    assert containers(run_id) == []
    assert run.data.metrics["cell_metric"] == 2.5
    client = MlflowClient(store(dproject))
    kept = {a.path for a in client.list_artifacts(run_id, "workdir")}
    assert "workdir/analysis.ipynb" in kept and "workdir/notes.txt" in kept
    packages = Path(
        client.download_artifacts(run_id, "session-packages.txt", str(tmp_path / "pk"))
    ).read_text()
    assert "jupyterlab==4.6.6" in packages  # what the session's image holds besides the lock, recorded
    out = Path(client.download_artifacts(run_id, "output/x", str(tmp_path / "dl"))).read_text()
    assert out == "written in a cell"

    pulled = run_cli(dproject, "notebook", "pull", run_id)
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr  # one file refused
    assert "pulled analysis.ipynb" in pulled.stdout and "kept   notes.txt" in pulled.stdout
    assert "".join(json.loads((dproject / "analysis.ipynb").read_text())["cells"][0]["source"]) == "print(1)"
    assert (dproject / "notes.txt").read_text() == "edited here meanwhile\n"


def test_runner_stop_ends_a_session_at_once(project: Path) -> None:
    run_id, _, _ = start(project)
    stopped = run_cli(project, "stop", run_id, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    run = MlflowClient(store(project)).get_run(run_id)
    assert (run.info.status, run.data.tags["runner.reason"]) == ("KILLED", "stopped by runner stop")
    assert containers(run_id) == []


def test_a_taken_port_gives_another_and_says_so(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        run_id, url, access = start(project, f"jupyter.port={port}")
    assert f"port {port} is taken on 127.0.0.1: JupyterLab gets port {access['port']}" in access["out"]
    assert access["port"] != port and http(url)[0] == 200
    run_cli(project, "stop", run_id, check=True)


def test_jupyter_failing_to_start_fails_the_run_with_its_log(project: Path) -> None:
    (project / "jcfg").mkdir()
    (project / "jcfg" / "jupyter_server_config.json").write_text(
        '{"ServerApp": {"certfile": "/no/such.pem"}}'
    )
    docker_engine()
    proc = run_cli(project, *SMALL, "+env.variables.JUPYTER_CONFIG_DIR=/code/jcfg", timeout=900)
    assert proc.returncode == 1
    assert 'certfile "/no/such.pem" does not exist' in proc.stdout  # Jupyter's own last lines
    (run,) = all_runs(project)
    assert (run.info.status, run.data.tags["runner.reason"]) == ("FAILED", "exit code 1")
    assert containers(run.info.run_id) == []


@pytest.mark.parametrize(
    "args,said",
    [
        (["mode=notebook"], "mode: 'notebook' is not a mode. Modes: run, jupyter."),
        (["mode=jupyter", "resources.idle_timeout=0"], "resources.idle_timeout: 0 must be a positive number"),
        (
            ["mode=jupyter", "backend=local"],
            "mode=jupyter runs JupyterLab in a container: use backend=docker",
        ),
        # It becomes a requirement line: another index or a local path must not ride in on it.
        (
            ["mode=jupyter", "jupyter.version='4.6.6 --index-url=http://evil.example'"],
            "jupyter.version: '4.6.6 --",
        ),
    ],
)
def test_bad_session_input_is_one_line_and_no_run(project: Path, args: list[str], said: str) -> None:
    proc = run_cli(project, "env.requirements=[]", *args)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (project / "mlflow.db").exists()


def test_jupyterlab_opens_in_a_browser_on_the_session(project: Path, browser, tmp_path: Path) -> None:
    (project / "analysis.ipynb").write_text(json.dumps(NOTEBOOK))
    git(project, "add", "-A")
    git(project, "commit", "-qm", "a notebook")
    run_id, url, _ = start(project)
    try:
        browser.get(url.replace("/lab?", "/lab/tree/analysis.ipynb?"))
        body = wait_for_text(
            browser, "Python 3", timeout=120
        )  # the notebook's kernel, as JupyterLab shows it
        assert "analysis.ipynb" in body
        shot = tmp_path / "jupyterlab.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
    finally:
        run_cli(project, "stop", run_id, check=True)
