"""GPU checks, done before anything is built or started."""

from __future__ import annotations

import shutil
import subprocess

from runner.errors import BackendUnavailable


def host_gpus() -> list[str]:
    """Indices of the NVIDIA GPUs on this host (empty without a driver)."""
    if not shutil.which("nvidia-smi"):
        return []
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True
    )
    return [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()] if proc.returncode == 0 else []


def require_host_gpus(wanted: int | tuple[str, ...] | None) -> list[str]:
    """The GPUs to use; raises if the host has none, or fewer than asked for."""
    found = host_gpus()
    if not found:
        raise BackendUnavailable(
            "env.gpu=true, but this host has no NVIDIA GPU (nvidia-smi finds none). Use env.gpu=false."
        )
    if isinstance(wanted, int) and wanted > len(found):
        raise BackendUnavailable(
            f"resources.gpus={wanted}, but this host has {len(found)} GPU(s): {', '.join(found)}."
        )
    if isinstance(wanted, tuple):
        unknown = [g for g in wanted if g not in found]
        if unknown:
            raise BackendUnavailable(
                f"resources.gpus: no GPU {', '.join(unknown)} here. GPUs: {', '.join(found)}."
            )
        return list(wanted)
    return found[:wanted] if isinstance(wanted, int) else found
