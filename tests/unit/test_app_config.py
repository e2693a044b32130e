"""A Hydra application's config files, as a run left them in its folder, read into `app.*` params warily."""

from __future__ import annotations

import os
from pathlib import Path

from runner.tracking.appconfig import MAX_BYTES, app_params


def write(folder: Path, rel: str, text: str) -> Path:
    path = folder / rel / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_one_config_flattened_under_app(tmp_path: Path) -> None:
    write(tmp_path, "outputs/2024-01-01/12-00-00", "optim:\n  lr: 0.1\n  betas: [0.9, 0.99]\nname: null\n")
    params, said = app_params([(tmp_path, "workdir", {})])
    assert params == {"app.optim.lr": "0.1", "app.optim.betas": "[0.9, 0.99]", "app.name": "null"}
    assert said == ["app.*: 3 params from workdir/outputs/2024-01-01/12-00-00/.hydra/config.yaml"]


def test_a_multirun_gives_the_values_its_jobs_share(tmp_path: Path) -> None:
    write(tmp_path, "multirun/d/t/0", "lr: 0.1\nbatch: 32\n")
    write(tmp_path, "multirun/d/t/1", "lr: 0.2\nbatch: 32\n")
    params, said = app_params([(tmp_path, "workdir", {})])
    assert params == {"app.batch": "32"}
    assert "2 Hydra configs differ in lr: those are no app.* params" in said


def test_what_the_run_did_not_write_is_passed_over(tmp_path: Path) -> None:
    outside = tmp_path / "host secret.yaml"
    outside.write_text("token: abc\n")
    run = tmp_path / "run"
    (run / "linked" / ".hydra").mkdir(parents=True)
    os.symlink(outside, run / "linked" / ".hydra" / "config.yaml")  # a link to a host file
    (run / "elsewhere").mkdir()
    os.symlink(tmp_path / "host", run / "elsewhere" / ".hydra")  # a linked folder
    write(tmp_path, "host/..", "token: abc\n")
    staged = write(run, "committed", "old: 1\n")  # in the code as it was staged
    info = staged.stat()
    unchanged = {"committed/.hydra/config.yaml": [info.st_size, info.st_mtime_ns]}
    assert app_params([(run, "workdir", unchanged)]) == ({}, [])


def test_a_file_that_is_no_config_is_said_never_raised(tmp_path: Path) -> None:
    write(tmp_path, "a", "key: [unclosed\n")
    write(tmp_path, "b", "- a list\n")
    write(
        tmp_path, "c", "x: &a [1, 1]\ny: &b [*a, *a]\nz: [*b, *b]\n"
    )  # aliases: a chain grows without bound
    write(tmp_path, "d", "x: " + "1" * MAX_BYTES + "\n")
    write(tmp_path, "e", "[" * 100_000)  # the parser slows with depth: refused at once
    write(tmp_path, "f", "a:\n" + "- " * 100_000 + "x\n")  # loading it would recurse as deep
    params, said = app_params([(tmp_path, "output", {})])
    assert params == {}
    assert [line.split(": not taken as app.* params: ")[0] for line in said] == [
        f"output/{c}/.hydra/config.yaml" for c in "abcdef"
    ]
    assert "not a YAML mapping" in said[1] and "aliases" in said[2] and "larger than" in said[3]
    assert "nested deeper than 32 levels" in said[4] and "nested deeper" in said[5]
