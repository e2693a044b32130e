"""The base image: made by a recipe it names, left alone while that recipe is current, rebuilt when it changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from runner.environment.base_image import RECIPE_LABEL, recipe_hash
from tests.helpers import docker_engine, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.docker]


def test_the_base_image_names_its_recipe_and_is_kept_while_it_is_current(project: Path) -> None:
    engine = docker_engine()
    image = engine.images.get("runner-base:bookworm")
    assert image.labels[RECIPE_LABEL] == recipe_hash("bookworm")
    assert image.labels["runner.image.kind"] == "base"
    proc = run_cli(project, "image", "base", "--tag", "runner-base:bookworm", check=True)
    assert "up to date" in proc.stdout
    assert engine.images.get("runner-base:bookworm").id == image.id  # nothing rebuilt


def test_a_base_image_from_another_recipe_is_rebuilt(project: Path) -> None:
    engine = docker_engine()
    if os.geteuid() != 0 and not os.environ.get("RUNNER_REQUIRE_ALL"):
        pytest.skip(
            "runner image base runs debootstrap, which needs root; this user is not root (CI, as root, runs it)"
        )
    tag = "runner-test-base:old-recipe"
    # An image as an older runner left it: same tag, another recipe (here: one that predates the label).
    old = engine.containers.create("runner-base:bookworm", ["true"])
    try:
        old.commit("runner-test-base", "old-recipe", changes=[f"LABEL {RECIPE_LABEL}=older"])
    finally:
        old.remove()
    old_id = engine.images.get(tag).id
    try:
        proc = run_cli(project, "image", "base", "--tag", tag, check=True, timeout=900)
        rebuilt = engine.images.get(tag)
        assert rebuilt.id != old_id, proc.stdout
        assert rebuilt.labels[RECIPE_LABEL] == recipe_hash("bookworm")
        with pytest.raises(ImageNotFound):  # the old image, used by nothing, is not left behind untagged
            engine.images.get(old_id)
    finally:
        engine.images.remove(tag, force=True)
