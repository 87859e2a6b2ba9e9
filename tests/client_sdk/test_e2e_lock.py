"""End to end over real UDP sockets on loopback: the AS (in-process, CoAP and HTTP, tests/as_server harness), the
reference door lock built on ``resource_server`` (``resource_server.examples.door_lock`` behind ``AceSiteWrapper``)
and ``client_sdk.AceClient``.

The flow is RFC 9200 §5.2/§5.3 (discovery from hints), §5.8 (token), RFC 9203 §4.1-§4.3 (``/authz-info`` with
nonce1/ID1, context derivation) and OSCORE-protected requests (RFC 8613). Everything runs on one event loop in a
thread; every wait is bounded (harness ``TIMEOUT``); nothing sleeps.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from ace_core.registry import AceProfile
from ace_core.scope import AifScope
from ace_core.status import Status
from client_sdk.client import AceClient
from client_sdk.errors import ContextMismatch, TokenUploadFailed
from tests.as_server.transport.harness import LoopThread
from tests.client_sdk.lockworld import (
    BACK_APP,
    BACK_SECRET,
    DOOR_APP,
    DOOR_SECRET,
    LOCK_SCOPE,
    SHORT_LIFETIME,
    CountingClient,
    Lock,
    World,
)
from tests.client_sdk.test_session import FakeClock


def _app(as_uri: str | None, **kwargs: Any) -> CountingClient:
    kwargs.setdefault("timeout", 5.0)
    return CountingClient(as_uri, DOOR_APP, DOOR_SECRET, **kwargs)


def _close(loops: LoopThread, client: AceClient) -> None:
    loops.run(client.close())


# --- the happy path ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_transport", ["coap", "http"])
def test_discover_token_upload_and_protected_requests(
    world: World, lock: Lock, loops: LoopThread, as_transport: str
) -> None:
    as_uri = world.coap_as if as_transport == "coap" else world.http_as
    app = _app(as_uri)
    try:
        hints = loops.run(app.discover(lock.uri + "/lock", "PUT"))
        assert hints.as_uri == world.coap_as and hints.audience == "front-door"  # RFC 9200 §5.3
        unlock = loops.run(app.request("PUT", lock.uri + "/lock", b"unlock", scope=AifScope.parse_spec(LOCK_SCOPE)))
        assert unlock.status == Status.CHANGED and unlock.protected
        assert lock.door is not None and lock.door.locked is False
        state = loops.run(app.request("GET", lock.uri + "/lock"))
        assert state.status == Status.CONTENT and json.loads(state.payload) == {"locked": False}
        assert len(app.issued) == 1 and app.issued[0].ace_profile == AceProfile.COAP_OSCORE
        info = app.session_info(lock.uri)
        assert info is not None and info.confirmed and info.audience == "front-door"
        assert info.client_recipient_id != info.server_recipient_id  # RFC 9203 §4.2
    finally:
        _close(loops, app)


def test_everything_from_the_hints(world: World, lock: Lock, loops: LoopThread) -> None:
    """No AS configured: the app trusts exactly the lock's AS, audience and scope come from the hints."""
    app = _app(None, accept_hinted_as={world.coap_as})
    try:
        response = loops.run(app.request("GET", lock.uri + "/battery"))
        assert response.status == Status.CONTENT and json.loads(response.payload) == {"battery": 87}
    finally:
        _close(loops, app)


def test_second_request_reuses_the_context(world: World, lock: Lock, loops: LoopThread) -> None:
    app = _app(world.coap_as)
    try:
        loops.run(app.request("GET", lock.uri + "/lock", scope=AifScope.parse_spec("/lock:GET,PUT")))
        first = app.session_info(lock.uri)
        for payload in (b"unlock", b"lock"):
            assert loops.run(app.request("PUT", lock.uri + "/lock", payload)).status == Status.CHANGED
        assert len(app.issued) == 1  # no new token
        assert app.session_info(lock.uri) == first  # same token, same recipient ids: no new upload
        assert lock.door is not None and lock.door.locked is True
    finally:
        _close(loops, app)


def test_not_covered_is_403_without_retry(world: World, lock: Lock, loops: LoopThread) -> None:
    app = _app(world.coap_as)
    try:
        loops.run(app.connect(lock.uri + "/lock", audience="front-door", scope=AifScope.parse_spec("/lock:GET")))
        assert loops.run(app.request("GET", lock.uri + "/battery")).status == Status.FORBIDDEN  # RFC 9200 §5.10.2
        assert loops.run(app.request("POST", lock.uri + "/lock", b"unlock")).status == Status.METHOD_NOT_ALLOWED
        assert len(app.issued) == 1
    finally:
        _close(loops, app)


def test_cnonce_from_the_hints_reaches_the_token(world: World, loops: LoopThread) -> None:
    """RFC 9200 §5.3.1: the lock sends a cnonce, the client copies it into the token request, the AS into the
    token; the lock then accepts the token only because the cnonce is there and fresh."""
    strict = Lock(world, loops, "front-door", use_cnonce=True)
    app = _app(world.coap_as)
    try:
        hints = loops.run(app.discover(strict.uri + "/lock"))
        assert hints.cnonce
        response = loops.run(app.request("GET", strict.uri + "/lock", scope=AifScope.parse_spec("/lock:GET")))
        assert response.status == Status.CONTENT
    finally:
        _close(loops, app)
        strict.stop()


# --- tokens near expiry, lock restart -------------------------------------------------------------------------


def test_token_rerequested_near_expiry(world: World, loops: LoopThread) -> None:
    short = Lock(world, loops, "short-door")
    clock = FakeClock()
    app = _app(world.coap_as, clock=clock)
    scope = AifScope.parse_spec("/lock:GET")
    try:
        assert loops.run(app.request("GET", short.uri + "/lock", audience="short-door", scope=scope)).ok
        assert app.issued[0].expires_in == SHORT_LIFETIME  # the RS's max lifetime at the AS
        clock.advance(SHORT_LIFETIME * 0.9 - 0.5)  # still outside the 10% margin
        assert loops.run(app.request("GET", short.uri + "/lock")).ok
        assert len(app.issued) == 1
        clock.advance(1.0)  # now inside the margin: re-request before it expires
        assert loops.run(app.request("GET", short.uri + "/lock")).ok
        assert len(app.issued) == 2
        assert app.issued[0].access_token != app.issued[1].access_token
        info = app.session_info(short.uri)
        assert info is not None and info.access_token == app.issued[1].access_token
    finally:
        _close(loops, app)
        short.stop()


def test_lock_restart_is_survived_with_one_retry(world: World, lock: Lock, loops: LoopThread) -> None:
    app = _app(world.coap_as)
    scope = AifScope.parse_spec("/lock:GET,PUT")
    try:
        assert loops.run(app.request("PUT", lock.uri + "/lock", b"unlock", scope=scope)).ok
        before = app.session_info(lock.uri)
        lock.restart()  # tokens and contexts gone: the next request gets an unprotected 4.01
        response = loops.run(app.request("GET", lock.uri + "/lock"))
        assert response.status == Status.CONTENT and response.protected
        assert len(app.issued) == 2  # a fresh token for the retry
        after = app.session_info(lock.uri)
        assert before is not None and after is not None and after.access_token != before.access_token
    finally:
        _close(loops, app)


# --- refusals ----------------------------------------------------------------------------------------------


def test_token_for_another_door_is_refused(world: World, lock: Lock, loops: LoopThread) -> None:
    back = CountingClient(world.coap_as, BACK_APP, BACK_SECRET, timeout=5.0)
    try:
        with pytest.raises(TokenUploadFailed) as exc:
            loops.run(
                back.request(
                    "PUT", lock.uri + "/lock", b"unlock", audience="back-door", scope=AifScope.parse_spec("/lock:PUT")
                )
            )
        # Encrypted for the back door, the token cannot even be opened by the front door: 4.01 (RFC 9200
        # §5.10.1.1); a fresh token is not retried.
        assert exc.value.response_status in (Status.UNAUTHORIZED, Status.FORBIDDEN)
        assert len(back.issued) == 1
        assert back.session_info(lock.uri) is None
        assert lock.door is not None and lock.door.locked is True
    finally:
        _close(loops, back)


def test_salt_convention_mismatch_fails_loudly(world: World, lock: Lock, loops: LoopThread) -> None:
    """A client that frames the absent salt differently (interop hook) derives other keys: the lock cannot use the
    context, and the client says why instead of hanging (also after its one retry)."""
    app = _app(world.coap_as, interop_omit_absent_salt=True, timeout=3.0)
    started = time.monotonic()
    try:
        with pytest.raises(ContextMismatch, match="Master Salt"):
            loops.run(app.request("GET", lock.uri + "/lock", scope=AifScope.parse_spec("/lock:GET")), timeout=20)
    finally:
        _close(loops, app)
    assert time.monotonic() - started < 10
    assert lock.door is not None and lock.door.locked is True
