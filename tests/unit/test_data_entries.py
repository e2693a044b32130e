"""`data=[NAME@VERSION:MOUNT]` entries: parsed and checked from the config alone, mounted read-only."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from docker.types import Mount

from runner.backends.docker import container_spec
from runner.compose.build import build_spec
from runner.compose.load import compose_config
from runner.compose.validate import validate
from runner.datasets import record
from runner.datasets.entry import DataMount, DataRef, parse, parse_all
from runner.errors import ConfigError
from runner.runs.rundir import RunDir

ROOT = Path(__file__).resolve().parents[2]


def test_entry_forms() -> None:
    assert parse("mnist@1:/input") == DataRef("mnist", "1", "/input")
    assert parse("mnist@latest") == DataRef("mnist", "latest", "/input/mnist")
    assert parse("mnist@HEAD~1:/data/m/") == DataRef("mnist", "HEAD~1", "/data/m")
    assert parse("a_b-2@3f2a9c:/in put/x'y") == DataRef("a_b-2", "3f2a9c", "/in put/x'y")  # hostile but valid


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (["mnist:/input"], "'mnist:/input' has no version"),
        (["mnist"], "has no version"),
        (["mnist@"], "has no version"),
        (["mnist@1:relative/path"], "must be an absolute path"),
        (["mnist@1:/input/../etc"], "must not contain '..'"),
        (["mnist@1:/"], "cannot mount a dataset over '/'"),
        (["mnist@1:/code"], "overlaps /code"),
        (["mnist@1:/output"], "overlaps /output"),
        (["mnist@1:/output/x"], "overlaps /output"),
        (["mnist@1:/opt"], "overlaps /opt/runner"),
        (["mnist@1:/opt/env/lib"], "overlaps /opt/env"),
        # System folders, in every spelling that names them: the check sees the normalised path.
        (["mnist@1:/proc"], "'/proc' lies in /proc, a system folder"),
        (["mnist@1://proc"], "'/proc' lies in /proc"),
        (["mnist@1:/./proc/"], "'/proc' lies in /proc"),
        (["mnist@1:///etc//ssl/."], "'/etc/ssl' lies in /etc"),
        (["mnist@1:/usr/lib/x"], "lies in /usr"),
        (["mnist@1:/dev/shm"], "lies in /dev"),
        (["mnist@1:/input/a\nb"], "holds a control character"),
        (["mnist@1:/tmp"], "the mount point '/tmp' is the run's home"),
        (["a@1:/input", "b@1:/input"], "share the mount point"),
        (["a@1:/input", "b@1:/input/b"], "'/input/b' \\(b\\) lies inside '/input'"),
        (["a@1:/x", "a@2:/y"], "listed twice"),
        (["../x@1:/input"], "is not allowed"),
        (["a;rm -rf@1"], "is not allowed"),
    ],
)
def test_malformed_entries(entries: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_all(entries)


def test_validate_checks_data_entries_before_anything() -> None:
    cfg = compose_config(ROOT, ["+experiment=keras_mlp", "data=[mnist@1:relative]"])
    with pytest.raises(ConfigError, match="must be an absolute path"):
        validate(cfg)
    validate(compose_config(ROOT, ["+experiment=keras_mlp", "data=[mnist@1:/input/m,kaggle@latest]"]))


MOUNT = DataMount(
    "mnist",
    "2",
    "c0ffee",
    "d41d8cd98f00b204e9800998ecf8427e.dir",
    4,
    1234,
    "/p/.runner/datasets/d41d",
    "/input",
)


def test_container_gets_each_dataset_read_only() -> None:
    cfg = compose_config(ROOT, ["+experiment=keras_mlp", "data=[mnist@2:/input]"])
    spec = replace(build_spec(cfg, chosen="e", project_dir="/p", environ={}), mounts=(MOUNT,))
    kw = container_spec(spec, RunDir(Path("/r")), "img", {"MLFLOW_RUN_ID": "x"})
    assert kw["mounts"] == [
        Mount("/code", "/r/code", type="bind", read_only=False),
        Mount("/output", "/r/output", type="bind", read_only=False),
        Mount("/opt/runner", "/r/harness", type="bind", read_only=True),
        Mount("/var/spool/runner", "/r/spool", type="bind", read_only=False),
        Mount("/checkpoint", "/r/checkpoint", type="bind", read_only=False),
        Mount("/input", "/p/.runner/datasets/d41d", type="bind", read_only=True),
    ]


def test_record_tags() -> None:
    assert record.tags((MOUNT,)) == {
        "runner.data": "mnist@2:/input",
        "runner.data.mnist.version": "2",
        "runner.data.mnist.rev": "c0ffee",
        "runner.data.mnist.md5": "d41d8cd98f00b204e9800998ecf8427e.dir",
        "runner.data.mnist.files": "4",
        "runner.data.mnist.size": "1234",
        "runner.data.mnist.mount": "/input",
    }
    assert record.tags(()) == {}
