"""Environment creation: pip vs uv (cold cache) vs uv (second environment, linked from uv's cache).

    python bench/envs.py [--requirements "tensorflow-cpu>=2.16,<3" "keras>=3,<4"]

Each tool installs the same lock into a fresh venv; the ratios are against pip, measured in this run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner.environment import Target, resolve_lock, uv_bin


def timed(steps: list[list[str]], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    for argv in steps:
        subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requirements", nargs="+", default=["tensorflow-cpu>=2.16,<3", "keras>=3,<4"])
    reqs = ap.parse_args().requirements
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lock = root / "lock.txt"
        lock.write_text(resolve_lock(reqs, Target(py), None, os.environ))
        env = {**os.environ, "UV_CACHE_DIR": str(root / "uv-cache")}
        pip = timed(
            [
                [sys.executable, "-m", "venv", str(root / "p")],
                [str(root / "p/bin/pip"), "install", "-q", "--require-hashes", "-r", str(lock)],
            ],
            env,
        )
        uv = [uv_bin(), "venv", "-q", "--python", sys.executable]

        def sync(name: str) -> list[list[str]]:
            return [
                [*uv, str(root / name)],
                [uv_bin(), "pip", "sync", "-q", "--python", str(root / name / "bin/python"), str(lock)],
            ]

        cold = timed(sync("u1"), env)
        warm = timed(sync("u2"), env)
    print(f"pip, fresh venv         {pip:6.1f} s   1.00")
    print(f"uv, cold cache          {cold:6.1f} s   {cold / pip:.2f} of pip")
    print(f"uv, second venv         {warm:6.1f} s   {warm / pip:.2f} of pip (linked from uv's cache)")


if __name__ == "__main__":
    main()
