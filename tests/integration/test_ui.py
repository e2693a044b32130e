"""The MLflow UI in a real browser (Debian's headless Chromium): the address `runner ui` prints opens the
experiments as model training (the runs table, not MLflow's GenAI view), a sweep shows as a parent with its
children nested, and the members compare side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.helpers import all_runs, free_port, run_cli, store, wait_for_text, wait_for_ui

pytestmark = pytest.mark.integration


def test_sweep_parent_children_and_compare_view(project: Path, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    score = (
        'command="python -c \\"import mlflow; mlflow.log_metric(\'score\', 2 * ${train.learning_rate})\\""'
    )
    run_cli(
        project,
        "-m",
        "backend=local",
        "env.requirements=[]",
        score,
        "train.learning_rate=0.25,0.5,0.75",
        "sweep.objective=score",
        check=True,
    )
    runs = all_runs(project)
    parent = next(r for r in runs if r.data.tags.get("runner.role") == "sweep")
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == 3

    # a project's own `runner` package: the UI's server processes never import it
    (project / "runner").mkdir()
    (project / "runner" / "__init__.py").write_text("raise SystemExit('the project runner was imported')\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with (tmp_path / "ui.out").open("w") as out:
        ui = subprocess.Popen(
            [sys.executable, "-P", "-m", "runner", "ui", "--port", str(port)],  # -P: as the `runner` script
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        base = wait_for_ui(ui, port)
        exp = parent.info.experiment_id
        printed = (tmp_path / "ui.out").read_text().splitlines()[0]
        assert printed == f"runner: MLflow UI at {base}"
        name = MlflowClient(store(project)).get_experiment(exp).name
        browse_as_model_training(browser, printed.split(" at ")[1], name, parent.info.run_name)

        browser.get(f"{base}/#/experiments/{exp}/runs")
        wait_for_text(browser, parent.info.run_name)
        row = browser.find_element(By.XPATH, f"//*[text()='{parent.info.run_name}']")
        cell = row.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]")
        cell.find_element(By.XPATH, ".//button").click()  # expand the sweep: its members are nested under it
        for kid in kids:
            wait_for_text(browser, kid.info.run_name)

        ids = urllib.parse.quote(json.dumps([k.info.run_id for k in kids]))
        browser.get(f"{base}/#/compare-runs?runs={ids}&experiments={urllib.parse.quote(json.dumps([exp]))}")
        body = wait_for_text(browser, "Comparing 3 Runs")
        for kid in kids:
            assert kid.info.run_name in body
        assert "score" in body and "1.5" in body and "train.learning_rate" in body
        deadline = time.time() + 60  # the parallel-coordinates plot renders after the page
        while not browser.find_elements(By.CSS_SELECTOR, ".main-svg") and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        shot = Path(os.environ.get("RUNNER_SCREENSHOT", tmp_path / "compare.png"))
        assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)


def browse_as_model_training(browser, address: str, experiment: str, run_name: str) -> None:
    """From the printed address, home -> the experiment -> home -> the experiment, by clicks: the experiment opens
    on its runs table (MLflow's GenAI view would open on an overview with traces and judges), and so it does again
    once the page is loaded afresh."""
    from selenium.webdriver.common.by import By

    def open_experiment() -> None:
        wait_for_text(browser, experiment)
        browser.find_element(By.XPATH, f'//a[text()="{experiment}"]').click()
        body = wait_for_text(browser, run_name)
        assert "Run Name" in body and "Judges" not in body and "Sessions" not in body, body
        assert "/runs" in browser.current_url and "workflowType=genai" not in browser.current_url

    browser.get(address)
    open_experiment()
    browser.find_element(By.CSS_SELECTOR, "a[href$='#/']").click()  # MLflow's logo: the home page
    open_experiment()
    browser.get(address)
    open_experiment()
