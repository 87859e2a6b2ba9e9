"""STYLE §3.1 import boundaries and STYLE §3.6 rule 3 (no wall clock in ``ace_core``), checked on the AST.

Every ``import``/``from ... import`` counts, including ones under ``if TYPE_CHECKING:`` and inside functions, as do
``importlib.import_module("...")``/``__import__("...")`` calls with a literal name. Relative imports are resolved
against the importing file's package. Each failure lists the offending ``file:line``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The project's importable packages. The boundary rules between them cover the five library packages; the
#: third-party rules (Flask, aiocoap, SQLAlchemy, pycose) cover the ``ostiary`` CLI as well.
LIBRARY_PACKAGES = ("ace_core", "policies", "as_server", "resource_server", "client_sdk")
PROJECT_PACKAGES = (*LIBRARY_PACKAGES, "ostiary")
APPLICATION_PACKAGES = ("as_server", "resource_server", "client_sdk")

# Fully qualified callables that read the wall clock or a monotonic clock (ace_core takes ``now`` instead).
CLOCK_CALLS = frozenset(
    {
        "time.time",
        "time.time_ns",
        "time.monotonic",
        "time.monotonic_ns",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
    }
)


@dataclass(frozen=True)
class Import:
    """One imported module, fully qualified, with where it is imported."""

    module: str
    path: str  # POSIX path relative to the repository root
    line: int

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.module}"


def _package_of(path: str) -> list[str]:
    """The dotted package a file belongs to, as parts (``a/b/c.py`` and ``a/b/__init__.py`` -> ``[a, b]``)."""
    return path.removesuffix(".py").split("/")[:-1]


def imports_of(source: str, path: str) -> list[Import]:
    """Every module ``source`` (the file at ``path``) imports."""
    tree = ast.parse(source, filename=path)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append(Import(module, path, node.lineno))
            if node.module is None:  # `from . import x` imports the submodules x
                found.extend(Import(f"{module}.{alias.name}", path, node.lineno) for alias in node.names)
        elif isinstance(node, ast.Call) and _dotted(node.func) in ("importlib.import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append(Import(node.args[0].value, path, node.lineno))
    return found


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else ``None``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def clock_calls_of(source: str, path: str) -> list[str]:
    """``file:line`` of every call to a :data:`CLOCK_CALLS` callable, resolving import aliases."""
    tree = ast.parse(source, filename=path)
    aliases: dict[str, str] = {}  # local name -> fully qualified name
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    offences: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        qualified = aliases.get(head, head) + (f".{rest}" if rest else "")
        if qualified in CLOCK_CALLS:
            offences.append(f"{path}:{node.lineno}: calls {qualified}()")
    return offences


def _files(packages: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    for package in packages:
        for file in sorted((ROOT / package).rglob("*.py")):
            yield file.relative_to(ROOT).as_posix(), file.read_text(encoding="utf-8")


def _all_imports(packages: tuple[str, ...] = PROJECT_PACKAGES) -> list[Import]:
    return [imp for path, source in _files(packages) for imp in imports_of(source, path)]


def _is_flask(top: str) -> bool:
    return top == "flask" or top.startswith("flask_")


def _report(offences: list[Import] | list[str]) -> str:
    return "\n".join(str(offence) for offence in offences)


# --- the rules --------------------------------------------------------------------------------------------------


def test_ace_core_imports_nothing_from_the_project_and_no_frameworks() -> None:
    forbidden = (set(PROJECT_PACKAGES) - {"ace_core"}) | {"aiocoap", "sqlalchemy"}
    offences = [imp for imp in _all_imports(("ace_core",)) if imp.top in forbidden or _is_flask(imp.top)]
    assert not offences, "ace_core must stay sans-IO and self-contained (STYLE §3.1):\n" + _report(offences)


def test_policies_import_only_ace_core() -> None:
    forbidden = set(PROJECT_PACKAGES) - {"ace_core", "policies"}
    offences = [imp for imp in _all_imports(("policies",)) if imp.top in forbidden]
    assert not offences, "policies may import only ace_core of the project (STYLE §3.1):\n" + _report(offences)


def test_as_rs_and_client_never_import_each_other() -> None:
    offences = [
        imp
        for imp in _all_imports(APPLICATION_PACKAGES)
        if imp.top in APPLICATION_PACKAGES and imp.top != imp.path.split("/")[0]
    ]
    assert not offences, "as_server, resource_server and client_sdk are independent (STYLE §3.1):\n" + _report(offences)


def _may_import_flask_or_aiocoap(path: str) -> bool:
    return "transport" in path.split("/")[:-1] or path.endswith("/aiocoap_site.py")


def test_flask_and_aiocoap_only_in_transports() -> None:
    offences = [
        imp
        for imp in _all_imports()
        if (_is_flask(imp.top) or imp.top == "aiocoap") and not _may_import_flask_or_aiocoap(imp.path)
    ]
    assert not offences, "only */transport/* and aiocoap_site.py may import Flask or aiocoap:\n" + _report(offences)


def test_sqlalchemy_only_in_its_storage_backend() -> None:
    offences = [
        imp
        for imp in _all_imports()
        if imp.top == "sqlalchemy" and not imp.path.startswith("as_server/storage/sqlalchemy/")
    ]
    assert not offences, "only as_server/storage/sqlalchemy/ may import SQLAlchemy:\n" + _report(offences)


def test_pycose_only_in_ace_core_cose() -> None:
    offences = [imp for imp in _all_imports() if imp.top == "pycose" and imp.path != "ace_core/cose.py"]
    assert not offences, "only ace_core/cose.py may import pycose (STYLE §3.2):\n" + _report(offences)


def test_ace_core_never_reads_the_clock() -> None:
    offences = [offence for path, source in _files(("ace_core",)) for offence in clock_calls_of(source, path)]
    assert not offences, "ace_core takes `now` as a parameter (STYLE §3.6 rule 3):\n" + _report(offences)


def test_every_package_is_scanned() -> None:
    for package in PROJECT_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package


# --- the checker catches what it should (so a passing rule is not a vacuous one) --------------------------------


@pytest.mark.parametrize(
    ("source", "path", "expected"),
    [
        ("import flask\n", "ace_core/x.py", ["flask"]),
        ("from aiocoap.numbers import ContentFormat\n", "as_server/transport/coap.py", ["aiocoap.numbers"]),
        ("from ..storage import base\n", "as_server/endpoints/token.py", ["as_server.storage"]),
        ("from . import guard\n", "resource_server/__init__.py", ["resource_server", "resource_server.guard"]),
        ("from .cbor import dumps\n", "ace_core/cwt.py", ["ace_core.cbor"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import client_sdk.client\n",
            "as_server/app.py",
            ["typing", "client_sdk.client"],
        ),
        ("def f():\n    import sqlalchemy.orm\n", "as_server/storage/memory.py", ["sqlalchemy.orm"]),
        ("import importlib\nimportlib.import_module('pycose.keys')\n", "ostiary/cli.py", ["importlib", "pycose.keys"]),
    ],
)
def test_imports_of(source: str, path: str, expected: list[str]) -> None:
    assert [imp.module for imp in imports_of(source, path)] == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\nt = time.time()\n", ["ace_core/x.py:2: calls time.time()"]),
        ("import time as _t\n_t.monotonic()\n", ["ace_core/x.py:2: calls time.monotonic()"]),
        ("from time import time\ntime()\n", ["ace_core/x.py:2: calls time.time()"]),
        ("from datetime import datetime\ndatetime.now()\n", ["ace_core/x.py:2: calls datetime.datetime.now()"]),
        ("import datetime\ndatetime.datetime.utcnow()\n", ["ace_core/x.py:2: calls datetime.datetime.utcnow()"]),
        ("from datetime import datetime as dt\ndt.utcnow()\n", ["ace_core/x.py:2: calls datetime.datetime.utcnow()"]),
        ("import time\ntime.sleep(0)\ndef f(now: int) -> int:\n    return now\n", []),
        ("from datetime import datetime, timezone\ndatetime.fromtimestamp(0, timezone.utc)\n", []),
    ],
)
def test_clock_calls_of(source: str, expected: list[str]) -> None:
    assert clock_calls_of(source, "ace_core/x.py") == expected
