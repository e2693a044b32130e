"""The management verbs, one module each registering its own parser: `runner VERB ...`."""

from __future__ import annotations

import argparse

from runner.cli import compare, init, logs, ls, manage, notebook, reproduce, resume, stop, ui
from runner.datasets import cli as data

# In the order `runner --help` lists them.
MODULES = (init, ls, logs, ui, stop, resume, reproduce, compare, notebook, manage, data)
VERBS = (
    "init", "ls", "logs", "attach", "ui", "stop", "resume", "compare", "sweep", "reproduce", "data", "gc", "image",
    "notebook",
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner", description="Manage runs. Run a config with: runner +experiment=NAME"
    )
    sub = p.add_subparsers(dest="verb", required=True)
    for module in MODULES:
        module.add_parser(sub)
    return p


def dispatch(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args))
