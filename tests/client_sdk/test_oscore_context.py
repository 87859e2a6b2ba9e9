"""The client's in-memory aiocoap OSCORE context (``client_sdk.transport.coap.OscoreContext``).

* Its keys come from :mod:`ace_core.oscore`; aiocoap's own derivation (``SecurityContextUtils.derive_keys``) must
  give the same Sender/Recipient Key and Common IV -- for the RFC 8613 Appendix C contexts and for contexts derived
  the RFC 9203 §4.3 way, in both roles.
* Wired into aiocoap it protects the RFC 8613 Appendix C.4 request byte for byte.
* A client context and the matching server context (role SERVER) talk to each other, and a context derived with
  the other Master Salt convention does not (what the e2e "salt mismatch" case relies on).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import aiocoap
import pytest
from aiocoap import oscore
from aiocoap.numbers.types import Type

from ace_core import cbor
from ace_core.oscore import OscoreContextParameters, Role, context_parameters
from ace_core.pop import OscoreMaterial
from ace_core.registry import CoseAlgorithm
from client_sdk.transport.coap import OscoreContext, origin_patterns
from tests.vectors_loader import VECTORS

C = json.loads((VECTORS / "rfc8613" / "appendix_c.json").read_text())
C4 = json.loads((VECTORS / "rfc8613" / "appendix_c4.json").read_text())
SALT = json.loads((VECTORS / "rfc9203" / "master_salt_4_3.json").read_text())


class _AiocoapDerived(oscore.SecurityContextUtils):  # type: ignore[misc]
    """A context whose keys aiocoap derives itself (RFC 8613 §3.2.1), for comparison."""

    def __init__(self, params: OscoreContextParameters) -> None:
        self.alg_aead = {a.value: a for a in oscore.algorithms.values()}[params.aead_alg]
        self.hashfun = oscore.hashfunctions[{5: "sha256", 6: "sha384", 7: "sha512"}[params.hkdf_alg]]
        self.id_context = params.id_context
        self.sender_id = params.sender_id
        self.recipient_id = params.recipient_id
        self.derive_keys(params.master_salt, params.master_secret)


def _appendix_c(name: str) -> OscoreContextParameters:
    v: dict[str, Any] = C[name]
    return OscoreContextParameters(
        master_secret=bytes.fromhex(C["master_secret"]),
        master_salt=bytes.fromhex(v["master_salt"]),
        sender_id=bytes.fromhex(v["sender_id"]),
        recipient_id=bytes.fromhex(v["recipient_id"]),
        id_context=None if v["id_context"] is None else bytes.fromhex(v["id_context"]),
    )


def _rfc9203(role: Role, **material: Any) -> OscoreContextParameters:
    return context_parameters(
        OscoreMaterial(id=b"\x01", ms=bytes.fromhex("f9af838368e353e78888e1426bd94e6f"), **material),
        nonce1=bytes.fromhex(SALT["nonce1"]),
        nonce2=bytes.fromhex(SALT["nonce2"]),
        client_recipient_id=b"\x16\x45",
        server_recipient_id=b"\x00\x00",
        role=role,
    )


CASES = {
    "rfc8613-C.1": _appendix_c("C.1"),
    "rfc8613-C.2": _appendix_c("C.2"),
    "rfc8613-C.3": _appendix_c("C.3"),
    "rfc9203-client-no-salt": _rfc9203(Role.CLIENT),
    "rfc9203-server-no-salt": _rfc9203(Role.SERVER),
    "rfc9203-client-salt-context": _rfc9203(
        Role.CLIENT, salt=bytes.fromhex(SALT["salt"]), context_id=b"\x37\xcb\xf3\x21"
    ),
    "rfc9203-client-gcm-sha384": _rfc9203(Role.CLIENT, alg=CoseAlgorithm.A256GCM, hkdf=CoseAlgorithm.HMAC_384_384),
}


@pytest.mark.parametrize("name", CASES)
def test_keys_equal_aiocoaps_own_derivation(name: str) -> None:
    params = CASES[name]
    ours = OscoreContext(params)
    theirs = _AiocoapDerived(params)
    assert ours.sender_key == theirs.sender_key
    assert ours.recipient_key == theirs.recipient_key
    assert ours.common_iv == theirs.common_iv
    assert ours.sender_id == params.sender_id and ours.recipient_id == params.recipient_id
    assert ours.id_context == params.id_context


@pytest.mark.parametrize("name", ["C.1", "C.2", "C.3"])
def test_rfc8613_appendix_c_keys_in_the_aiocoap_context(name: str) -> None:
    ours = OscoreContext(_appendix_c(name))
    assert ours.sender_key.hex() == C[name]["sender_key"]
    assert ours.recipient_key.hex() == C[name]["recipient_key"]
    assert ours.common_iv.hex() == C[name]["common_iv"]


def test_rfc8613_appendix_c4_protected_request() -> None:
    context = OscoreContext(_appendix_c(C4["context"]))
    context.sender_sequence_number = C4["sender_sequence_number"]
    protected, _ = context.protect(aiocoap.Message(code=aiocoap.GET, uri="coap://localhost/tv1"))
    assert protected.opt.oscore.hex() == C4["oscore_option"]
    assert protected.payload.hex() == C4["ciphertext"]
    protected.mid = 0x5D1F
    protected.token = bytes.fromhex("00003974")
    protected.mtype = Type.CON
    assert protected.encode().hex() == C4["protected_message"]


def _over_the_wire(message: aiocoap.Message) -> aiocoap.Message:
    message.mid = 1
    message.token = b"\x01"
    message.mtype = Type.CON if message.code.is_request() else Type.ACK
    return aiocoap.Message.decode(message.encode())


def _round_trip(client: OscoreContext, server: OscoreContext) -> bytes:
    request = aiocoap.Message(code=aiocoap.PUT, uri="coap://lock.example/lock", payload=b"unlock")
    protected, request_id = client.protect(request)
    unprotected, server_request_id = server.unprotect(_over_the_wire(protected))
    assert unprotected.payload == b"unlock"
    response, _ = server.protect(aiocoap.Message(code=aiocoap.CHANGED, payload=b"open"), server_request_id)
    plain, _ = client.unprotect(_over_the_wire(response), request_id)
    return bytes(plain.payload)


def test_client_and_server_contexts_interoperate() -> None:
    assert _round_trip(OscoreContext(_rfc9203(Role.CLIENT)), OscoreContext(_rfc9203(Role.SERVER))) == b"open"


def test_other_salt_convention_cannot_decrypt() -> None:
    client = _rfc9203(Role.CLIENT)
    omitted = cbor.bstr(bytes.fromhex(SALT["nonce1"])) + cbor.bstr(bytes.fromhex(SALT["nonce2"]))
    assert client.master_salt != omitted
    with pytest.raises(oscore.ProtectionInvalid):
        _round_trip(OscoreContext(replace(client, master_salt=omitted)), OscoreContext(_rfc9203(Role.SERVER)))


def test_unsupported_algorithm_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="no OSCORE support"):
        OscoreContext(replace(_appendix_c("C.1"), hkdf_alg=999))


def test_master_secret_not_in_repr() -> None:
    params = _appendix_c("C.1")
    assert params.master_secret.hex() not in repr(OscoreContext(params))


@pytest.mark.parametrize(
    ("uri", "patterns"),
    [
        ("coap://127.0.0.1:5683/lock", ["coap://127.0.0.1:5683/*", "coap://127.0.0.1/*"]),
        ("coap://Lock.Example/x?y=1", ["coap://lock.example:5683/*", "coap://lock.example/*"]),
        ("coap://[::1]:5690", ["coap://[::1]:5690/*"]),
    ],
)
def test_origin_patterns(uri: str, patterns: list[str]) -> None:
    assert list(origin_patterns(uri)) == patterns


def test_protected_request_without_a_context_is_refused_not_sent_in_the_clear() -> None:
    import asyncio

    from client_sdk.errors import NoSecurityContext
    from client_sdk.transport.coap import CoapTransport

    async def go() -> None:
        transport = CoapTransport(timeout=1.0)
        try:
            transport.install_oscore("coap://lock.example", _appendix_c("C.1"))
            assert transport.has_oscore("coap://lock.example:5683/lock")
            transport.remove_oscore("coap://lock.example:5683")
            with pytest.raises(NoSecurityContext):
                await transport.protected_request("GET", "coap://lock.example/lock")
        finally:
            await transport.close()

    asyncio.run(go())
