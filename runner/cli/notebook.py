"""`runner notebook pull`: what a session wrote in its working directory, back into the project."""

from __future__ import annotations

import argparse

from runner.compose.load import find_project_dir
from runner.errors import RunnerError
from runner.harness.shim import write_json
from runner.runs import owner, session


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    notebook = sub.add_parser("notebook", help="sessions (mode=jupyter)")
    notebook_sub = notebook.add_subparsers(dest="what", required=True)
    pull = notebook_sub.add_parser(
        "pull",
        help="copy the notebooks and files a session wrote back into the project (never over newer ones)",
    )
    pull.add_argument("run_id")
    pull.set_defaults(fn=cmd_notebook_pull)


def cmd_notebook_pull(args: argparse.Namespace) -> int:
    """Copy what a session (or any run) wrote in its working directory back into the project; a project file
    changed since the session started is left alone, and named."""

    project = find_project_dir()
    run_dir = owner.find_run_dir(project, args.run_id)
    manifest = owner.read_json(run_dir.code_manifest)
    state = owner.read_json(run_dir.state) or {}
    if not run_dir.code.is_dir() or not isinstance(manifest, dict):
        raise RunnerError(
            f"Run {run_dir.root.name} has no working directory here any more: its files are the run's workdir/ "
            f"artifacts (runner ui, or mlflow artifacts download -r {run_dir.root.name} -a workdir)."
        )
    # What earlier pulls copied: theirs to replace, not the user's edits.
    ledger_path = run_dir.pulled
    ledger = owner.read_json(ledger_path) or {}
    copied, refused = session.pull(run_dir.code, manifest, project, float(state.get("created", 0)), ledger)
    write_json(ledger_path, ledger)
    for rel in copied:
        print(f"pulled {printable(rel)}")
    for rel in refused:
        print(
            f"kept   {printable(rel)}: the project's copy changed after the session started, or the file is not one "
            "to copy (a link on the way, over the size limit): copy it by hand to replace it"
        )
    if not copied and not refused:
        print(f"Nothing to pull: run {run_dir.root.name} wrote nothing in its working directory.")
    return 1 if refused else 0


def printable(name: str) -> str:
    """A name a run chose, safe to print on a terminal (no escape sequences)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
