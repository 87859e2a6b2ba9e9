"""Resource requests to the door lock over OSCORE and without it: RFC 9200 §5.2/§5.3/§5.10.2, RFC 9203 §4.3,
RFC 8613 replay protection, supersession, eviction, expiry, update of access rights, the salt convention."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiocoap.numbers.codes import Code

from ace_core import cbor
from ace_core.keys import CoseKey
from ace_core.messages import CreationHints
from ace_core.oscore import Role, context_parameters, master_salt
from ace_core.pop import Confirmation
from ace_core.scope import AifScope
from tests.resource_server.support import (
    AS_URI,
    AUDIENCE,
    LIFETIME,
    T0,
    Client,
    ClientContext,
    Lock,
    material,
    mint,
    rs_config,
)


def test_protected_requests_reach_the_lock(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc), osc)
    reply = session.get("/lock")
    assert (reply.dotted, json.loads(reply.payload)) == ("2.05", {"locked": True})
    assert session.put("/lock", b"unlock").dotted == "2.04"
    assert lock.door.locked is False
    reply = session.get("/lock", accept="application/cbor")
    assert reply.content_format == 60 and cbor.loads(reply.payload) == {"locked": False}
    assert json.loads(session.get("/battery").payload) == {"battery": 87}
    assert session.put("/lock", b"open sesame").dotted == "4.00"
    assert session.get("/lock", accept="text/plain; charset=utf-8").dotted == "4.06"


def test_unprotected_request_to_lock_is_4_01_with_creation_hints(lock: Lock, client: Client) -> None:
    for code, bit in ((Code.GET, 1), (Code.PUT, 4)):
        reply = client.post("/lock", b"unlock" if code == Code.PUT else b"", code=code, content_format=None)
        assert reply.dotted == "4.01"
        assert reply.content_format == 19  # application/ace+cbor (RFC 9200 §5.2, Fig. 2)
        hints = CreationHints.from_cbor(reply.payload)
        assert hints.as_uri == AS_URI
        assert hints.audience == AUDIENCE
        assert isinstance(hints.scope, bytes)
        assert AifScope.from_cbor(hints.scope) == AifScope([("/lock", bit)])  # exactly what this request needs
        assert hints.cnonce is None  # this lock does not use cnonces
    assert lock.door.locked is True  # the unprotected PUT never reached the resource
    assert len(lock.door.accesses) == 0


def test_unprotected_request_to_unknown_path_is_4_01_too(client: Client) -> None:
    # Without a token the lock does not tell which resources exist beyond /.well-known/core.
    assert client.post("/secret", b"", code=Code.GET, content_format=None).dotted == "4.01"


def test_uncovered_path_is_4_03_and_uncovered_method_4_05(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc, scope="/lock:GET"), osc)
    assert session.get("/lock").dotted == "2.05"
    assert session.get("/battery").dotted == "4.03"  # RFC 9200 §5.10.2: resource not covered
    assert session.get("/log").dotted == "4.03"
    reply = session.put("/lock", b"unlock")
    assert reply.dotted == "4.05"  # covered resource, method not covered
    assert reply.protected  # errors to protected requests are protected too
    assert lock.door.locked is True


def test_maintenance_scope_reads_the_access_log(lock: Lock, client: Client, key: CoseKey) -> None:
    user, admin = material(), material()
    client.establish(mint(key, osc=user, scope="/lock:PUT"), user).put("/lock", b"unlock")
    session = client.establish(mint(key, osc=admin, scope="/log:GET"), admin)
    entries = json.loads(session.get("/log").payload)
    assert [(e["method"], e["path"], e["pop_id"], e["action"]) for e in entries] == [
        ("PUT", "/lock", (user.id or b"").hex(), "unlock")
    ]


def test_replayed_protected_request_is_rejected(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc), osc)
    wire, request_id = session.protect(Code.PUT, "/lock", b"unlock")
    first = session.send_raw(wire)
    inner, _ = session.context.unprotect(first, request_id)
    assert inner.code.dotted == "2.04"
    lock.door.locked = True
    replayed = session.send_raw(wire)  # the very same OSCORE request again
    assert replayed.code.dotted == "4.01"
    assert replayed.opt.oscore is None and replayed.payload == b"Replay detected"
    assert lock.door.locked is True  # not executed twice
    assert session.get("/lock").dotted == "2.05"  # the context still works for fresh requests


def test_new_token_for_the_same_key_supersedes_the_old_one(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    old = client.establish(mint(key, osc=osc, scope="/lock:GET,PUT"), osc)
    assert old.put("/lock", b"unlock").dotted == "2.04"
    new = client.establish(mint(key, osc=osc, scope="/lock:GET"), osc, id1=b"\x02")
    assert len(lock.rs.store) == 1  # one token per PoP key (RFC 9200 §5.10.1)
    reply = old.put("/lock", b"lock")
    assert (reply.dotted, reply.protected) == ("4.01", False)  # the old context is gone: unprotected 4.01
    assert CreationHints.from_cbor(reply.payload).audience == AUDIENCE
    assert new.get("/lock").dotted == "2.05"
    assert new.put("/lock", b"lock").dotted == "4.05"  # the old authorization is gone too
    assert lock.door.locked is False


def test_reposting_the_same_token_derives_a_new_context(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    token = mint(key, osc=osc)
    first = client.establish(token, osc)
    second = client.establish(token, osc)  # RFC 9203 §4.1: new nonce1 -> new context, the old one is dropped
    assert second.get("/lock").dotted == "2.05"
    assert first.get("/lock").dotted == "4.01"


def test_bounded_store_evicts_the_oldest_token(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    lock = make_lock(rs_config(key, max_tokens=2))
    client = make_client(lock.base)
    sessions = []
    for _ in range(3):
        osc = material()
        sessions.append(client.establish(mint(key, osc=osc), osc))
    assert len(lock.rs.store) == 2
    assert sessions[0].get("/lock").dotted == "4.01"  # evicted: received longest ago
    assert sessions[1].get("/lock").dotted == "2.05"
    assert sessions[2].get("/lock").dotted == "2.05"
    assert lock.site.contexts == 2


def test_bounded_store_evicts_expired_tokens_first(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    lock = make_lock(rs_config(key, max_tokens=2))
    client = make_client(lock.base)
    old, short = material(), material()
    oldest = client.establish(mint(key, osc=old), old)
    client.establish(mint(key, osc=short, exp=T0 + 10), short)
    lock.clock.advance(11)
    third = material()
    newest = client.establish(mint(key, osc=third), third)
    assert oldest.get("/lock").dotted == "2.05"  # kept: the expired token made room
    assert newest.get("/lock").dotted == "2.05"
    assert short.id not in lock.rs.store


def test_token_expiry_with_a_clock_drops_the_context(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc, exp=T0 + 60), osc)
    assert session.get("/lock").dotted == "2.05"
    lock.clock.advance(60)
    reply = session.get("/lock")
    assert (reply.dotted, reply.protected) == ("4.01", False)  # RFC 9203 §4.3: no context after expiry
    hints = CreationHints.from_cbor(reply.payload)
    assert hints.as_uri == AS_URI and hints.audience == AUDIENCE
    assert lock.site.contexts == 0 and len(lock.rs.store) == 0


def test_clockless_lock_expires_exi_tokens_on_uptime(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    from resource_server.clock import ManualClock

    lock = make_lock(rs_config(key, has_clock=False), clock=ManualClock(wall=None, uptime=5.0))
    client = make_client(lock.base)
    osc = material()
    token = mint(key, osc=osc, exp=None, exi=30, cti=AUDIENCE.encode() + b"\x07")
    session = client.establish(token, osc)
    lock.clock.advance(29)
    assert session.get("/lock").dotted == "2.05"
    lock.clock.advance(1)
    assert session.get("/lock").dotted == "4.01"
    # RFC 9200 §5.10.3: the same token, and any with a sequence number <= 7, is expired for good.
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.01"
    other = material()
    older = mint(key, osc=other, exp=None, exi=30, cti=AUDIENCE.encode() + b"\x06")
    assert client.upload(older, nonce1=b"n" * 8).dotted == "4.01"
    newer = client.establish(mint(key, osc=other, exp=None, exi=30, cti=AUDIENCE.encode() + b"\x08"), other)
    assert newer.get("/lock").dotted == "2.05"


def test_update_of_access_rights_over_oscore_keeps_the_context(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    assert osc.id is not None
    session = client.establish(mint(key, osc=osc, scope="/lock:GET"), osc)
    assert session.put("/lock", b"unlock").dotted == "4.05"
    # RFC 9203 §4.1: the new token names the Input Material by kid and travels over the existing context.
    update = mint(key, cnf=Confirmation(kid=osc.id), scope="/lock:GET,PUT")
    reply = session.request(Code.POST, "/authz-info", update, content_format=61)
    assert (reply.dotted, reply.protected, reply.payload) == ("2.01", True, b"")
    assert session.put("/lock", b"unlock").dotted == "2.04"  # same context, new rights
    assert lock.site.contexts == 1 and len(lock.rs.store) == 1


def test_update_naming_other_material_is_4_01(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc, scope="/lock:GET"), osc)
    reply = session.request(Code.POST, "/authz-info", mint(key, cnf=Confirmation(kid=b"other!")), content_format=61)
    assert (reply.dotted, reply.protected) == ("4.01", True)
    another = material()  # a brand-new Input Material posted over an existing context is no update either
    reply = session.request(Code.POST, "/authz-info", mint(key, osc=another), content_format=61)
    assert reply.dotted == "4.01"
    assert session.put("/lock", b"unlock").dotted == "4.05"  # rights unchanged


def test_client_using_the_other_salt_convention_fails_loudly(lock: Lock, client: Client, key: CoseKey) -> None:
    # ace_core encodes an absent salt as h'' in the Master Salt (RFC 9203 §4.3 leaves it open); a client that
    # omits the item derives other keys. The lock must answer an error the client sees, not stay silent.
    osc = material()
    assert osc.salt is None
    nonce1 = b"\x10" * 8
    session = client.establish(mint(key, osc=osc), osc, nonce1=nonce1)
    omitted = cbor.bstr(nonce1) + cbor.bstr(session.nonce2)
    assert omitted != master_salt(None, nonce1, session.nonce2)
    session.context = ClientContext(session.params, master_salt=omitted)
    session.coap.client_credentials[client.base + "/*"] = session.context
    reply = session.get("/lock")
    assert (reply.dotted, reply.protected, reply.payload) == ("4.00", False, b"Decryption failed")


def test_with_salt_both_conventions_agree_and_work(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material(salt=b"\x5a" * 8)
    session = client.establish(mint(key, osc=osc), osc)
    assert session.get("/lock").dotted == "2.05"


def test_context_parameters_on_both_sides_mirror_each_other(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    assert osc.id is not None
    nonce1 = b"\x11" * 8
    session = client.establish(mint(key, osc=osc), osc, id1=b"\x42", nonce1=nonce1)
    token = lock.rs.store.get(osc.id)
    assert token is not None and token.association is not None
    server = token.association  # derived keys only: no Master Secret, and no nonces without a state file
    assert (server.client_recipient_id, server.server_recipient_id) == (b"\x42", session.id2)
    assert server.sender_key == session.params.recipient_key()
    assert server.recipient_key == session.params.sender_key()
    assert server.common_iv == session.params.common_iv()
    assert server.nonce1 is None and server.nonce2 is None and token.token is None
    expected = context_parameters(
        osc,
        nonce1=nonce1,
        nonce2=session.nonce2,
        client_recipient_id=b"\x42",
        server_recipient_id=session.id2,
        role=Role.SERVER,
    )
    assert expected.master_salt == session.params.master_salt
    assert (expected.sender_key(), expected.recipient_key(), expected.common_iv()) == (
        server.sender_key,
        server.recipient_key,
        server.common_iv,
    )


def test_protected_well_known_core(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    session = client.establish(mint(key, osc=osc, exp=T0 + LIFETIME), osc)
    reply = session.get("/.well-known/core")
    assert reply.dotted == "2.05" and b'rt="ace.ai"' in reply.payload
