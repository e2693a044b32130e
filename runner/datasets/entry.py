"""`data=[NAME@VERSION:MOUNT, ...]` entries: parsed and checked from the config alone (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from runner.errors import ConfigError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Where the runner puts code, output and its harness: a dataset mounted at, above or below one would hide it.
RESERVED = ("/code", "/output", "/checkpoint", "/opt/runner", "/opt/env")
# The system's own folders: a dataset over one would hide what every program needs (or the kernel's view).
SYSTEM = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # would garble the record's tags and the log
EXAMPLE = "e.g. data=[mnist@1:/input] or data=[mnist@latest] (mounted at /input/mnist)"


@dataclass(frozen=True)
class DataRef:
    """One entry as written: the dataset, the version asked for (a number, latest, or a git rev), the target."""

    name: str
    version: str
    target: str


@dataclass(frozen=True)
class DataMount:
    """One entry resolved: the exact version, its checksum, and the host folder that is mounted read-only."""

    name: str
    version: str  # "3", or the git rev asked for when no version tag holds that content
    rev: str  # the commit whose data.dvc holds it
    md5: str  # DVC's checksum of the dataset folder (md5 of its listing, ending in .dir)
    files: int
    size: int
    source: str  # host path of the read-only materialised copy
    target: str  # path inside the run


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ConfigError(
            f"Dataset name '{name}' is not allowed: use letters, digits, '-' and '_' (at most 64), e.g. mnist."
        )
    return name


def parse(entry: str) -> DataRef:
    """`NAME@VERSION[:MOUNT]` -> DataRef; raises ConfigError naming the entry and the fix."""
    head, sep, target = str(entry).partition(":")
    name, at, version = head.partition("@")
    if not at or not version:
        raise ConfigError(f"data: '{entry}' has no version. Write NAME@VERSION[:MOUNT], {EXAMPLE}.")
    check_name(name)
    if not sep:
        target = f"/input/{name}"
    return DataRef(name, version, _check_target(entry, target))


def _check_target(entry: str, target: str) -> str:
    """The mount point in its one spelling (`//proc/./x/` is `/proc/x`), checked on that spelling."""
    if not target.startswith("/"):
        raise ConfigError(f"data: '{entry}': the mount point '{target}' must be an absolute path, {EXAMPLE}.")
    path = PurePosixPath("/" + target.lstrip("/"))  # POSIX keeps a leading '//': one slash is the same folder
    if ".." in path.parts:
        raise ConfigError(f"data: '{entry}': the mount point '{target}' must not contain '..'.")
    norm = str(path)
    if norm == "/":
        raise ConfigError(f"data: '{entry}': cannot mount a dataset over '/'. Use a folder, {EXAMPLE}.")
    if CONTROL.search(norm):
        raise ConfigError(f"data: {entry!r}: the mount point {norm!r} holds a control character, {EXAMPLE}.")
    for reserved in RESERVED:
        if _overlaps(norm, reserved):
            raise ConfigError(
                f"data: '{entry}': the mount point '{norm}' overlaps {reserved}, which the runner owns "
                f"({', '.join(RESERVED)} are taken). Use another folder, e.g. /input."
            )
    if norm == "/tmp":
        raise ConfigError(
            f"data: '{entry}': the mount point '/tmp' is the run's home (caches go there): it must stay writable. "
            "Use another folder, e.g. /input."
        )
    system = next((s for s in SYSTEM if norm == s or norm.startswith(s + "/")), None)
    if system:
        raise ConfigError(
            f"data: '{entry}': the mount point '{norm}' lies in {system}, a system folder a dataset may not hide "
            f"({', '.join(SYSTEM)}). Use another folder, e.g. /input."
        )
    return norm


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def parse_all(entries: list[str] | tuple[str, ...]) -> tuple[DataRef, ...]:
    """Every entry parsed; mount points must not overlap and a dataset is mounted once per run."""
    refs = tuple(parse(e) for e in entries)
    for i, a in enumerate(refs):
        for b in refs[:i]:
            if a.target == b.target:
                raise ConfigError(
                    f"data: '{b.name}@{b.version}' and '{a.name}@{a.version}' share the mount point "
                    f"'{a.target}'. Give each dataset its own folder, e.g. /input/{a.name}."
                )
            if _overlaps(a.target, b.target):
                inner, outer = (a, b) if len(a.target) > len(b.target) else (b, a)
                raise ConfigError(
                    f"data: the mount point '{inner.target}' ({inner.name}) lies inside '{outer.target}' "
                    f"({outer.name}). Give each dataset its own folder, e.g. /input/{inner.name}."
                )
            if a.name == b.name:
                raise ConfigError(
                    f"data: dataset '{a.name}' is listed twice. Mount one version of each dataset per run."
                )
    return refs
