"""OSCORE context derivation: RFC 8613 Appendix C.1-C.3 keys and the RFC 9203 §4.3 Master Salt, byte for byte."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from ace_core import cbor
from ace_core.oscore import (
    OscoreContextParameters,
    Role,
    SaltEncoding,
    context_parameters,
    master_salt,
)
from ace_core.pop import OscoreMaterial
from tests.vectors_loader import VECTORS

C = json.loads((VECTORS / "rfc8613" / "appendix_c.json").read_text())
SALT = json.loads((VECTORS / "rfc9203" / "master_salt_4_3.json").read_text())


def _hex(v: str | None) -> bytes | None:
    return None if v is None else bytes.fromhex(v)


@pytest.mark.parametrize("name", ["C.1", "C.2", "C.3"])
def test_rfc8613_appendix_c_client_keys(name: str) -> None:
    v: dict[str, Any] = C[name]
    params = OscoreContextParameters(
        master_secret=bytes.fromhex(C["master_secret"]),
        master_salt=bytes.fromhex(v["master_salt"]),
        sender_id=bytes.fromhex(v["sender_id"]),
        recipient_id=bytes.fromhex(v["recipient_id"]),
        id_context=_hex(v["id_context"]),
    )
    assert params.sender_key().hex() == v["sender_key"]
    assert params.recipient_key().hex() == v["recipient_key"]
    assert params.common_iv().hex() == v["common_iv"]
    if "sender_key_info" in v:
        info = cbor.dumps([params.sender_id, params.id_context, 10, "Key", 16])
        assert info.hex() == v["sender_key_info"]


def test_rfc9203_4_3_master_salt_cbor() -> None:
    salt = master_salt(bytes.fromhex(SALT["salt"]), bytes.fromhex(SALT["nonce1"]), bytes.fromhex(SALT["nonce2"]))
    assert salt.hex() == SALT["master_salt_cbor"]


def test_rfc9203_4_3_master_salt_json() -> None:
    salt = master_salt(
        bytes.fromhex(SALT["salt"]),
        bytes.fromhex(SALT["nonce1"]),
        bytes.fromhex(SALT["nonce2"]),
        encoding=SaltEncoding.JSON,
    )
    assert salt == base64.b64decode(SALT["master_salt_json_b64"])


def test_roles_mirror_each_other() -> None:
    material = OscoreMaterial(id=b"\x01", ms=bytes(range(16)), salt=b"salt")
    kw: dict[str, Any] = dict(
        nonce1=b"N1N1N1N1", nonce2=b"N2N2N2N2", client_recipient_id=b"\x16\x45", server_recipient_id=b"\x00\x00"
    )
    client = context_parameters(material, role=Role.CLIENT, **kw)
    server = context_parameters(material, role=Role.SERVER, **kw)
    # RFC 9203 §4.3: client Sender ID = ID2, Recipient ID = ID1; the RS the reverse.
    assert client.sender_id == b"\x00\x00" and client.recipient_id == b"\x16\x45"
    assert server.sender_id == client.recipient_id and server.recipient_id == client.sender_id
    assert client.sender_key() == server.recipient_key()
    assert client.recipient_key() == server.sender_key()
    assert client.common_iv() == server.common_iv()


def test_absent_salt_is_the_empty_byte_string() -> None:
    # Ostiary's documented choice for RFC 9203's open point: the absent salt is encoded as h'' (0x40).
    assert master_salt(None, b"\x01", b"\x02") == bytes.fromhex("40") + bytes.fromhex("4101") + bytes.fromhex("4102")
    material = OscoreMaterial(id=b"\x01", ms=bytes(16))
    kw: dict[str, Any] = dict(
        nonce1=b"a" * 8, nonce2=b"b" * 8, client_recipient_id=b"\x01", server_recipient_id=b"\x02"
    )
    ours = context_parameters(material, role=Role.CLIENT, **kw)
    other_convention = OscoreContextParameters(
        master_secret=bytes(16),
        master_salt=cbor.bstr(b"a" * 8) + cbor.bstr(b"b" * 8),  # salt item omitted
        sender_id=b"\x02",
        recipient_id=b"\x01",
    )
    assert ours.sender_key() != other_convention.sender_key()  # a mismatch cannot go unnoticed


@pytest.mark.parametrize(
    "material, kw",
    [
        (OscoreMaterial(id=b"\x01"), {}),  # no ms
        (OscoreMaterial(id=b"\x01", ms=bytes(16)), {"server_recipient_id": b"\x01"}),  # ID2 == ID1
        (OscoreMaterial(id=b"\x01", ms=bytes(16), alg=99), {}),
        (OscoreMaterial(id=b"\x01", ms=bytes(16), hkdf=4), {}),  # HMAC 256/64 is no HKDF
        (OscoreMaterial(id=b"\x01", ms=bytes(16), version=2), {}),
    ],
)
def test_unusable_material_is_refused(material: OscoreMaterial, kw: dict[str, Any]) -> None:
    args: dict[str, Any] = dict(nonce1=b"a", nonce2=b"b", client_recipient_id=b"\x01", server_recipient_id=b"\x02")
    args.update(kw)
    with pytest.raises(ValueError):
        context_parameters(material, role=Role.SERVER, **args)
