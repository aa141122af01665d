"""The package's imports follow the layout of docs/development.md: no import circles, and no arrow from a room to one
above it. The imports are read with ``ast`` (every ``import``, module-level or inside a function), nothing is run.

Each room has a level; a module may import its own room and rooms of a lower level only. A module belongs to the
room with the longest matching name, so ``dataflow.serving.diffusers.speed`` is a room inside
``dataflow.serving.diffusers``, itself inside ``dataflow.serving`` (whose own modules are the documented entry
points, which nothing below them imports).
"""

from __future__ import annotations

import ast
import pathlib
from typing import Iterator, Optional

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dataflow"

# The rooms, lowest first. Rooms of one level do not import each other.
ROOM_LEVELS = {
    "dataflow.core": 0,  # requests, results, errors, the serving protocol: imports nothing of ours
    "dataflow.logger": 0,
    "dataflow.http": 1,  # the HTTP layer below the API serving, the API judge and any remote caller
    "dataflow.io": 1,  # images, atomic writes, dataset readers, where model weights come from
    "dataflow.utils": 2,  # step files, checkpoints, the run manifest
    "dataflow.serving.diffusers.speed": 3,  # the speed kit: knows diffusers transformers, not our serving
    "dataflow.serving.diffusers": 4,  # the shared diffusers serving and one adapter per family
    "dataflow.serving.api": 4,  # request formats and the API serving
    "dataflow.serving.classic": 4,  # the Pillow backend
    "dataflow.serving": 5,  # the documented entry points, a thin layer over the backends
    "dataflow.engines": 5,  # the driver and the engines: servings reach them as objects, never by import
    "dataflow.operators": 6,  # DataFlow-MM's operators: generation, scoring, filtering
    "dataflow.exporters": 7,
    "dataflow.reports": 7,
    "dataflow.cli": 8,
    "dataflow.statics": 9,  # the seed scripts
    "dataflow": 0,  # the package root: its version, and the logger set up once
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def module_file(name: str) -> Optional[pathlib.Path]:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: pathlib.Path) -> Iterator[str]:
    """The modules of ours that ``path`` imports: ``from a.b import c`` names ``a.b.c`` when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "dataflow" or target.startswith("dataflow."):
                while target and module_file(target) is None:
                    target = target.rpartition(".")[0]
                if target:
                    yield target


def import_graph(root: pathlib.Path = PACKAGE) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        graph.setdefault(module_name(path), set()).update(
            t for t in imported_modules(path) if t != module_name(path))
    return graph


def room_of(name: str) -> str:
    rooms = [room for room in ROOM_LEVELS if name == room or name.startswith(room + ".")]
    if not rooms:
        raise AssertionError(f"{name} is in no room of ROOM_LEVELS; add its room here and to docs/development.md")
    return max(rooms, key=len)


def shown(name: str) -> str:
    path = module_file(name)
    return str(path.relative_to(ROOT)) if path else name


def find_circle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import circle as [a, b, ..., a], or None (depth-first search, in a stable order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for source in sorted(graph):
        source_room = room_of(source)
        for target in sorted(graph[source]):
            target_room = room_of(target)
            if target_room == source_room or target == "dataflow.logger" and source_room != "dataflow.core":
                continue
            if ROOM_LEVELS[target_room] >= ROOM_LEVELS[source_room]:
                problems.append(
                    f"{shown(source)} imports {shown(target)}: room {source_room} (level "
                    f"{ROOM_LEVELS[source_room]}) may not import room {target_room} (level {ROOM_LEVELS[target_room]})")
    return problems


def test_the_package_has_no_import_circle():
    circle = find_circle(import_graph())
    assert circle is None, "import circle: " + " -> ".join(shown(name) for name in circle)


def test_every_import_points_down_the_layout():
    problems = layering_violations(import_graph())
    assert not problems, "imports against docs/development.md's layout:\n" + "\n".join(problems)


def test_core_imports_nothing_of_ours():
    graph = import_graph()
    core = {s: sorted(t for t in targets if room_of(t) != "dataflow.core")
            for s, targets in graph.items() if room_of(s) == "dataflow.core"}
    assert not any(core.values()), {shown(s): t for s, t in core.items() if t}


def test_every_room_is_in_the_documented_layout():
    layout = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    for room in ROOM_LEVELS:
        if room in ("dataflow", "dataflow.logger"):
            continue
        folder = room.split(".")[-1] + "/"
        assert folder in layout, f"{room} is not drawn in docs/development.md's layout"


# -- the checks themselves fail on a bad tree ------------------------------------------------------------------
def _tree(tmp_path: pathlib.Path, files: dict[str, str]) -> dict[str, set[str]]:
    global ROOT
    saved = ROOT
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    try:
        ROOT = tmp_path
        return import_graph(tmp_path / "dataflow")
    finally:
        ROOT = saved


@pytest.fixture
def bad_tree(tmp_path):
    return _tree(tmp_path, {
        "dataflow/__init__.py": "",
        "dataflow/core/__init__.py": "",
        "dataflow/core/rows.py": "from dataflow.io.sources import reference\n",
        "dataflow/io/__init__.py": "",
        "dataflow/io/sources/__init__.py": "",
        "dataflow/io/sources/reference.py": "def f():\n    from dataflow.core.rows import x\n",
    })


def test_a_circle_is_found_and_named(bad_tree):
    circle = find_circle(bad_tree)
    assert circle == ["dataflow.core.rows", "dataflow.io.sources.reference", "dataflow.core.rows"]


def test_an_upward_import_is_named_with_both_files(bad_tree, tmp_path):
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = layering_violations(bad_tree)
    finally:
        ROOT = saved
    assert problems == ["dataflow/core/rows.py imports dataflow/io/sources/reference.py: room dataflow.core "
                        "(level 0) may not import room dataflow.io (level 1)"]
