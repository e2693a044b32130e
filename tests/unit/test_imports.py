"""The house: no import circle among the runner's modules, counting every import (inside functions and under
TYPE_CHECKING too: a deferred import still ties two modules together), and no function over 60 lines (ruff keeps
the complexity limit: pyproject.toml)."""

from __future__ import annotations

import ast
from pathlib import Path

import runner

ROOT = Path(runner.__file__).parent
MAX_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, modules: set[str]) -> set[str]:
    """The runner's modules that `path` imports anywhere in its body."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {n for n in names if n in modules}
    return found - {name}


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imported(path, set(files)) for name, path in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (enough to say whether there is one, and to name it)."""
    state: dict[str, int] = {}
    found = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                found.append([*trail[trail.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return found


def test_the_walk_finds_a_circle_closed_inside_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "runner"
    pkg.mkdir()
    (pkg / "a.py").write_text("from runner.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from runner import a\n")
    global ROOT
    saved, ROOT = ROOT, pkg
    try:
        assert circles(graph()) == [["runner.a", "runner.b", "runner.a"]]
    finally:
        ROOT = saved


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_no_function_over_60_lines() -> None:
    long = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if size > MAX_LINES:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.name} ({size} lines)")
    assert sorted(long) == []
