"""``ace_core.registry`` spells every IANA number once (STYLE §3.2, §3.6 rule 1).

Each table is its own enum with an RFC citation, and no table gives one value two names unless the RFC does
(documented aliases below).
"""

from __future__ import annotations

import enum
import inspect

import pytest

from ace_core import registry

#: (enum, alias) -> canonical name. COSE_Key label -1 is ``crv`` for OKP/EC2 keys and ``k`` for Symmetric keys
#: (RFC 9053 §7.1, §6.1): one label, two key-type-specific meanings.
DOCUMENTED_ALIASES = {("CoseKeyParam", "K"): "CRV"}

REGISTRY_ENUMS = [
    obj
    for _, obj in inspect.getmembers(registry, inspect.isclass)
    if issubclass(obj, enum.Enum) and obj.__module__ == registry.__name__
]


def test_registry_has_enums() -> None:
    names = {cls.__name__ for cls in REGISTRY_ENUMS}
    assert {"TokenParam", "IntrospectionParam", "CwtClaim", "ErrorCode", "CoseKeyParam"} <= names


@pytest.mark.parametrize("table", REGISTRY_ENUMS, ids=lambda cls: cls.__name__)
def test_every_table_cites_an_rfc(table: type[enum.Enum]) -> None:
    doc = table.__dict__.get("__doc__") or ""
    assert "RFC" in doc, f"{table.__name__} has no RFC citation in its docstring"


@pytest.mark.parametrize("table", REGISTRY_ENUMS, ids=lambda cls: cls.__name__)
def test_values_are_unique_except_documented_aliases(table: type[enum.Enum]) -> None:
    aliases = {
        name: member.name for name, member in table.__members__.items() if name != member.name
    }  # Enum turns a repeated value into an alias of the first name that had it
    expected = {alias: canonical for (cls, alias), canonical in DOCUMENTED_ALIASES.items() if cls == table.__name__}
    assert aliases == expected


def test_documented_aliases_exist() -> None:
    for (cls, alias), canonical in DOCUMENTED_ALIASES.items():
        table = getattr(registry, cls)
        assert table[alias] is table[canonical]


@pytest.mark.parametrize("table", REGISTRY_ENUMS, ids=lambda cls: cls.__name__)
def test_every_table_is_exported(table: type[enum.Enum]) -> None:
    assert table.__name__ in registry.__all__
