"""Layering: ``ranker.nn`` (layers) and ``ranker.data`` (files → arrays) never import each other.

Shared pieces (hash functions) live outside both packages (:mod:`ranker.hashing`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ranker

PACKAGE = Path(ranker.__file__).parent
FORBIDDEN = {"nn": "ranker.data", "data": "ranker.nn"}  # package -> what it must not import


def imported_modules(source: str, module: str) -> set[str]:
    """Absolute names of the modules `source` imports (relative imports resolved for `module`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(source: str, module: str) -> list[str]:
    """The imports in `source` (module `module`) that cross the nn / data boundary."""
    package = module.split(".")[1]
    banned = FORBIDDEN.get(package)
    if banned is None:
        return []
    return sorted(name for name in imported_modules(source, module) if name == banned or name.startswith(banned + "."))


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_nn_and_data_do_not_import_each_other(package: str) -> None:
    files = sorted((PACKAGE / package).rglob("*.py"))
    assert files
    found = {module_name(f): v for f in files if (v := violations(f.read_text(), module_name(f)))}
    assert not found, f"imports across the nn / data boundary: {found}"


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("ranker.nn.x", "from ranker.data.layout import Layout"),
        ("ranker.nn.x", "import ranker.data.vocab"),
        ("ranker.nn.x", "from ranker import data"),
        ("ranker.nn.x", "from ..data import vocab"),
        ("ranker.nn.x", "def f():\n    from ranker.data.vocab import MISSING\n"),
        ("ranker.data.recipes.x", "from ranker.nn.hashing import HashEmbedding"),
        ("ranker.data.x", "from ranker import nn"),
    ],
)
def test_the_checker_catches_a_crossing_import(module: str, source: str) -> None:
    assert violations(source, module)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("ranker.nn.x", "from ranker.hashing import bucket\nfrom ranker.nn.gather import gather_rows"),
        ("ranker.data.x", "from ranker.hashing import stable_string_hash\nfrom torch import nn"),
        ("ranker.models.x", "from ranker.data.layout import Layout\nfrom ranker.nn import MLP"),
        ("ranker.data.x", "from ranker.database import x"),
    ],
)
def test_the_checker_allows_other_imports(module: str, source: str) -> None:
    assert not violations(source, module)


def test_the_checker_fails_on_an_injected_file(tmp_path: Path) -> None:
    injected = tmp_path / "bad.py"
    injected.write_text("import torch\nfrom ranker.data.vocab import MISSING\n")
    assert violations(injected.read_text(), "ranker.nn.bad") == ["ranker.data.vocab", "ranker.data.vocab.MISSING"]
