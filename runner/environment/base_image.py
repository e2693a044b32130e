"""`runner image base`: a Python base image from the distribution's own packages, no registry needed.

debootstrap (minbase) with python3, venv and CA certificates, imported with `docker import`; about a minute.
The image carries the hash of the recipe that made it (label `runner.base.recipe`) and the list of packages it
holds (`/etc/runner-base/packages.txt`). A tag whose image was made by the current recipe is left as it is, so
running the command again is cheap; a changed recipe (or `--force`) builds it anew.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile

from runner.errors import BackendUnavailable

PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bump when the steps below change what goes into the image.
RECIPE_VERSION = "2"
RECIPE_LABEL = "runner.base.recipe"
CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')


def recipe_hash(suite: str) -> str:
    """What makes the image: the suite, the packages, the steps (the mirror only serves them)."""
    from runner.environment.lock import content_hash

    return content_hash(RECIPE_VERSION, suite, *PACKAGES, *CHANGES)[:16]


def current_recipe(docker: object, tag: str) -> str | None:
    """The recipe hash of the image tagged `tag`, or None where there is none (or it predates the label)."""
    from docker.errors import ImageNotFound

    try:
        image = docker.images.get(tag)  # type: ignore[attr-defined]
    except ImageNotFound:
        return None
    return (image.labels or {}).get(RECIPE_LABEL)


def build_base(tag: str, suite: str, mirror: str, force: bool = False) -> str:
    from runner.backends.docker import IMAGE_KIND, client

    docker = client()
    recipe = recipe_hash(suite)
    if not force and current_recipe(docker, tag) == recipe:
        image = docker.images.get(tag)
        print(f"[runner] base image {tag}: up to date (recipe {recipe}), {image.id}", flush=True)
        return str(image.id)
    if not shutil.which("debootstrap"):
        raise BackendUnavailable("debootstrap is not installed: sudo apt-get install -y debootstrap")
    if os.geteuid() != 0:
        raise BackendUnavailable("Building a base image with debootstrap needs root: sudo runner image base")
    old = _image_id(docker, tag)
    with tempfile.TemporaryDirectory(prefix="runner-rootfs-") as rootfs:
        print(f"[runner] debootstrap {suite} from {mirror} (recipe {recipe}) ...", flush=True)
        subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite, rootfs, mirror],
            check=True,
            stdout=sys.stdout,
            stderr=sys.stderr,
        )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(os.path.join(rootfs, junk), ignore_errors=True)
        _write_manifest(rootfs)
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        repo, _, version = tag.partition(":")
        docker.api.import_image_from_stream(
            tar.stdout,
            repository=repo,
            tag=version or "latest",
            changes=[
                *CHANGES,
                f"LABEL {IMAGE_KIND}=base",
                f"LABEL {RECIPE_LABEL}={recipe}",
                f"LABEL runner.base.suite={suite}",
            ],
        )
        if tar.wait() != 0:
            raise BackendUnavailable("tar of the debootstrap root failed")
    image = docker.images.get(tag)
    if old and old != image.id:
        from docker.errors import APIError

        with contextlib.suppress(APIError):  # still used by a container: it stays, untagged
            docker.images.remove(old)
    print(f"[runner] base image {tag}: {image.id} (recipe {recipe})", flush=True)
    return str(image.id)


def _image_id(docker: object, tag: str) -> str | None:
    from docker.errors import ImageNotFound

    try:
        return str(docker.images.get(tag).id)  # type: ignore[attr-defined]
    except ImageNotFound:
        return None


def _write_manifest(rootfs: str) -> None:
    """The exact packages this build got, inside the image: what the recipe resolved to on that day."""
    listing = subprocess.run(
        ["chroot", rootfs, "dpkg-query", "-W", "-f", "${Package}=${Version}\\n"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    folder = os.path.join(rootfs, "etc", "runner-base")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "packages.txt"), "w") as fh:
        fh.write(listing)
