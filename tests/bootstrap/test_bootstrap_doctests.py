"""Docstring examples of the bootstrap core run as doctests (STYLE §3.5), as tests/test_doctest.py does for
ace_core."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import as_server.bootstrap

MODULES = sorted(m.name for m in pkgutil.iter_modules(as_server.bootstrap.__path__, "as_server.bootstrap."))


def test_every_module_is_listed() -> None:
    assert {"as_server.bootstrap.tlv", "as_server.bootstrap.senml", "as_server.bootstrap.session"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
