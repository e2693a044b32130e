"""The versions there are: annotated git tags `data/NAME/vN`, whose message records the version's facts."""

from __future__ import annotations

import re
from dataclasses import dataclass

from runner.datasets.repo import DataRepo

TAG = re.compile(r"^refs/tags/data/([^/]+)/v(\d+)$")
_FIELD = re.compile(r"^([a-z0-9-]+): (.*)$")


@dataclass(frozen=True)
class Version:
    name: str
    number: int
    rev: str  # the commit the tag names
    md5: str
    files: int
    size: int
    created: str  # ISO 8601, the tag's date
    message: str
    from_run: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}@{self.number}"

    @property
    def tag(self) -> str:
        return tag_name(self.name, self.number)


def tag_name(name: str, number: int) -> str:
    return f"data/{name}/v{number}"


def tag_message(message: str, md5: str, files: int, size: int, from_run: str | None) -> str:
    lines = [" ".join(message.split()), "", f"md5: {md5}", f"files: {files}", f"size: {size}"]
    if from_run:
        lines.append(f"from-run: {from_run}")
    return "\n".join(lines) + "\n"


def versions(repo: DataRepo, name: str | None = None) -> list[Version]:
    """All versions (of NAME), by name then number."""
    fmt = "%(refname)%1f%(*objectname)%1f%(creatordate:iso-strict)%1f%(contents)%1e"
    pattern = f"refs/tags/data/{name}/" if name else "refs/tags/data/"
    out = []
    for record in repo.git("for-each-ref", f"--format={fmt}", pattern).split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 4 or not (m := TAG.match(parts[0])):
            continue
        lines = parts[3].splitlines()
        fields: dict[str, str] = {f.group(1): f.group(2) for line in lines[1:] if (f := _FIELD.match(line))}
        if "md5" not in fields:
            continue  # a tag of that shape the runner did not make
        out.append(
            Version(
                name=m.group(1),
                number=int(m.group(2)),
                rev=parts[1],
                md5=fields["md5"],
                files=int(fields.get("files", 0)),
                size=int(fields.get("size", 0)),
                created=parts[2],
                message=lines[0] if lines else "",
                from_run=fields.get("from-run"),
            )
        )
    return sorted(out, key=lambda v: (v.name, v.number))


def names(repo: DataRepo) -> list[str]:
    return sorted({v.name for v in versions(repo)})
