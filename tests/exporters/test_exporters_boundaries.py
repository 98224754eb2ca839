"""exporters/ imports nothing from node/ or worker/ (DESIGN.md: data flows one way)."""

from __future__ import annotations

import ast
from pathlib import Path

import exporters

FORBIDDEN = ("node", "worker")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_imports_node_or_worker() -> None:
    modules = sorted(Path(exporters.__file__).parent.glob("*.py"))

    offenders = {path.name: imported_roots(path) & set(FORBIDDEN) for path in modules}

    assert len(modules) >= 9
    assert {name: roots for name, roots in offenders.items() if roots} == {}


def test_the_scan_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import json\nfrom node.settings import Settings\nfrom . import sibling\n")

    assert imported_roots(sample) == {"json", "node"}
