"""`runner init`: make the project you already have a runner project. It writes a starter conf/ (one example
experiment, commented) and has git ignore the runner's state; it changes nothing else and overwrites nothing."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from runner.errors import ConfigError
from runner.runs.gitexclude import OWN

IGNORED = tuple(OWN)

EXAMPLE = """\
# @package _global_
# An experiment: what one kind of run changes from the runner's defaults. Run it with
#   runner +experiment=example
# and change any value on the command line: runner +experiment=example resources.memory=8g
# (runner +experiment=example --cfg job prints the whole config it composes to.)

# Your script, unchanged. It runs in a fresh container, in its own copy of this project: what it writes there
# and in /output is kept with the run. `runner run -- python train.py --lr 0.01` runs a command without a config.
command: python train.py

# Packages: floyd_requirements.txt (else requirements.txt) at the project root is used when present, or:
# env:
#   requirements: [pandas==2.2.3]
#   gpu: true

# Data versioned with `runner data add mydata ./path`, mounted read-only where your script reads it:
# data: ["mydata@latest:/input/mydata"]

# Limits, and the MLflow experiment the runs are filed under (default: the project's name):
# resources:
#   memory: 8g
#   timeout: 3600
# tracking:
#   experiment: my-study

# The runner's own Keras trainer instead of a script (set command: null): a model and a dataset, e.g. with
# your own builder in mypkg/models.py (a function returning a keras.Model):
# allow_targets: [mypkg]
# model:
#   _target_: mypkg.models.build
"""


def init(project: Path) -> list[str]:
    """Write the starter files into `project`; what was written, one line each. Refuses where conf/ exists."""
    conf = project / "conf"
    if conf.exists():
        there = sorted(str(p.relative_to(project)) for p in conf.rglob("*") if p.is_file())[:5]
        raise ConfigError(
            f"runner init: {conf} exists already ({', '.join(there) or 'empty'}): nothing was changed. Add "
            "an experiment to it instead, e.g. conf/experiment/NAME.yaml."
        )
    inside = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=project, capture_output=True, text=True
    )
    if inside.returncode != 0:
        raise ConfigError(
            f"runner init: {project} is not a git repository, and the runner records your code by its commit. "
            "Make it one first: git init && git add -A && git commit -m start"
        )
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "example.yaml").write_text(EXAMPLE)
    done = ["conf/experiment/example.yaml: an example experiment (runner +experiment=example)"]
    ignore = project / ".gitignore"
    have = ignore.read_text().splitlines() if ignore.is_file() else []
    missing = [p for p in IGNORED if p not in have and "/" + p not in have]
    if missing:
        text = ignore.read_text() if ignore.is_file() else ""
        sep = "" if not text or text.endswith("\n") else "\n"
        ignore.write_text(
            f"{text}{sep}# the runner's records and state\n" + "".join(f"{p}\n" for p in missing)
        )
        done.append(f".gitignore: {', '.join(missing)} ignored")
    return done


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    init = sub.add_parser("init", help="make this git repository a runner project (a starter conf/)")
    init.set_defaults(fn=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    for line in init(Path.cwd()):
        print(f"[runner] {line}")
    print("[runner] next: runner run -- python train.py   (or: runner +experiment=example)")
    return 0
