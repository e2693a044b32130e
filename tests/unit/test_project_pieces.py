"""The pieces that let the runner work in any project: where configs come from, a command as argv, requirements
found by name, the project's own modules, a log a person can read."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.cli.run import split_command, with_command
from runner.compose.build import build_spec, requirements_by_name
from runner.compose.load import PACKAGED, compose_config, config_dirs, find_project_dir, options
from runner.compose.spec import check_requirement, command_argv, requirement_file_lines
from runner.errors import ConfigError
from runner.launch.execute import in_project
from runner.tracking.logtext import line_blocks, raw_log, readable_log

ROOT = Path(__file__).resolve().parents[2]


def test_a_project_without_conf_composes_from_the_package_and_its_own_conf_comes_first(
    tmp_path: Path,
) -> None:
    """The package ships the runner's own groups (backend, tracking, the default env and the random data its
    reader makes); models, datasets and experiments are a project's (this repository's: the FloydHub examples)."""
    assert config_dirs(tmp_path) == [PACKAGED]
    assert options(tmp_path, "model") == [] and options(tmp_path, "experiment") == []
    bare = compose_config(tmp_path, [])
    assert bare.model is None and bare.dataset.name == "random_binary" and bare.backend.name == "docker"
    with pytest.raises(
        ConfigError, match=r"Unknown key 'model\.units': no model is chosen\. Choose one first"
    ):
        compose_config(tmp_path, ["model.units=3"])
    # A group with no option at all: Hydra would take the choice for a plain value.
    with pytest.raises(ConfigError, match=r"Unknown experiment 'mnist_cnn'\. Available: \(none\)"):
        compose_config(tmp_path, ["+experiment=mnist_cnn"])
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mlp.yaml").write_text("_target_: mine.build\n")
    (tmp_path / "conf" / "backend").mkdir(parents=True)
    (tmp_path / "conf" / "backend" / "local.yaml").write_text("name: local\n")  # replaces the runner's
    assert config_dirs(tmp_path) == [tmp_path / "conf", PACKAGED]
    assert options(tmp_path, "model") == ["mlp"]
    assert {"docker", "local", "slurm"} <= set(options(tmp_path, "backend"))
    # Its `mlp` is the default model, as this repository's is.
    assert compose_config(tmp_path, []).model._target_ == "mine.build"
    assert compose_config(ROOT, ["+experiment=keras_mlp"]).model._target_ == "models.mlp.build"
    assert compose_config(ROOT, ["model=mnist_cnn"]).model._target_ == "models.mnist_cnn.build"


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("python train.py", ("python", "train.py")),
        (shlex.join(["python", "t.py", "a b", "it's", "$HOME"]), ("python", "t.py", "a b", "it's", "$HOME")),
        ("echo $HOME", ("sh", "-c", "echo $HOME")),  # shell syntax: the shell runs it
        ("a && b", ("sh", "-c", "a && b")),
        ("python t.py | tee x", ("sh", "-c", "python t.py | tee x")),
        ("echo 'unbalanced", ("sh", "-c", "echo 'unbalanced")),
        ("PYTHONPATH=src python t.py", ("sh", "-c", "PYTHONPATH=src python t.py")),  # an assignment
        ("exit 3", ("sh", "-c", "exit 3")),  # a builtin
        ("cd sub", ("sh", "-c", "cd sub")),
    ],
)
def test_a_simple_command_runs_as_its_words_and_anything_else_through_the_shell(
    command: str, argv: tuple[str, ...]
) -> None:
    assert command_argv(command) == argv


def test_a_command_after_the_separator_arrives_intact_through_the_config() -> None:
    words = ["python", "t.py", "--name", "a b", "it's", "$HOME", "${HOME}", "\\${x}", "x\\", "${oc.env:HOME}"]
    overrides, command = split_command(["env.gpu=false", "--", *words])
    assert overrides == ["env.gpu=false"]
    cfg = with_command(OmegaConf.create({"command": None}), command)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert command_argv(resolved["command"]) == tuple(words)  # interpolation-looking words stay words
    assert split_command(["a=1"]) == (["a=1"], None)
    with pytest.raises(ConfigError, match="nothing after '--' to run"):
        split_command(["a=1", "--"])
    with pytest.raises(ConfigError, match="'-cn' before '--': only config overrides go there"):
        split_command(["-cn", "other", "--", "python", "x.py"])


def test_requirements_are_found_by_name(tmp_path: Path) -> None:
    assert requirements_by_name(tmp_path, None) is None
    (tmp_path / "requirements.txt").write_text("numpy\n")
    assert requirements_by_name(tmp_path, None) == "requirements.txt"
    (tmp_path / "floyd_requirements.txt").write_text("numpy\n")
    assert requirements_by_name(tmp_path, None) == "floyd_requirements.txt"
    assert requirements_by_name(tmp_path, "reqs/gpu.txt") == "reqs/gpu.txt"  # the config's own choice
    assert requirements_by_name(tmp_path, "none") is None  # and none at all


def test_a_hashed_requirements_file_reads_as_its_packages() -> None:
    text = (
        "# pip-compile --generate-hashes\n"
        "numpy==1.26.4 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "    # via pandas\n"
        "six==1.16.0 --hash=sha256:cc  # a comment\n"
        "wheel @ https://example.org/wheel-0.1-py3-none-any.whl\n"
    )
    lines = [(n, check_requirement(line, "f")) for n, line in requirement_file_lines(text)]
    assert lines == [
        (2, "numpy==1.26.4"),
        (6, "six==1.16.0"),
        (7, "wheel @ https://example.org/wheel-0.1-py3-none-any.whl"),
    ]
    for line in ("x @ /home/someone/x", "vendor/pkg", "x @ file:///x"):
        with pytest.raises(ConfigError, match="is not a package requirement"):
            check_requirement(line, "f")


def test_the_root_config_of_a_projects_own_hydra_app_is_not_taken_for_the_runners(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("db:\n  driver: mysql\n")  # the project's app's own
    cfg = compose_config(tmp_path, [])  # the runner's root config, not the app's
    assert "db" not in cfg and cfg.backend.name == "docker"
    (tmp_path / "src" / "conf").mkdir(parents=True)  # a conf/ deeper down: the git repository is the project
    assert find_project_dir(tmp_path / "src") == tmp_path


def test_a_recorded_command_reads_back_as_it_was() -> None:
    cfg = with_command(compose_config(ROOT, []), ["sh", "-c", "echo ${HOME} $USER"])
    spec = build_spec(cfg, chosen="default", project_dir="/p", environ={})
    again = OmegaConf.create(spec.config_yaml)
    assert command_argv(again.command) == ("sh", "-c", "echo ${HOME} $USER")


def test_the_projects_own_modules_are_found_without_importing_them(tmp_path: Path) -> None:
    (tmp_path / "mypkg" / "sub").mkdir(parents=True)
    (tmp_path / "mypkg" / "__init__.py").write_text("raise SystemExit('imported!')\n")
    (tmp_path / "mypkg" / "nets.py").write_text("")
    (tmp_path / "top.py").write_text("")
    for module in ("mypkg", "mypkg.nets", "mypkg.sub", "top"):
        assert in_project(module, tmp_path), module
    for module in ("os", "json", "mypkg.nope", "nope", "runner"):
        assert not in_project(module, tmp_path), module


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain\nlines\n", "plain\nlines\n"),
        ("\r1/3 [=  ]\r2/3 [== ]\r3/3 [===]\ndone\n", "3/3 [===]\ndone\n"),
        ("\x1b[1m\x1b[32mgreen\x1b[0m text\n", "green text\n"),
        ("long line here\rshort\n", "shortline here\n"),  # as a terminal leaves it
        ("50%\r\x1b[Kdone\n", "done\n"),  # erase to the end of the line
        ("abc\x08\x08XY\n", "aXY\n"),
        ("\x1b]0;a title\x07visible\n", "visible\n"),
        ("windows\r\n", "windows\n"),
        # Keras: backspaces over the last drawing, then a carriage return, then the next drawing.
        (
            "Epoch 1/1\n\x1b[1m1/2\x1b[0m \x1b[32m━\x1b[0m\x1b[37m━\x1b[0m 1s - loss: 0.9"
            + "\x08" * 18
            + "\r\x1b[1m2/2\x1b[0m \x1b[32m━━\x1b[0m 2s - loss: 0.5\n",
            "Epoch 1/1\n2/2 ━━ 2s - loss: 0.5\n",
        ),
    ],
)
def test_the_stored_log_is_what_a_terminal_would_finally_show(raw: str, shown: str) -> None:
    assert readable_log(raw) == shown


def test_a_log_file_is_read_with_its_redraws_on_one_line(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes("".join(f"\r{i}/100 ━" for i in range(1, 101)).encode() + b"\ndone\r\n")
    assert readable_log(raw_log(log)) == "100/100 ━\ndone\n"


@pytest.mark.parametrize("size", [1, 7, 64, 1 << 20])
def test_a_log_read_a_block_of_lines_at_a_time_reads_as_a_whole(tmp_path: Path, size: int) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(("".join(f"\r{i}/30 ━é" for i in range(30)) + "\nж long line " * 9 + "no end").encode())
    with open(log, "rb") as src:
        blocks = list(line_blocks(src, size))
    assert "".join(readable_log(b) for b in blocks) == readable_log(raw_log(log))
    assert all(b.endswith("\n") for b in blocks[:-1]) and "\ufffd" not in "".join(blocks)


def test_hydra_argv_keeps_the_overrides_one_group(tmp_path: Path) -> None:
    """Hydra's parser takes its overrides as one group: the runner's search path goes among them, after `-m`."""
    from runner.compose.load import hydra_argv

    (tmp_path / "conf").mkdir()
    search = hydra_argv(tmp_path, [])[-1]
    assert search.startswith("hydra.searchpath=['file://") and search.endswith("/conf']")
    assert hydra_argv(tmp_path, ["-m", "a=1,2", "b=3"]) == ["-m", search, "a=1,2", "b=3"]
    assert hydra_argv(tmp_path, ["--cfg", "job", "a=1"]) == ["--cfg", "job", search, "a=1"]
    assert hydra_argv(tmp_path, ["--multirun"]) == ["--multirun", search]
    # No conf/ of its own: nothing to add.
    assert hydra_argv(tmp_path / "none", ["-m", "a=1"]) == ["-m", "a=1"]


def test_records_naming_the_builders_the_runner_once_shipped_reproduce_with_the_projects(
    tmp_path: Path,
) -> None:
    from runner.launch.reproduce import renamed, with_builders

    cfg = OmegaConf.create({"model": {"_target_": "runner.models.mlp.build"}, "dataset": {"_target_": "x.y"}})
    assert renamed(cfg) and cfg.model._target_ == "models.mlp.build" and cfg.dataset._target_ == "x.y"
    assert not renamed(cfg)
    project, tree = tmp_path / "project", tmp_path / "tree"
    (project / "models").mkdir(parents=True)
    (project / "models" / "mlp.py").write_text("def build(): ...\n")
    tree.mkdir()
    assert with_builders(tree, project) == [
        "models/: the record's model builders shipped with the runner then; the project's models/ is used"
    ]
    assert (tree / "models" / "mlp.py").read_text() == "def build(): ...\n"
    assert with_builders(tree, project) == []  # the recorded code has its own


def test_builders_taken_for_a_reproduction_never_bring_in_what_a_link_points_at(tmp_path: Path) -> None:
    from runner.launch.reproduce import with_builders

    secret = tmp_path / "host secret"
    secret.write_text("not for runs\n")
    project, tree = tmp_path / "project", tmp_path / "tree"
    (project / "models").mkdir(parents=True)
    (project / "models" / "leak.py").symlink_to(secret)
    tree.mkdir()
    with_builders(tree, project)
    assert (
        tree / "models" / "leak.py"
    ).is_symlink()  # a link, as the code snapshot keeps it; no copy of its target
    linked, other = tmp_path / "linked", tmp_path / "other"
    (other / "models").mkdir(parents=True)
    linked.mkdir()
    (linked / "models").symlink_to(other / "models", target_is_directory=True)
    (tmp_path / "tree2").mkdir()
    assert with_builders(tmp_path / "tree2", linked) == [] and not (tmp_path / "tree2" / "models").exists()
