"""The `_target_`s a config may name: instantiating any other would be running arbitrary code."""

from __future__ import annotations

from typing import Any

# A project's model builders live in its own `models` package (models/ at its root); it names others in
# allow_targets.
ALLOWED_TARGET_PREFIXES = ("models.",)
EVALUATE_PREFIXES = ("runner.mnist.report.", "runner.vqa.report.")  # in-run reports
LOADER_PREFIXES = ("runner.loaders.", "runner.mnist.loader.", "runner.vqa.loader.", *ALLOWED_TARGET_PREFIXES)


def with_project(prefixes: tuple[str, ...], allow: Any) -> tuple[str, ...]:
    """`prefixes` and the project's own modules (`allow_targets`), each as a prefix of whole names."""
    return (*prefixes, *(f"{str(a).rstrip('.')}." for a in allow or ()))


def refused_target(node: Any, prefixes: tuple[str, ...], where: str) -> str | None:
    """The first `_target_` at or below `node` (Hydra builds nested nodes too) that is not under `prefixes`,
    as "WHERE._target_ 'X'"; None when every one is allowed. `node` is plain (dicts and lists)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and not str(value).startswith(prefixes):
                return f"{where}._target_ '{value}'"
            found = refused_target(value, prefixes, f"{where}.{key}")
            if found:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = refused_target(value, prefixes, f"{where}[{i}]")
            if found:
                return found
    return None
