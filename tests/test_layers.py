"""Imports point one way: protocol <- keys <- hub <- instance (STYLE.md).

Every .py file of the project is parsed with ``ast``, never imported, so a module that
needs a database or a browser is checked all the same, and so is an import hidden in a
function body or under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("protocol", "keys", "hub", "instance", "bench", "tests")

#: Which of the project's packages each package may import. Third-party and standard
#: library imports are not judged. Only instance itself, tests and bench import instance.
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset({"protocol"}),
    "keys": frozenset({"protocol", "keys"}),
    "hub": frozenset({"protocol", "keys", "hub"}),
    "instance": frozenset({"protocol", "keys", "hub", "instance"}),
    "bench": frozenset(PACKAGES),
    "tests": frozenset(PACKAGES),
}


def module_name(path: str) -> str:
    """``hub/broker.py`` -> ``hub.broker``; ``hub/__init__.py`` -> ``hub``."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, path: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source``, relative ones resolved
    against ``path`` (relative to the repository root), dynamic ones when the name is a
    string literal."""
    tree = ast.parse(source, filename=path)
    module = module_name(path)
    package = module if Path(path).name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".") if package else []
            up = node.level - 1 if node.level else len(base)
            if up > len(base):
                yield node.lineno, f"<beyond the top: {'.' * node.level}{node.module or ''}>"
                continue
            target = ".".join(base[: len(base) - up] + (node.module or "").split("."))
            target = target.strip(".")
            # The imported names may be modules: "from .. import keys" imports keys.
            for alias in node.names:
                name = target if alias.name == "*" else f"{target}.{alias.name}"
                yield node.lineno, name.strip(".")
        elif isinstance(node, ast.Call) and (dynamic := _dynamic_import(node)) is not None:
            yield node.lineno, dynamic


def _dynamic_import(call: ast.Call) -> str | None:
    """The name in ``importlib.import_module("x")`` or ``__import__("x")``, if literal."""
    func = call.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def violations(source: str, path: str) -> list[str]:
    """``path:line: ...`` for each import that points the wrong way."""
    layer = Path(path).parts[0]
    allowed = ALLOWED[layer]
    found = []
    for line, target in imported_modules(source, path):
        top = target.split(".")[0]
        if target.startswith("<beyond"):
            found.append(f"{path}:{line}: relative import {target}")
        elif top in PACKAGES and top not in allowed:
            found.append(
                f"{path}:{line}: {layer} imports {target}; {layer} may import only "
                f"{', '.join(sorted(allowed))} of this project"
            )
    return found


def project_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def test_imports_point_one_way() -> None:
    files = list(project_files())
    assert len(files) > 20, f"found only {len(files)} files under {ROOT}"
    found = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        found.extend(violations(path.read_text(encoding="utf-8"), relative))
    assert not found, "imports against protocol <- keys <- hub <- instance:\n" + "\n".join(found)


# ------------------------------------------------------------------ the checker itself


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("hub/fanout.py", "from instance import x"),
        ("hub/fanout.py", "import instance.app"),
        ("hub/fanout.py", "def f():\n    from instance.items import load\n"),
        ("hub/fanout.py", "from ..instance import app"),
        ("hub/sub/x.py", "from ...instance.live import x"),
        ("hub/fanout.py", "importlib.import_module('instance.cli')"),
        ("hub/fanout.py", "if TYPE_CHECKING:\n    from instance.config import Settings\n"),
        ("keys/store.py", "from hub import broker"),
        ("keys/store.py", "import os, hub.broker"),
        ("protocol/websub.py", "from keys.store import KeyStore"),
        ("protocol/websub.py", "from .. import keys"),
        ("protocol/websub.py", "from tests.harness import x"),
        ("instance/app.py", "from bench import load"),
        ("protocol/websub.py", "from .... import x"),
    ],
)
def test_checker_finds_a_wrong_import(path: str, source: str) -> None:
    found = violations(source, path)
    assert len(found) == 1, found
    line = source.count("\n", 0, source.index("import")) + 1
    assert found[0].startswith(f"{path}:{line}: ")


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("protocol/websub.py", "from protocol.errors import LocalProtocolError"),
        ("protocol/websub.py", "from . import errors\nfrom .urls import check_url"),
        ("protocol/__init__.py", "from .errors import ProtocolError"),
        ("keys/store.py", "from protocol import cavage\nimport json"),
        ("hub/fanout.py", "from keys.resolver import KeyResolver\nfrom protocol import states"),
        ("hub/fanout.py", "import redis.asyncio\nfrom . import broker"),
        ("instance/app.py", "from hub import fanout\nfrom .items import load"),
        ("tests/test_x.py", "from instance.app import create_app"),
        ("bench/live.py", "from instance.cli import main\nfrom tests.harness import x"),
        ("hub/fanout.py", "import instances_of_other_things"),
    ],
)
def test_checker_accepts_a_right_import(path: str, source: str) -> None:
    assert violations(source, path) == []


def test_relative_imports_resolve_against_the_package() -> None:
    source = "from . import a\nfrom .b import c\nfrom .. import d\n"
    assert list(imported_modules(source, "hub/sub/x.py")) == [
        (1, "hub.sub.a"),
        (2, "hub.sub.b.c"),
        (3, "hub.d"),
    ]
    assert list(imported_modules("from . import a", "hub/__init__.py")) == [(1, "hub.a")]
    assert list(imported_modules("from x.y import *", "hub/z.py")) == [(1, "x.y")]
