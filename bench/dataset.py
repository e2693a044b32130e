"""Dataset mounts: mounting a cached 1 MB version against a cached 1 GB version (goal: ratio <= 1.05).

    python bench/dataset.py [--quick]

It builds a throw-away git + DVC project, adds both versions with `runner data add`, mounts each once (the first
mount materialises it), then times what every later run pays for a mount: `runner.datasets.mount.resolve` (find
the version, check its read-only copy) plus linking it into a run directory, interleaved, many times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, Figure, spread

sys.path.insert(0, str(ROOT))

FILES = 16  # both versions hold the same number of files: only their size differs


def make(folder: Path, total_bytes: int) -> None:
    folder.mkdir(parents=True)
    per_file = total_bytes // FILES
    block = os.urandom(1 << 20)
    for i in range(FILES):
        with open(folder / f"part-{i:02d}.bin", "wb") as fh:
            fh.write(f"{folder.name}-{i}".encode())  # distinct content per file and version
            left = per_file
            while left > 0:
                fh.write(block[: min(left, len(block))])
                left -= len(block)


def measure(quick: bool) -> list[Figure]:
    small_mb, big_mb, repeat = (1, 32, 20) if quick else (1, 1024, 200)
    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        root = Path(tmp)
        saved = os.environ.get("RUNNER_CACHE")
        os.environ["RUNNER_CACHE"] = str(root / "cache")  # the default DVC remote goes there, not ~/.cache
        try:
            for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
                os.environ.setdefault(var, "bench")
            for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
                os.environ.setdefault(var, "bench@localhost")
            project = root / "project"
            project.mkdir()
            subprocess.run(["git", "init", "-q"], cwd=project, check=True)
            subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=project, check=True)

            from runner.datasets.add import add
            from runner.datasets.mount import link_into, resolve

            sizes = {"small": small_mb, "big": big_mb}
            added, first = {}, {}
            for name, mb in sizes.items():
                make(root / "src" / name, int(mb * (1 << 20)))
                t = time.perf_counter()
                add(project, name, root / "src" / name)
                added[name] = time.perf_counter() - t
            for name in sizes:
                t = time.perf_counter()
                resolve(project, (f"{name}@1",))
                first[name] = time.perf_counter() - t
            timings: dict[str, list[float]] = {name: [] for name in sizes}
            for i in range(repeat):
                for name in sizes if i % 2 else reversed(list(sizes)):
                    t = time.perf_counter()
                    link_into(root / "runs" / f"{name}-{i}", resolve(project, (f"{name}@1",)))
                    timings[name].append(time.perf_counter() - t)
        finally:
            if saved is None:
                os.environ.pop("RUNNER_CACHE", None)
            else:
                os.environ["RUNNER_CACHE"] = saved
    paired = statistics.median(b / s for s, b in zip(timings["small"], timings["big"], strict=True))
    return [
        Figure(
            f"dataset: mounting a cached {big_mb:g} MB version",
            f"mounting a cached {small_mb:g} MB version",
            f"the {big_mb:g} MB version (16 files each; {repeat} rounds, interleaved)",
            [t * 1e3 for t in timings["small"]],
            [t * 1e3 for t in timings["big"]],
            unit="ms",
            ratio=paired,
            goal="ratio <= 1.05",
            met=paired <= 1.05,
            extra={
                "`runner data add`": f"{added['small']:.1f} s / {added['big']:.1f} s",
                "first mount (materialise, md5-checked)": f"{first['small']:.2f} s / {first['big']:.2f} s",
            },
            note="The ratio is the median of the per-round ratios. A cached mount is one `git for-each-ref` "
            "and a `stat`: the data is never read or copied again.",
        )
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    for f in measure(ap.parse_args().quick):
        print(
            f"{f.name}: {spread(f.base, f.unit)} -> {spread(f.times, f.unit)}  ratio {f.ratio:.3f}  {f.extra}"
        )


if __name__ == "__main__":
    main()
