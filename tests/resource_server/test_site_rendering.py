"""The site wrapper in-process (no UDP): how an allowed request reaches the inner site and its answers come back
protected (errors, observations), the audit log lines and their levels, and what a held token costs in memory
(no claims set, no token bytes without a state file, no closure per security context)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.pipe
import pytest
from aiocoap import resource
from aiocoap.numbers.codes import Code

from ace_core.keys import CoseKey
from ace_core.messages import AuthzInfoRequest, AuthzInfoResponse
from ace_core.oscore import Role, context_parameters
from ace_core.pop import OscoreMaterial
from resource_server.aiocoap_site import AceSiteWrapper, TokenOscoreContext, resource_site
from resource_server.clock import ManualClock
from resource_server.examples.door_lock import DoorLock
from resource_server.server import ResourceServer
from resource_server.token_store import StoredToken, token_hash
from tests.resource_server.support import T0, ClientContext, material, mint, rs_config

SCOPE = "/lock:GET,PUT /fails:GET /missing:GET /watch:GET"
#: Event-loop iterations that let a rendering task run until it waits (no sleeps: STYLE §3.4).
SETTLE_ROUNDS = 50


class _Remote:
    """The attributes aiocoap's transports give an incoming request's remote (what the sites read)."""

    hostinfo = "[::ffff:192.0.2.7]:40000"
    hostinfo_local = "127.0.0.1:5683"
    uri_base = "coap://[::ffff:192.0.2.7]:40000"
    uri_base_local = "coap://127.0.0.1:5683"
    scheme = "coap"
    is_multicast = False
    is_multicast_locally = False
    maximum_block_size_exp = 6
    maximum_payload_size = 1024
    blockwise_key = ("192.0.2.7", 40000)
    authenticated_claims: list[Any] = []


class _Fails(resource.Resource):  # type: ignore[misc]
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        raise RuntimeError("the resource is broken")


class _Watch(resource.ObservableResource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=Code.CONTENT, payload=str(self.value).encode())


@dataclass
class _Exchange:
    """One request through the wrapper: every response it produced, unprotected where possible."""

    request_id: Any
    client: ClientContext
    events: list[Any] = field(default_factory=list)

    def replies(self) -> list[tuple[str, bytes, int | None]]:
        out = []
        for event in self.events:
            message = event.message
            assert message.opt.oscore is not None, "every answer to a protected request must be protected"
            message.mtype, message.mid, message.token = aiocoap.NON, 2, b"tk"
            message = aiocoap.Message.decode(message.encode(), _Remote())  # as the client receives it
            plain, _ = self.client.unprotect(message, self.request_id)
            out.append((str(plain.code.dotted), bytes(plain.payload), message.opt.observe))
        return out


@dataclass
class _Lock:
    rs: ResourceServer
    wrapper: AceSiteWrapper
    client: ClientContext
    token: StoredToken

    def prepare(self, code: Code, path: str, **options: Any) -> tuple[aiocoap.pipe.Pipe, _Exchange]:
        """A protected request as the transport hands it to the site, and where its answers are collected."""
        inner = aiocoap.Message(code=code, uri="coap://lock" + path, **options)
        outer, request_id = self.client.protect(inner)
        outer.mtype, outer.mid, outer.token = aiocoap.NON, 1, b"tk"
        incoming = aiocoap.Message.decode(outer.encode(), _Remote())
        exchange = _Exchange(request_id, self.client)
        pipe = aiocoap.pipe.Pipe(incoming, logging.getLogger("test.pipe"))
        pipe.on_event(lambda event: (exchange.events.append(event), not event.is_last)[1])
        return pipe, exchange

    async def send(self, code: Code, path: str, **options: Any) -> _Exchange:
        pipe, exchange = self.prepare(code, path, **options)
        await self.wrapper.render_to_pipe(pipe)
        return exchange


def _lock(key: CoseKey, site: Any, **config: Any) -> _Lock:
    rs = ResourceServer(rs_config(key, **config), clock=ManualClock(wall=float(T0), uptime=5.0))
    wrapper = AceSiteWrapper(site, rs)
    osc = material()
    nonce1, id1 = b"\x01" * 8, b"\x42"
    payload = AuthzInfoRequest(access_token=mint(key, osc=osc, scope=SCOPE), nonce1=nonce1, ace_client_recipientid=id1)
    result = rs.handle_authz_info(payload.to_cbor(), 19, peer="192.0.2.7")
    wrapper.install(result.token)
    answer = AuthzInfoResponse.from_cbor(result.payload)
    params = context_parameters(
        osc,
        nonce1=nonce1,
        nonce2=answer.nonce2,
        client_recipient_id=id1,
        server_recipient_id=answer.ace_server_recipientid,
        role=Role.CLIENT,
    )
    return _Lock(rs, wrapper, ClientContext(params), result.token)


def _site() -> tuple[resource.Site, _Watch]:
    site = resource_site(DoorLock(uptime=lambda: 0.0).resources())
    site.add_resource(["fails"], _Fails())
    watch = _Watch()
    site.add_resource(["watch"], watch)
    return site, watch


def test_allowed_request_is_rendered_and_protected(key: CoseKey) -> None:
    site, _ = _site()
    lock = _lock(key, site)
    exchange = asyncio.run(lock.send(Code.PUT, "/lock", payload=b"unlock"))
    assert exchange.replies() == [("2.04", b"", None)]


def test_a_resource_that_raises_gets_a_protected_5_00(key: CoseKey, caplog: pytest.LogCaptureFixture) -> None:
    site, _ = _site()
    lock = _lock(key, site)
    with caplog.at_level(logging.ERROR, logger="ostiary.lock"):
        exchange = asyncio.run(lock.send(Code.GET, "/fails"))
    assert exchange.replies() == [("5.00", b"", None)]
    assert "the resource is broken" in caplog.text  # logged with its traceback, never sent


def test_a_renderable_error_of_the_site_is_its_protected_answer(key: CoseKey) -> None:
    site, _ = _site()
    lock = _lock(key, site)  # the token covers /missing, the site has no such resource
    exchange = asyncio.run(lock.send(Code.GET, "/missing"))
    assert [reply[0] for reply in exchange.replies()] == ["4.04"]


def test_observation_notifications_are_protected_until_interest_ends(key: CoseKey) -> None:
    site, watch = _site()
    lock = _lock(key, site)
    pipe, exchange = lock.prepare(Code.GET, "/watch", observe=0)

    async def settle() -> None:
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def observe() -> int:
        task = asyncio.ensure_future(lock.wrapper.render_to_pipe(pipe))
        await settle()  # the first answer is sent, then the resource waits for changes
        watch.value = 1
        watch.updated_state()
        await settle()
        observers = len(watch._observations)
        task.cancel()  # the client lost interest: aiocoap cancels the task that renders the request
        with pytest.raises(asyncio.CancelledError):
            await task
        return observers

    observers = asyncio.run(observe())
    replies = exchange.replies()
    assert [(code, payload) for code, payload, _ in replies] == [("2.05", b"0"), ("2.05", b"1")]
    assert all(observe_option is not None for _, _, observe_option in replies)  # notifications (RFC 7641)
    assert observers == 1 and not watch._observations  # the cancellation ended the observation


def test_granted_requests_and_accepted_tokens_log_at_debug_by_default(
    key: CoseKey, caplog: pytest.LogCaptureFixture
) -> None:
    site, _ = _site()
    with caplog.at_level(logging.INFO, logger="ostiary"):
        lock = _lock(key, site)
        asyncio.run(lock.send(Code.PUT, "/lock", payload=b"unlock"))
        asyncio.run(lock.send(Code.PUT, "/battery", payload=b"x"))  # not covered: 4.03
    text = caplog.text
    assert "accepted token" not in text and "authorized PUT /lock" not in text
    assert "door unlocked by " + lock.token.describe() in text  # the door's own audit line
    assert "refused PUT /battery from 192.0.2.7: 4.03" in text  # refusals stay at INFO, unmapped address
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="ostiary"):
        asyncio.run(lock.send(Code.GET, "/lock"))
    assert f"authorized GET /lock from 192.0.2.7 ({lock.token.describe()})" in caplog.text


def test_audit_granted_logs_every_grant_at_info(key: CoseKey, caplog: pytest.LogCaptureFixture) -> None:
    site, _ = _site()
    with caplog.at_level(logging.INFO, logger="ostiary"):
        lock = _lock(key, site, audit_granted=True)
        asyncio.run(lock.send(Code.GET, "/lock"))
    described = lock.token.describe()
    assert f"accepted token from 192.0.2.7: {described} audience=front-door rights=" in caplog.text
    assert f"authorized GET /lock from 192.0.2.7 ({described})" in caplog.text
    assert {r.levelno for r in caplog.records if "authorized" in r.message} == {logging.INFO}


# -- memory: what a held token keeps --------------------------------------------------------------------------


def test_a_held_token_keeps_no_claims_set_no_token_bytes_and_no_master_secret(key: CoseKey) -> None:
    site, _ = _site()
    lock = _lock(key, site)
    token = lock.token
    assert not hasattr(token, "claims") and not hasattr(token, "__dict__")
    assert token.token is None  # no state file: nothing will ever write the token out
    assert token.cti is not None and token.token_hash is not None and len(token.token_hash) == 33
    association = token.association
    assert association is not None and not hasattr(association, "params") and not hasattr(association, "__dict__")
    assert association.nonce1 is None and association.nonce2 is None  # only a restart would need them


def test_a_persisting_store_keeps_what_a_restart_needs(key: CoseKey, tmp_path: Path) -> None:
    site, _ = _site()
    lock = _lock(key, site, state_file=tmp_path / "lock.state")
    token = lock.token
    assert token.token is not None and token.token_hash == token_hash(token.token)
    assert token.association is not None and token.association.nonce1 == b"\x01" * 8
    assert token.association.nonce2 is not None


def test_tokens_share_audience_and_rights_objects(key: CoseKey) -> None:
    site, _ = _site()
    first, second = _lock(key, site), _lock(key, site)
    lock = _lock(key, site)
    osc = material()
    payload = AuthzInfoRequest(
        access_token=mint(key, osc=osc, scope=SCOPE), nonce1=b"n" * 8, ace_client_recipientid=b""
    )
    other = lock.rs.handle_authz_info(payload.to_cbor(), 19, peer="192.0.2.8").token
    assert other.rights is lock.token.rights and other.audience is lock.token.audience
    assert other.audience is lock.rs.config.audiences[0]
    assert first.token.rights == second.token.rights


def test_security_contexts_carry_no_closures(key: CoseKey) -> None:
    site, _ = _site()
    lock = _lock(key, site)
    osc = material()
    payload = AuthzInfoRequest(
        access_token=mint(key, osc=osc, scope=SCOPE), nonce1=b"n" * 8, ace_client_recipientid=b""
    )
    lock.wrapper.install(lock.rs.handle_authz_info(payload.to_cbor(), 19, peer="192.0.2.8").token)
    contexts = [lock.wrapper.credentials.find_oscore({4: t.association.server_recipient_id}) for t in lock.rs.store]
    assert len(contexts) == 2 and all(isinstance(c, TokenOscoreContext) for c in contexts)
    for context in contexts:
        assert not [v for v in vars(context).values() if callable(v)]
        assert context.sender_key is context.association.sender_key  # shared with the association, not copied
    windows = [c.recipient_replay_window for c in contexts]
    assert windows[0].strike_out_callback is windows[1].strike_out_callback


def test_token_hash_is_the_one_the_as_computes() -> None:
    from as_server.tokens import token_hash as as_token_hash

    for token in (b"", bytes.fromhex("d83dd08343a1010aa04100"), bytes(range(256))):
        assert token_hash(token) == as_token_hash(token)


def test_the_authz_info_response_is_the_message_codecs(key: CoseKey) -> None:
    site, _ = _site()
    lock = _lock(key, site)
    osc: OscoreMaterial = material()
    request = AuthzInfoRequest(access_token=mint(key, osc=osc), nonce1=b"n" * 8, ace_client_recipientid=b"\x07")
    result = lock.rs.handle_authz_info(request.to_cbor(), 19, peer="192.0.2.7")
    answer = AuthzInfoResponse.from_cbor(result.payload)
    assert result.payload == answer.to_cbor()


def test_a_blockwise_upload_is_reassembled(key: CoseKey) -> None:
    # Single-datagram uploads skip aiocoap's blockwise bookkeeping; Block1 (RFC 7959 §2.5) still goes through it.
    from aiocoap.optiontypes import BlockOption

    site, _ = _site()
    lock = _lock(key, site)
    osc = material()
    wide = " ".join(f"/door{n}:GET" for n in range(40))
    payload = AuthzInfoRequest(
        access_token=mint(key, osc=osc, scope=wide), nonce1=b"n" * 8, ace_client_recipientid=b"\x07"
    ).to_cbor()
    size_exponent = 2  # 64-byte blocks
    blocks = [payload[i : i + 64] for i in range(0, len(payload), 64)]
    assert 2 < len(blocks) and len(payload) <= 1024

    async def upload() -> list[aiocoap.Message]:
        answers = []
        for number, block in enumerate(blocks):
            more = number < len(blocks) - 1
            message = aiocoap.Message(code=Code.POST, uri="coap://lock/authz-info", payload=block, content_format=19)
            message.opt.block1 = BlockOption.BlockwiseTuple(number, more, size_exponent)
            message.mtype, message.mid, message.token = aiocoap.NON, number, b"up"
            incoming = aiocoap.Message.decode(message.encode(), _Remote())
            got: list[Any] = []
            log = logging.getLogger("test.pipe")
            pipe = aiocoap.pipe.Pipe(incoming, log)
            pipe.on_event(lambda event, got=got: (got.append(event), False)[1])
            server_pipe = aiocoap.pipe.error_to_message(pipe, log)  # what aiocoap's server does with exceptions
            try:
                await lock.wrapper.render_to_pipe(server_pipe)
            except Exception as exc:  # noqa: BLE001 - e.g. the 2.31 Continue of RFC 7959, a renderable error
                server_pipe.add_exception(exc)
            answers.append(got[0].message)
        return answers

    answers = asyncio.run(upload())
    assert [str(a.code.dotted) for a in answers] == ["2.31"] * (len(blocks) - 1) + ["2.01"]
    assert answers[-1].opt.block1 is not None  # the final block is acknowledged
    AuthzInfoResponse.from_cbor(answers[-1].payload)
    assert lock.rs.store.get(osc.id or b"") is not None
