"""`runner data ls [NAME]`: datasets, versions, file counts, sizes, checksums, creation time, message."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from runner.datasets import catalog
from runner.datasets.errors import UnknownDataset
from runner.datasets.repo import DataRepo


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def ls(project: Path, name: str | None, as_json: bool) -> str:
    repo = DataRepo(project)
    versions = catalog.versions(repo)
    if name is not None:
        mine = [v for v in versions if v.name == name]
        if not mine:
            raise UnknownDataset(name, sorted({v.name for v in versions}))
        versions = mine
    if as_json:
        return json.dumps([asdict(v) for v in versions], indent=2)
    if not versions:
        return "No datasets yet. Add one with: runner data add NAME PATH"
    rows = [("VERSION", "FILES", "SIZE", "MD5", "CREATED", "MESSAGE")]
    for v in versions:
        note = f"{v.message} (run {v.from_run})" if v.from_run else v.message
        rows.append((v.label, str(v.files), human(v.size), v.md5, v.created, note))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[5] for r in rows
    )
