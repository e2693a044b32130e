"""The RunSpec is pure: the same config and environment give an equal spec, field by field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.cli.run import with_command
from runner.compose.build import build_spec
from runner.compose.load import compose_config
from runner.compose.spec import HARNESS_ARGV, EnvSpec, Resources, check_requirement, flatten, parse_memory
from runner.compose.validate import validate
from runner.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def spec_for(*overrides: str, environ: dict[str, str] | None = None):
    cfg = compose_config(ROOT, ["+experiment=keras_mlp", *overrides])
    return build_spec(cfg, chosen="keras_mlp", project_dir="/p", environ=environ or {})


def test_spec_is_deterministic_and_complete() -> None:
    spec = spec_for("backend=local", "train.seed=7", "resources.memory=1.5g", "resources.timeout=60")
    assert spec == spec_for("backend=local", "train.seed=7", "resources.memory=1.5g", "resources.timeout=60")
    assert spec.argv == HARNESS_ARGV
    assert spec.backend == "local"
    assert spec.seed == 7
    assert spec.resources == Resources(cpus=None, memory_bytes=int(1.5 * 1024**3), timeout=60, gpus=None)
    assert spec.env == EnvSpec(
        image="runner-base:bookworm",
        requirements=("tensorflow-cpu>=2.16,<3", "keras>=3,<4"),
        variables=(("KERAS_BACKEND", "tensorflow"), ("TF_CPP_MIN_LOG_LEVEL", "2")),
    )
    assert spec.tracking_uri == "sqlite:////p/mlflow.db"
    assert spec.experiment == "keras_mlp"
    params = dict(spec.params)
    assert params["train.epochs"] == "20.0" and params["train.seed"] == "7" and params["model.units"] == "64"
    assert params["model._target_"] == "models.mlp.build"
    assert "\ntrain:\n  epochs: 20.0\n" in spec.config_yaml


UNREAD = (
    "model.",
    "dataset.",
    "train.",
    "evaluate",
    "allow_targets",
    "jupyter.",
    "sweep.",
    "mode=",
    "detach",
)


def params_of(*overrides: str, command: list[str] | None = None) -> dict[str, str]:
    cfg = with_command(compose_config(ROOT, list(overrides)), command)
    return dict(build_spec(cfg, chosen="e", project_dir="/p", environ={}, overrides=overrides).params)


def test_a_command_run_records_what_it_reads_and_what_the_user_set() -> None:
    params = params_of("backend=local", command=["python", "x.py", "--lr", "0.1"])
    assert not [k for k in params if f"{k}=".startswith(UNREAD)]
    assert params["command"] == "python x.py --lr 0.1" and params["backend.name"] == "local"
    assert {"data", "env.image", "resources.memory", "tracking.uri"} <= set(params)
    assert params_of("model.units=8", command=["python", "x.py"])["model.units"] == "8"  # set: recorded
    swept = params_of("command=python x.py --seed ${train.seed}")  # read through the command
    assert swept["train.seed"] == "0" and not [k for k in swept if k.startswith(("model.", "train.epochs"))]


def test_a_trainer_run_records_its_model_and_training_but_no_other_modes() -> None:
    params = params_of("+experiment=keras_mlp", "jupyter.port=9000", "sweep.parallel=2")
    assert params["model.units"] == "64" and params["train.epochs"] == "20.0" and "dataset._target_" in params
    assert "command" not in params and not [
        k for k in params if f"{k}=".startswith(("jupyter.", "sweep.", "mode="))
    ]
    session = params_of("mode=jupyter")
    assert session["jupyter.port"] == "8888" and not [
        k for k in session if k.startswith(("model.", "train."))
    ]


def test_command_mode_is_a_shell_command_passed_whole() -> None:
    spec = spec_for("command='python train.py --name \"a b\"; echo $X'")
    assert spec.argv == ("sh", "-c", 'python train.py --name "a b"; echo $X')
    assert spec.argv != HARNESS_ARGV


def test_tracking_uri_precedence() -> None:
    assert spec_for(environ={"MLFLOW_TRACKING_URI": "http://t:5000"}).tracking_uri == "http://t:5000"
    assert spec_for(
        "tracking.uri=sqlite:///x.db", environ={"MLFLOW_TRACKING_URI": "http://t"}
    ).tracking_uri == ("sqlite:///x.db")


def test_ca_bundle_from_config_else_the_hosts_pip_cert() -> None:
    assert spec_for(environ={"PIP_CERT": "/etc/ca.pem"}).env.ca_bundle == "/etc/ca.pem"
    assert (
        spec_for("env.ca_bundle=certs/corp.pem", environ={"PIP_CERT": "/x"}).env.ca_bundle
        == "/p/certs/corp.pem"
    )
    assert spec_for().env.ca_bundle is None


def test_secrets_are_names_only() -> None:
    spec = spec_for("env.secrets=[WANDB_KEY]", environ={"WANDB_KEY": "s3cret"})
    assert spec.env.secrets == ("WANDB_KEY",)
    assert "s3cret" not in repr(spec)


def test_gpus_forms() -> None:
    assert spec_for("resources.gpus=2").resources.gpus == 2
    assert spec_for("resources.gpus=[0,3]").resources.gpus == ("0", "3")
    assert spec_for("resources.gpus='1,2'").resources.gpus == ("1", "2")


@pytest.mark.parametrize(
    ("text", "size"),
    [("512m", 512 * 1024**2), ("4g", 4 * 1024**3), ("7000000", 7000000), ("2GB", 2 * 1024**3)],
)
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


def test_parse_memory_rejects_words() -> None:
    with pytest.raises(ConfigError, match="'lots' is not a size"):
        parse_memory("lots")


def test_parse_memory_rejects_what_no_run_can_live_in() -> None:
    with pytest.raises(ConfigError, match="'5m' is below the least a run can have, 6m"):
        parse_memory("5m")


def test_log_limit_forms() -> None:
    assert spec_for().resources.log_limit == 1024**3  # the default
    assert spec_for("resources.log_limit=64k").resources.log_limit == 64 * 1024
    assert spec_for("resources.log_limit=500M").resources.log_limit == 500 * 1024**2
    assert spec_for("resources.log_limit=1G").resources.log_limit == 1024**3
    assert spec_for("resources.log_limit=65536").resources.log_limit == 65536
    assert spec_for("resources.log_limit=null").resources.log_limit is None


def test_flatten() -> None:
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None}) == {"a.b": "1", "a.c": "[1, 2]", "d": "null"}


@pytest.mark.parametrize(
    ("line", "allowed"),
    [
        ("numpy==1.26.4", True),
        ("torch>=2; python_version >= '3.10'", True),
        ("--index-url http://elsewhere/simple", False),
        ("-i http://elsewhere/simple", False),
        ("--extra-index-url=http://x", False),
        ("-e /etc", False),
        ("-r /etc/passwd", False),
        ("/home/someone/pkg", False),
        ("./vendored", False),
        ("pkg @ file:///etc/pkg", False),
    ],
)
def test_requirement_lines_are_packages_not_pip_options(line: str, allowed: bool) -> None:
    if allowed:
        assert check_requirement(line, "env.requirements") == line
    else:
        with pytest.raises(ConfigError, match="is not a package requirement"):
            check_requirement(line, "env.requirements")


def test_index_url_must_be_a_url() -> None:
    assert (
        spec_for("env.index_url=https://mirror.example/simple").env.index_url
        == "https://mirror.example/simple"
    )
    with pytest.raises(ConfigError, match=re.escape("env.index_url: 'file:///x' is not an http")):
        validate(compose_config(ROOT, ["+experiment=keras_mlp", "env.index_url=file:///x"]))
    with pytest.raises(
        ConfigError, match=re.escape("env.requirements: '-r /etc/passwd' is not a package requirement")
    ):
        validate(compose_config(ROOT, ["+experiment=keras_mlp", "env.requirements=['-r /etc/passwd']"]))
