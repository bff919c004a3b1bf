"""Imports go one way: no cycle among the package's modules (nor among bench/ scripts), and the core
(``trt_perception`` except ``cli/``, ``ros/``, ``evaluation/``) never imports ``cli/``, ``ros/``,
``evaluation/`` or ``bench/``.

The imports are read from the source with ``ast`` (nothing is executed), every one of them: at module
level and inside functions alike, except those under ``if TYPE_CHECKING:``, which never run. An
import of ``a.b.c`` (``import a.b.c``, ``from a.b import c`` where ``c`` is a module, ``from a.b.c
import name``) is an edge to ``a.b.c``; ``from a.b import name`` where ``name`` is no module is an
edge to the package ``a.b`` (its ``__init__``). The checks are tried on small packages written to
``tmp_path``, so that a broken graph reader cannot make the real checks pass unnoticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "trt_perception"
TOOLS = ("cli", "ros", "evaluation")  # the layers above the core
FORBIDDEN_FROM_CORE = tuple(f"{PACKAGE}.{tool}" for tool in TOOLS) + ("bench",)

Graph = dict[str, set[str]]


def module_names(root: Path, top: str) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (or script folder) ``root/top``."""
    names = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements in ``node``, leaving out the body of ``if TYPE_CHECKING:``."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _imports(child)


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules among ``known`` that module ``name`` (file ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for statement in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(statement, ast.Import):
            targets.update(alias.name for alias in statement.names)
            continue
        base = statement.module or ""
        if statement.level:
            anchor = package.split(".")[: len(package.split(".")) - (statement.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        targets.add(base)
        targets.update(f"{base}.{alias.name}" for alias in statement.names)
    return {target for target in targets if target in known}


def import_graph(root: Path, tops: tuple[str, ...]) -> Graph:
    """Module -> modules it imports, for every module under ``root/top`` for each of ``tops``."""
    files = {name: path for top in tops for name, path in module_names(root, top).items()}
    known = set(files)
    return {name: imported_modules(name, path, known) - {name} for name, path in files.items()}


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when the graph has none."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" afterwards
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def is_core(module: str) -> bool:
    """Whether ``module`` belongs to the core: the package, but not cli/, ros/ or evaluation/."""
    if module != PACKAGE and not module.startswith(f"{PACKAGE}."):
        return False
    return not any(module == f"{PACKAGE}.{tool}" or module.startswith(f"{PACKAGE}.{tool}.") for tool in TOOLS)


def upward_imports(graph: Graph) -> list[str]:
    """``core -> tool`` for every import from the core into cli/, ros/, evaluation/ or bench/."""
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        if is_core(module)
        for target in targets
        if any(target == top or target.startswith(f"{top}.") for top in FORBIDDEN_FROM_CORE)
    )


# --------------------------------------------------------------------------- the checks, on small packages


def write_package(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_cycle_through_relative_lazy_and_package_imports_is_found(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from . import b\n",  # b is a module: edge to pkg.b
            "pkg/b.py": "def f():\n    from pkg.sub import helper\n",  # helper is a name: edge to pkg.sub
            "pkg/sub/__init__.py": "from ..a import thing\n",  # relative, two levels
        },
    )
    graph = import_graph(root, ("pkg",))
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.b"] == {"pkg.sub"} and graph["pkg.sub"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub", "pkg.a"]


def test_type_checking_imports_and_outside_modules_are_no_edges(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import numpy\nfrom pkg import b\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\nimport typing\n"
                "if TYPE_CHECKING:\n    from pkg.a import x\n"
                "if typing.TYPE_CHECKING:\n    import pkg.a\nelse:\n    import pkg.c\n"
            ),
            "pkg/c.py": "",
        },
    )
    graph = import_graph(root, ("pkg",))
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert find_cycle(graph) is None


def test_core_importing_a_tool_is_found(tmp_path: Path) -> None:
    root = write_package(
        tmp_path,
        {
            f"{PACKAGE}/__init__.py": "",
            f"{PACKAGE}/core.py": f"def calibrate():\n    from {PACKAGE}.cli.infer import read_image\n",
            f"{PACKAGE}/cli/__init__.py": "",
            f"{PACKAGE}/cli/infer.py": f"from {PACKAGE} import core\n",
            f"{PACKAGE}/ros/node.py": f"from {PACKAGE}.cli import infer\n",  # tools may import each other
            "bench/__init__.py": "",
            "bench/run.py": f"from {PACKAGE} import core\n",
        },
    )
    graph = import_graph(root, (PACKAGE, "bench"))
    assert upward_imports(graph) == [f"{PACKAGE}.core -> {PACKAGE}.cli.infer"]
    assert find_cycle(graph) == [f"{PACKAGE}.core", f"{PACKAGE}.cli.infer", f"{PACKAGE}.core"]


# --------------------------------------------------------------------------- the checks, on this repository


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(REPO, (PACKAGE, "bench"))


def test_the_graph_sees_the_package(graph: Graph) -> None:
    assert {f"{PACKAGE}.pipeline", f"{PACKAGE}.tensorrt.backend", "bench.run_bench"} <= set(graph)
    assert f"{PACKAGE}.backends" in graph[f"{PACKAGE}.pipeline"]
    assert f"{PACKAGE}.tensorrt.backend" in graph[f"{PACKAGE}.backends"]  # a lazy import counts


def test_no_import_cycle(graph: Graph) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_never_imports_cli_ros_evaluation_or_bench(graph: Graph) -> None:
    assert upward_imports(graph) == []


def test_cpu_pipeline_and_tensorrt_support_stay_below_what_uses_them(graph: Graph) -> None:
    assert not {m for m in graph[f"{PACKAGE}.pipeline"] if m.startswith(f"{PACKAGE}.gpu")}
    support = graph[f"{PACKAGE}.tensorrt.runtime_support"]
    assert not {m for m in support if m.startswith(f"{PACKAGE}.tensorrt")}, support
