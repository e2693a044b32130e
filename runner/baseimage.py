"""`runner image base`: a Python base image from the distribution's own packages, no registry needed.

debootstrap (minbase) with python3, venv and CA certificates, imported with `docker import`; about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from runner.errors import BackendUnavailable

PACKAGES = ("python3", "python3-venv", "ca-certificates")


def build_base(tag: str, suite: str, mirror: str) -> str:
    from runner.backends.docker import LABEL, client

    if not shutil.which("debootstrap"):
        raise BackendUnavailable("debootstrap is not installed: sudo apt-get install -y debootstrap")
    if os.geteuid() != 0:
        raise BackendUnavailable("Building a base image with debootstrap needs root: sudo runner image base")
    docker = client()
    with tempfile.TemporaryDirectory(prefix="runner-rootfs-") as rootfs:
        print(f"[runner] debootstrap {suite} from {mirror} ...", flush=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, rootfs, mirror],
            check=True,
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(rootfs, junk), ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        repo, _, version = tag.partition(":")
        docker.api.import_image_from_stream(
            tar.stdout,
            repository=repo,
            tag=version or "latest",
            changes=["ENV LANG=C.UTF-8", f"LABEL {LABEL}=base", 'CMD ["python3"]'],
        )
        if tar.wait() != 0:
            raise BackendUnavailable("tar of the debootstrap root failed")
    image = docker.images.get(tag)
    print(f"[runner] base image {tag}: {image.id}", flush=True)
    return str(image.id)
