"""The guard's decisions (RFC 9200 §5.10.2), the OSCORE contexts (aiocoap derives what ace_core derives, RFC 8613
Appendix C), the O(1) context index, and the library's docstring examples."""

from __future__ import annotations

import doctest
import importlib
import json
import pkgutil

import pytest
from aiocoap import oscore
from aiocoap.numbers.codes import Code

import resource_server
from ace_core import cbor
from ace_core.cwt import Claims
from ace_core.keys import CoseKey
from ace_core.oscore import OscoreContextParameters, Role, context_parameters
from ace_core.scope import AifScope
from ace_core.status import Status
from resource_server.aiocoap_site import IndexedOscoreCredentials, MemoryOscoreContext
from resource_server.cnonce import CnonceManager
from resource_server.config import ScopeFormat
from resource_server.guard import Guard
from resource_server.token_store import StoredToken
from tests.resource_server.support import AS_URI, AUDIENCE, material, rs_config
from tests.vectors_loader import VECTORS


def _token(spec: str, *, expires_after: float | None = None) -> StoredToken:
    return StoredToken(
        token=b"",
        claims=Claims(cti=b"c"),
        pop_id=b"p",
        audience=AUDIENCE,
        rights=AifScope.parse_spec(spec),
        received=0.0,
        expires_after=expires_after,
    )


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/lock", None),
        (Code.PUT, "/lock", None),
        ("POST", "/lock", Status.METHOD_NOT_ALLOWED),
        (Code.DELETE, "/lock", Status.METHOD_NOT_ALLOWED),
        ("GET", "/battery", Status.FORBIDDEN),
        ("GET", "/lock/", Status.FORBIDDEN),  # exact paths
        (0x1F, "/lock", Status.METHOD_NOT_ALLOWED),  # a code AIF cannot express is never granted
    ],
)
def test_guard_decisions(key: CoseKey, method: object, path: str, status: Status | None) -> None:
    guard = Guard(rs_config(key))
    decision = guard.check(method, path, _token("/lock:GET,PUT"), now=0, monotonic=0)
    assert decision.status == status and decision.allowed == (status is None)
    assert decision.hints is None


def test_guard_without_token_or_with_expired_token_sends_hints(key: CoseKey) -> None:
    guard = Guard(rs_config(key), cnonces=CnonceManager(lifetime=10))
    for token in (None, _token("/lock:GET", expires_after=5)):
        decision = guard.check("GET", "/lock", token, now=0, monotonic=5)
        assert decision.status == Status.UNAUTHORIZED and decision.hints is not None
        hints = decision.hints
        assert (hints.as_uri, hints.audience) == (AS_URI, AUDIENCE)
        assert hints.scope == AifScope([("/lock", 1)]).to_cbor()
        assert hints.cnonce is not None
        assert set(cbor.loads(hints.to_cbor())) == {1, 5, 9, 39}  # RFC 9200 §5.3 Table 1 keys


def test_guard_hints_name_text_scopes(key: CoseKey) -> None:
    config = rs_config(
        key,
        scope_format=ScopeFormat.TEXT,
        scope_map={"open": AifScope.parse_spec("/lock:PUT"), "admin": AifScope.parse_spec("/lock:GET,PUT /log:GET")},
    )
    guard = Guard(config)
    assert guard.scope_for("PUT", "/lock") == "open admin"
    assert guard.scope_for("GET", "/battery") is None


def test_aiocoap_derives_the_same_keys_as_ace_core() -> None:
    osc = material(salt=b"\x01\x02", context_id=b"\x37\xcb")
    for role in Role:
        params = context_parameters(
            osc, nonce1=b"N1N1N1N1", nonce2=b"N2N2N2N2", client_recipient_id=b"\x01", server_recipient_id=b"", role=role
        )
        ours = MemoryOscoreContext(params)
        theirs = MemoryOscoreContext(params, derive=True)  # aiocoap's SecurityContextUtils.derive_keys
        assert (ours.sender_key, ours.recipient_key, ours.common_iv) == (
            theirs.sender_key,
            theirs.recipient_key,
            theirs.common_iv,
        )


@pytest.mark.parametrize("name", ["C.1", "C.2", "C.3"])
def test_memory_context_reproduces_rfc8613_appendix_c(name: str) -> None:
    vectors = json.loads((VECTORS / "rfc8613" / "appendix_c.json").read_text())
    v = vectors[name]
    params = OscoreContextParameters(
        master_secret=bytes.fromhex(vectors["master_secret"]),
        master_salt=bytes.fromhex(v["master_salt"]),
        sender_id=bytes.fromhex(v["sender_id"]),
        recipient_id=bytes.fromhex(v["recipient_id"]),
        id_context=None if v["id_context"] is None else bytes.fromhex(v["id_context"]),
    )
    for context in (MemoryOscoreContext(params), MemoryOscoreContext(params, derive=True)):
        assert context.sender_key.hex() == v["sender_key"]
        assert context.recipient_key.hex() == v["recipient_key"]
        assert context.common_iv.hex() == v["common_iv"]


def test_indexed_credentials_find_by_kid_and_kid_context() -> None:
    credentials = IndexedOscoreCredentials()
    assert bool(credentials)  # never replaced by aiocoap for being empty
    contexts = []
    for i in range(200):
        params = OscoreContextParameters(
            master_secret=b"s" * 16,
            master_salt=b"",
            sender_id=b"\x01",
            recipient_id=i.to_bytes(2, "big"),
            id_context=b"ctx" if i % 2 else None,
        )
        contexts.append(MemoryOscoreContext(params))
        credentials.add(contexts[-1])
    assert (
        credentials.find_oscore({oscore.COSE_KID: (7).to_bytes(2, "big"), oscore.COSE_KID_CONTEXT: b"ctx"})
        is (contexts[7])
    )
    with pytest.raises(KeyError):  # same kid, wrong kid context
        credentials.find_oscore({oscore.COSE_KID: (7).to_bytes(2, "big")})
    credentials.discard(contexts[8])
    with pytest.raises(KeyError):
        credentials.find_oscore({oscore.COSE_KID: (8).to_bytes(2, "big")})
    assert credentials.find_all_used_contextless_oscore_kid() == {i.to_bytes(2, "big") for i in range(0, 200, 2)} - {
        (8).to_bytes(2, "big")
    }


def test_context_repr_shows_no_keys() -> None:
    params = OscoreContextParameters(master_secret=b"s" * 16, master_salt=b"", sender_id=b"\x01", recipient_id=b"")
    context = MemoryOscoreContext(params)
    assert context.sender_key.hex() not in repr(context) and "s" * 16 not in repr(context)


MODULES = sorted(m.name for m in pkgutil.walk_packages(resource_server.__path__, "resource_server."))


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_a_shared_key_as_printed_by_the_as_loads(key: CoseKey) -> None:
    from ace_core.keys import b64url_encode
    from resource_server.config import parse_key

    assert parse_key(key.to_cbor().hex()) == key
    assert parse_key(b64url_encode(key.to_cbor())) == key
