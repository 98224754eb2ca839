"""Imports run one way: echo <- exporters <- node <- worker, and nothing imports the composition root.

Within node/, each folder is one job and the folders import each other without a loop:
config <- store <- dicom, delivery, broker <- ops <- serve. Function-level imports count.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.architecture.import_graph import collapse, cycles, import_graph, imports_of

ROOT = Path(__file__).resolve().parents[2]
COMPOSITION_ROOT = "node.serve"

# package -> the project packages it must never import
FORBIDDEN = {
    "echo": {"exporters", "node", "worker", "migrations"},
    "exporters": {"node", "worker"},
    "node": {"worker"},
}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_scan_sees_every_package(graph: dict[str, set[str]]) -> None:
    tops = {_top(name) for name in graph}
    assert tops == {"echo", "exporters", "node", "worker", "migrations"}
    assert len(graph) > 100
    assert "node.store.jobs" in graph["worker.inference"]  # a known edge is seen


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_lower_package_imports_no_higher_one(graph: dict[str, set[str]], package: str) -> None:
    offenders = {
        source: sorted(target for target in targets if _top(target) in FORBIDDEN[package])
        for source, targets in graph.items()
        if _top(source) == package
    }
    assert {source: targets for source, targets in offenders.items() if targets} == {}


def test_nothing_imports_the_composition_root(graph: dict[str, set[str]]) -> None:
    importers = {
        source
        for source, targets in graph.items()
        if not source.startswith(COMPOSITION_ROOT)
        and any(target == COMPOSITION_ROOT or target.startswith(COMPOSITION_ROOT + ".") for target in targets)
    }
    assert importers == set()


def test_no_import_cycle_between_modules(graph: dict[str, set[str]]) -> None:
    assert cycles(graph) == []


@pytest.mark.parametrize("depth", [1, 2])
def test_no_import_cycle_between_packages(graph: dict[str, set[str]], depth: int) -> None:
    assert cycles(collapse(graph, depth)) == []


def test_the_scan_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("VALUE = 1\n")
    (package / "high.py").write_text("def late():\n    from .low import VALUE\n    import json\n")
    known = {"pkg", "pkg.low", "pkg.high"}

    assert imports_of("pkg.high", package / "high.py", known) == {"pkg.low"}


def test_a_cycle_is_found_and_collapsed_per_package() -> None:
    graph = {"a.x": {"b.y"}, "b.y": {"a.z"}, "a.z": set(), "c.w": {"a.x"}}

    assert cycles(graph) == []
    assert cycles(collapse(graph, 1)) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


MAX_MODULE_LINES = 400


def test_no_module_is_longer_than_a_reader_takes_in_at_once() -> None:
    from tests.architecture.import_graph import project_modules

    long = {
        name: lines
        for name, path in project_modules(ROOT).items()
        if not name.startswith("migrations") and (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these where a reader would (more than {MAX_MODULE_LINES} lines): {long}"


def test_the_readme_layout_names_every_folder_of_the_node_and_no_other() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    named = set(re.findall(r"^node/(\w+)/", layout, re.M))
    folders = {path.parent.name for path in (ROOT / "node").glob("*/__init__.py")}
    assert named == folders
