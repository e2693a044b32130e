"""`runner data add|ls|import`: the argument parsers and what each prints."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.datasets.errors import DatasetError


def _project() -> Path:
    from runner.compose.load import find_project_dir

    return find_project_dir()


def cmd_add(args: argparse.Namespace) -> int:
    from runner.datasets.add import add

    project = _project()
    if (args.path is None) == (args.from_run is None):
        raise DatasetError(
            f"Give a PATH or --from-run RUN_ID (one of them): runner data add {args.name} PATH"
        )
    if args.from_run:
        from runner.datasets.fromrun import run_output

        with run_output(project, args.from_run) as output:
            added = add(
                project, args.name, output, args.message or f"output of run {args.from_run}", args.from_run
            )
    else:
        added = add(project, args.name, Path(args.path).resolve(), args.message)
    return _report(added)


def cmd_import(args: argparse.Namespace) -> int:
    from runner.datasets.importer import PUBLIC_URL, import_dataset

    source = args.source or PUBLIC_URL
    if not source.startswith(("http://", "https://", "file://")):
        source = str(Path(source).resolve())
    return _report(import_dataset(_project(), args.name, source, args.message))


def _report(added: object) -> int:
    from runner.datasets.add import Added

    assert isinstance(added, Added)
    v = added.version
    if not added.new:
        print(f"runner: identical to the latest version {v.label} (md5 {v.md5}); no new version made.")
    print(v.label)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    from runner.datasets.ls import ls

    print(ls(_project(), args.name, args.json))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    data = sub.add_parser("data", help="dataset versions (DVC-tracked)")
    verbs = data.add_subparsers(dest="what", required=True)
    add = verbs.add_parser(
        "add", help="the next version of dataset NAME from a file, a folder or a run's output"
    )
    add.add_argument("name")
    add.add_argument("path", nargs="?")
    add.add_argument("--from-run", metavar="RUN_ID", help="make the version from a finished run's /output")
    add.add_argument("-m", "--message")
    add.set_defaults(fn=cmd_add)
    ls = verbs.add_parser("ls", help="datasets, versions, files, sizes, checksums")
    ls.add_argument("name", nargs="?")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(fn=cmd_ls)
    imp = verbs.add_parser(
        "import", help="MNIST (checked against published SHA-256 sums) or Kaggle's digit CSVs"
    )
    imp.add_argument("name")
    imp.add_argument(
        "--from", dest="source", metavar="DIR_OR_URL", help="a mirror folder, a .zip, or a base URL"
    )
    imp.add_argument("-m", "--message")
    imp.set_defaults(fn=cmd_import)
