"""The package layout keeps its rule: imports point inward (docs/DESIGN.md, module map).

Layers, innermost first; a module may import its own package and packages of inner layers,
never an outer one nor another package of its own layer. The reference server
(``peer.dev.sim``) stands in for MigratoryData and imports nothing of the peer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PEER = Path(__file__).parent.parent / "peer"

LAYERS: list[set[str]] = [
    {"peer", "peer.errors"},
    {"peer.model", "peer.secret"},
    {"peer.routes"},
    {"peer.config"},
    {"peer.kafka"},
    {"peer.control"},
    {"peer.source", "peer.writer", "peer.ops"},
    {"peer.runner"},
    {"peer.dev", "peer.dev.localkafka", "peer.dev.sim", "peer.dev.procsignals", "peer.testing"},
    {"peer.dev.demo", "peer.dev.chaos", "peer.dev.bench"},
    {"peer.cli"},
]
#: the most loose modules directly in peer/ (the rest lives in packages by concept)
MAX_LOOSE = 5
MAX_LINES = 500


def package_of(module: str) -> str:
    parts = module.split(".")
    depth = 3 if parts[:2] == ["peer", "dev"] and len(parts) > 2 else 2
    return ".".join(parts[:depth])


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"{package} is in no layer of tests/test_architecture.py")


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PEER.rglob("*.py")):
        parts = path.relative_to(PEER.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "peer" or m.startswith("peer.")}


@pytest.mark.parametrize(("module", "path"), modules(), ids=str)
def test_imports_point_inward(module: str, path: Path) -> None:
    source = package_of(module)
    for target in imports_of(path):
        dest = package_of(target)
        if dest == source:
            continue
        assert source != "peer.dev.sim", f"{module} imports {target}: the sim imports no peer"
        assert layer_of(dest) < layer_of(source), (
            f"{module} ({source}) imports {target} ({dest}): imports must point inward"
        )


def test_few_loose_modules_and_none_too_long() -> None:
    loose = sorted(p.name for p in PEER.glob("*.py"))
    assert len(loose) <= MAX_LOOSE, loose
    long = {
        str(p): n for p in PEER.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
