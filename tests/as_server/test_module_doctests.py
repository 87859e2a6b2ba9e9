"""The examples in the docstrings of the issue #5 modules and the console run (STYLE §3.5: examples are tested)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "as_server.identity",
        "as_server.audit",
        "as_server.console",
        "as_server.endpoints.token",
        "as_server.transport.authorize",
    ],
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
