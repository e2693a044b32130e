"""Time to mount a cached 1 MB and a cached 1 GB dataset version; prints the ratio (goal <= 1.05).

Run from anywhere: `python bench/mount.py` (`--big-mb 64` for a quicker look). It builds a throw-away git + DVC
project in a temp dir, adds both versions with `runner data add`, mounts each once (the first mount materialises
it), then times what every later run pays for a mount: `runner.datasets.mount.resolve` (find the version, check
its read-only copy) plus linking it into a run directory, interleaved, many times, and compares medians.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-mb", type=float, default=1)
    ap.add_argument("--big-mb", type=float, default=1024)
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="runner-bench-") as tmp:
        root = Path(tmp)
        os.environ["RUNNER_CACHE"] = str(root / "cache")  # the default DVC remote goes there, not ~/.cache
        for var, value in (("GIT_AUTHOR_NAME", "bench"), ("GIT_COMMITTER_NAME", "bench")):
            os.environ.setdefault(var, value)
        for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
            os.environ.setdefault(var, "bench@localhost")
        project = root / "project"
        project.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "init"], cwd=project, check=True)

        from runner.datasets.add import add
        from runner.datasets.mount import link_into, resolve

        sizes = {"small": args.small_mb, "big": args.big_mb}
        for name, mb in sizes.items():
            make(root / "src" / name, int(mb * (1 << 20)))
            t = time.perf_counter()
            print(f"add {name} ({mb:g} MB): {add(project, name, root / 'src' / name).version.label}", end="")
            print(f" in {time.perf_counter() - t:.1f} s")
        for name in sizes:
            t = time.perf_counter()
            resolve(project, (f"{name}@1",))
            print(f"first mount of {name} (materialise, md5-checked): {time.perf_counter() - t:.2f} s")

        timings: dict[str, list[float]] = {name: [] for name in sizes}
        for i in range(args.repeat):
            for name in sizes if i % 2 else reversed(list(sizes)):
                run_root = root / "runs" / f"{name}-{i}"
                t = time.perf_counter()
                link_into(run_root, resolve(project, (f"{name}@1",)))
                timings[name].append(time.perf_counter() - t)
        small, big = (statistics.median(timings[n]) for n in sizes)
        paired = statistics.median(b / s for s, b in zip(timings["small"], timings["big"], strict=True))
        fastest = min(timings["big"]) / min(timings["small"])
        print(
            f"cached mount, median of {args.repeat}: {args.small_mb:g} MB {small * 1e3:.2f} ms, "
            f"{args.big_mb:g} MB {big * 1e3:.2f} ms"
        )
        print(
            f"ratio big/small: {paired:.3f} median of paired ratios (goal <= 1.05); {big / small:.3f} ratio of "
            f"medians; {fastest:.3f} ratio of fastest"
        )
        return 0 if paired <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
