"""Docstring examples of the bootstrap core run as doctests (STYLE §3.5), as tests/test_doctest.py does for
ace_core."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import ace_core.lwm2m
import as_server.bootstrap

MODULES = sorted(
    [m.name for m in pkgutil.iter_modules(as_server.bootstrap.__path__, "as_server.bootstrap.")]
    + [m.name for m in pkgutil.iter_modules(ace_core.lwm2m.__path__, "ace_core.lwm2m.")]
)


def test_every_module_is_listed() -> None:
    assert {"ace_core.lwm2m.tlv", "ace_core.lwm2m.senml", "as_server.bootstrap.session"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
