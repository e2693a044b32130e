"""Run by the base image's own Python in an environment's build (stdlib only): compile the bytecode of the
environment's packages inside uv's cache, where the environment's files are hard links to, so that every
environment linking a package shares its bytecode too (an environment is read-only in a run: Python could not
write it there, and would compile every module on every import). Prints the names of the packages whose bytecode
is new (its files linked into the environment as well).

argv: the environment's folder, uv's cache, a folder for the marks of packages already compiled."""

from __future__ import annotations

import compileall
import glob
import os
import re
import sys

# Files under a wheel's `NAME.data/` are moved at install and checked against its RECORD: never add any there.
SKIP = re.compile(r"\.data[/\\]")


def archives(cache: str) -> dict[tuple[int, int], str]:
    """(device, inode) of each cached package's METADATA -> its archive folder."""
    found: dict[tuple[int, int], str] = {}
    root = os.path.join(cache, "archive-v0")
    for entry in os.scandir(root) if os.path.isdir(root) else ():
        try:
            for sub in os.scandir(entry.path):
                if sub.name.endswith(".dist-info"):
                    st = os.stat(os.path.join(sub.path, "METADATA"))
                    found[(st.st_dev, st.st_ino)] = entry.path
        except OSError:  # not a package's folder, or one going: passed over
            continue
    return found


def link(folder: str, site: str) -> None:
    """Each bytecode file of a cached package linked at its place in the environment (a wheel's files outside its
    `.data` folder lie in site-packages as in the archive)."""
    for top, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.endswith(".data")] if top == folder else dirs
        if os.path.basename(top) != "__pycache__":
            continue
        place = os.path.join(site, os.path.relpath(top, folder))
        if not os.path.isdir(os.path.dirname(place)):
            continue
        os.makedirs(place, exist_ok=True)
        for name in files:
            target = os.path.join(place, name)
            if name.endswith(".pyc") and not os.path.exists(target):
                os.link(os.path.join(top, name), target)


def main(env: str, cache: str, marks: str) -> None:
    tag = sys.implementation.cache_tag
    cached = archives(cache)
    os.makedirs(marks, exist_ok=True)
    for dist in sorted(glob.glob(os.path.join(env, "lib", "python*", "site-packages", "*.dist-info"))):
        metadata = os.path.join(dist, "METADATA")
        if not os.path.isfile(metadata):
            continue
        st = os.stat(metadata)
        folder = cached.get((st.st_dev, st.st_ino))
        if folder is None:  # a copy, not a link: nothing to share
            continue
        mark = os.path.join(marks, f"{os.path.basename(folder)}.{tag}")
        if os.path.exists(mark):
            continue
        compileall.compile_dir(folder, quiet=2, rx=SKIP, workers=0)
        link(folder, os.path.dirname(dist))
        with open(mark, "w"):
            pass
        print(os.path.basename(dist)[: -len(".dist-info")].rsplit("-", 1)[0])


if __name__ == "__main__":
    main(*sys.argv[1:4])
