"""The package's shape: imports run downward between floors (no circle, nothing reaching up),
names another subpackage uses are public, and `import distune` loads neither Ray nor Keras."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "distune"
# Bottom up; a unit imports only from its own floor or the ones below it.
FLOORS = ["errors", "_lazy", "ops", "space", "results", "search", "config", "trial", "sweep",
          "winner", "report", "pipeline", "nightly", "submit", "cli", "__main__", "__init__"]


def module_name(path: Path) -> str:
    parts = path.with_suffix("").relative_to(REPO).parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit(module: str) -> str:
    """The floor a module lives on: its subpackage, or itself for a top-level module."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def distune_imports(path: Path):
    """(line, imported module, names) for every import of distune, at any depth of the file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "distune":
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "distune":
                    yield node.lineno, a.name, []


def public_names(package: str) -> dict[str, str]:
    """A subpackage's `_NAMES` (its `__all__`): public name -> the submodule defining it."""
    init = PACKAGE / package / "__init__.py" if package else PACKAGE / "__init__.py"
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_NAMES":
            return ast.literal_eval(node.value)
    return {}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py") if "presets" not in p.parts}


def test_imports_run_downward_and_use_public_names():
    problems = []
    for name, path in modules().items():
        src = unit(name)
        for line, target, names in distune_imports(path):
            dst = unit(target) if target != "distune" else "__init__"
            where = f"{path.relative_to(REPO)}:{line} imports {target}"
            if FLOORS.index(dst) > FLOORS.index(src):
                problems.append(f"{where}: {dst} is above {src}")
            if dst != src and (PACKAGE / dst).is_dir():
                submodules = {p.stem for p in (PACKAGE / dst).glob("*.py")}
                hidden = [n for n in names if n not in public_names(dst) and n not in submodules]
                if hidden:
                    problems.append(f"{where}: {', '.join(hidden)} not in distune.{dst}.__all__")
    assert not problems, "\n".join(problems)


def test_no_import_circle_between_modules():
    graph = {name: set() for name in modules()}
    for name, path in modules().items():
        for _, target, names in distune_imports(path):
            package = target.partition(".")[2]
            lazy = public_names(package) if (PACKAGE / package.replace(".", "/")).is_dir() else {}
            for n in names or [""]:  # a submodule, a name defined in one, or the module itself
                for t in (f"{target}.{n}", f"distune.{lazy[n]}" if n in lazy else "", target):
                    if t in graph and t != name:
                        graph[name].add(t)
                        break
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import circle: " + " -> ".join(trail[trail.index(node):] + [node]))
        if state.get(node) == 2:
            return
        state[node] = 1
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        state[node] = 2

    for node in sorted(graph):
        visit(node, [])


def test_every_floor_is_listed():
    units = {unit(name) for name in modules()}
    assert units <= set(FLOORS), f"add {sorted(units - set(FLOORS))} to FLOORS"


@pytest.mark.parametrize("module", ["distune", "distune.cli"])
def test_import_is_light(module):
    code = (f"import sys, {module}; heavy = [m for m in ('ray', 'tensorflow', 'keras', 'jax') "
            "if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
