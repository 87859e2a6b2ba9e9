"""``AceClient``'s protocol flow and retry policy against a scripted CoAP double (no sockets, fake clock).

The same behaviour is covered end to end over real UDP in ``test_e2e_lock.py``; this module pins the decisions:
which exchanges happen in which order, when a token is reused or re-requested, the retry-once rule and how the
final failure is classified (RFC 9200 §5.2/§5.3/§5.8/§5.10, RFC 9203 §4).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from ace_core.errors import InvalidScope
from ace_core.messages import (
    AccessInformation,
    AuthzInfoRequest,
    AuthzInfoResponse,
    CreationHints,
    ErrorResponse,
    TokenRequest,
)
from ace_core.oscore import OscoreContextParameters
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import MEDIA_TYPE_ACE_CBOR, AceProfile, ErrorCode
from ace_core.scope import AifScope
from ace_core.status import Status
from client_sdk.client import AceClient
from client_sdk.errors import (
    AccessDenied,
    ContextMismatch,
    DiscoveryFailed,
    NoSecurityContext,
    ResponseProtectionFailed,
    TokenUploadFailed,
    TransportTimeout,
    UntrustedAuthorizationServer,
)
from client_sdk.session import origin_of
from client_sdk.transport import Response
from tests.client_sdk.test_session import FakeClock

T = TypeVar("T")

AS = "coap://as.example/token"
LOCK = "coap://lock.example/lock"
ORIGIN = "coap://lock.example:5683"
SECRET = "client-secret-Zq81vN"
SCOPE = AifScope.parse_spec("/lock:PUT").to_cbor()
HINTS = CreationHints(as_uri=AS, audience="front-door", scope=SCOPE, cnonce=b"\xc0\x01")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def ace(status: int, message: Any) -> Response:
    return Response(status=status, payload=message.to_cbor(), content_type=MEDIA_TYPE_ACE_CBOR)


def unprotected(status: int, diagnostic: bytes = b"") -> Response:
    return Response(status=status, payload=diagnostic, content_type=None, protected=False)


def protected(status: int, payload: bytes = b"") -> Response:
    return Response(status=status, payload=payload, content_type=None, protected=True)


class ScriptedCoap:
    """A :class:`~client_sdk.transport.CoapLike` double: an AS, a lock's discovery and authz-info answers, and a
    queue of answers to protected requests. Records every exchange as ``(kind, method, uri, payload)``."""

    def __init__(self, *, lifetime: int = 3600) -> None:
        self.calls: list[tuple[str, str, str, bytes]] = []
        self.lifetime = lifetime
        self.discovery: deque[Response] = deque()
        self.tokens: deque[Response] = deque()
        self.uploads: deque[Response] = deque()
        self.answers: deque[Response | Exception] = deque()
        self.installed: dict[str, OscoreContextParameters] = {}
        self.issued = 0
        self.closed = False

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]

    def token_requests(self) -> list[TokenRequest]:
        return [TokenRequest.from_cbor(p) for kind, _, _, p in self.calls if kind == "token"]

    def uploads_sent(self) -> list[AuthzInfoRequest]:
        return [AuthzInfoRequest.from_cbor(p) for kind, _, _, p in self.calls if kind == "authz-info"]

    async def request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        await asyncio.sleep(0)  # let concurrent callers interleave, as a real exchange would
        if uri.endswith("/token"):
            self.calls.append(("token", method, uri, payload))
            if self.tokens:
                return self.tokens.popleft()
            self.issued += 1
            material = OscoreMaterial(id=bytes([self.issued]), ms=bytes([self.issued]) * 16)
            info = AccessInformation(
                access_token=f"token-{self.issued}".encode(),
                expires_in=self.lifetime,
                ace_profile=AceProfile.COAP_OSCORE,
                cnf=Confirmation(osc=material).to_cbor_map(),
            )
            return ace(Status.CREATED, info)
        if uri.endswith("/authz-info"):
            self.calls.append(("authz-info", method, uri, payload))
            if self.uploads:
                return self.uploads.popleft()
            return ace(Status.CREATED, AuthzInfoResponse(nonce2=b"\x22" * 8, ace_server_recipientid=b"\x00"))
        self.calls.append(("discovery", method, uri, payload))
        return self.discovery.popleft() if self.discovery else ace(Status.UNAUTHORIZED, HINTS)

    def install_oscore(self, uri: str, params: OscoreContextParameters) -> None:
        self.installed[uri] = params

    def remove_oscore(self, uri: str) -> None:
        self.installed.pop(uri, None)

    async def protected_request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        self.calls.append(("protected", method, uri, payload))
        if origin_of(uri) not in self.installed:
            raise NoSecurityContext("no context")
        answer = self.answers.popleft() if self.answers else protected(Status.CHANGED)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def close(self) -> None:
        self.closed = True


def client(coap: ScriptedCoap, clock: FakeClock | None = None, **kwargs: Any) -> AceClient:
    kwargs.setdefault("accept_hinted_as", {AS})
    return AceClient(
        client_id="phone-app",
        client_secret=SECRET,
        coap=coap,
        clock=clock or FakeClock(),
        random_bytes=lambda n: b"\x01" * n,
        **kwargs,
    )


# --- the happy path ------------------------------------------------------------------------------------------


def test_request_discovers_gets_a_token_uploads_and_sends_protected() -> None:
    coap = ScriptedCoap()

    async def go() -> Response:
        async with client(coap) as app:
            return await app.request("PUT", LOCK, b"unlock")

    response = run(go())
    assert response.status == Status.CHANGED and response.protected
    assert coap.kinds() == ["discovery", "token", "authz-info", "protected"]
    assert coap.calls[0][1:] == ("PUT", LOCK, b"")  # discovery: same method and resource, no payload
    (token_request,) = coap.token_requests()
    assert (token_request.audience, token_request.scope) == ("front-door", SCOPE)  # from the hints
    assert token_request.cnonce == b"\xc0\x01"  # RFC 9200 §5.3.1
    assert token_request.client_id == "phone-app" and token_request.client_secret == SECRET.encode()
    assert token_request.profile_requested  # RFC 9200 §5.8.4.3
    (upload,) = coap.uploads_sent()
    assert coap.calls[2][2] == ORIGIN + "/authz-info"
    assert upload.access_token == b"token-1" and upload.nonce1 == b"\x01" * 8 and upload.ace_client_recipientid
    assert coap.calls[3][1:] == ("PUT", LOCK, b"unlock")
    assert coap.closed


def test_second_request_reuses_the_context() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        app = client(coap)
        await app.request("PUT", LOCK, b"unlock")
        info = app.session_info(LOCK)
        assert info is not None and info.confirmed and info.audience == "front-door"
        await app.request("PUT", LOCK, b"lock")
        assert app.session_info(LOCK) == info

    run(go())
    assert coap.kinds() == ["discovery", "token", "authz-info", "protected", "protected"]


def test_configured_target_needs_no_discovery() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        app = AceClient(AS, "phone-app", SECRET, coap=coap, clock=FakeClock())
        info = await app.connect(ORIGIN, audience="front-door", scope=AifScope.parse_spec("/lock:PUT"))
        assert info.scope == SCOPE and info.client_recipient_id == coap.uploads_sent()[0].ace_client_recipientid
        await app.request("PUT", LOCK, b"unlock")

    run(go())
    assert coap.kinds() == ["token", "authz-info", "protected"]
    assert coap.token_requests()[0].cnonce is None


def test_token_rerequested_near_expiry() -> None:
    coap = ScriptedCoap(lifetime=60)  # margin: 6 s
    clock = FakeClock()

    async def go() -> None:
        app = client(coap, clock)
        await app.request("GET", LOCK)
        clock.advance(53.9)
        await app.request("GET", LOCK)
        assert coap.kinds().count("token") == 1
        clock.advance(0.2)  # 5.9 s left < 6 s margin
        await app.request("GET", LOCK)
        assert coap.kinds().count("token") == 2
        assert [u.access_token for u in coap.uploads_sent()] == [b"token-1", b"token-2"]
        assert coap.uploads_sent()[0].ace_client_recipientid != coap.uploads_sent()[1].ace_client_recipientid

    run(go())
    assert coap.kinds()[-3:] == ["token", "authz-info", "protected"]  # no discovery the second time


def test_cached_token_serves_a_second_lock_of_the_same_audience() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        app = client(coap)
        await app.request("GET", LOCK)
        await app.request("GET", "coap://lock2.example/lock", audience="front-door", scope=SCOPE)

    run(go())
    assert coap.kinds().count("token") == 1
    assert [u.access_token for u in coap.uploads_sent()] == [b"token-1", b"token-1"]


# --- retry once on 4.01 --------------------------------------------------------------------------------------


def test_lock_restart_unprotected_401_retries_once_with_a_fresh_token() -> None:
    coap = ScriptedCoap()

    async def go() -> Response:
        app = client(coap)
        await app.request("GET", LOCK)
        fresh_hints = CreationHints(as_uri=AS, audience="front-door", scope=SCOPE, cnonce=b"\xc0\x02")
        coap.answers.extend(
            [
                Response(Status.UNAUTHORIZED, fresh_hints.to_cbor(), MEDIA_TYPE_ACE_CBOR, protected=False),
                protected(Status.CONTENT, b"locked"),
            ]
        )
        return await app.request("GET", LOCK)

    response = run(go())
    assert response.payload == b"locked"
    assert coap.kinds() == [
        *["discovery", "token", "authz-info", "protected"],
        *["protected", "token", "authz-info", "protected"],
    ]
    assert [t.cnonce for t in coap.token_requests()] == [b"\xc0\x01", b"\xc0\x02"]  # the 4.01's new cnonce


def test_protected_401_twice_is_access_denied() -> None:
    coap = ScriptedCoap()
    coap.answers.extend([protected(Status.UNAUTHORIZED), protected(Status.UNAUTHORIZED)])

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(AccessDenied) as exc:
        run(go())
    assert exc.value.response_status == Status.UNAUTHORIZED
    assert coap.kinds().count("token") == 2 and coap.kinds().count("protected") == 2
    assert ORIGIN not in coap.installed  # the failed context is gone


def test_fresh_context_refused_twice_is_a_context_mismatch() -> None:
    coap = ScriptedCoap()
    coap.answers.extend([unprotected(Status.BAD_REQUEST, b"Decryption failed")] * 2)

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(ContextMismatch) as exc:
        run(go())
    message = str(exc.value)
    assert "Master Salt" in message and '4.00 "Decryption failed"' in message
    assert exc.value.response_status == Status.BAD_REQUEST
    assert coap.kinds().count("protected") == 2
    assert SECRET not in message


def test_other_4xx_are_returned_not_retried() -> None:
    coap = ScriptedCoap()
    coap.answers.extend([protected(Status.FORBIDDEN), protected(Status.METHOD_NOT_ALLOWED)])

    async def go() -> list[int]:
        app = client(coap)
        return [(await app.request("GET", LOCK + "2")).status, (await app.request("POST", LOCK)).status]

    assert run(go()) == [Status.FORBIDDEN, Status.METHOD_NOT_ALLOWED]
    assert coap.kinds().count("token") == 1


def test_timeout_on_a_fresh_context_names_the_likely_cause_without_retrying() -> None:
    coap = ScriptedCoap()
    coap.answers.append(TransportTimeout("no response"))

    async def go() -> None:
        await client(coap, timeout=0.5).request("GET", LOCK)

    with pytest.raises(ContextMismatch, match="did not answer the first OSCORE request.*Master Salt"):
        run(go())
    assert coap.kinds().count("protected") == 1


def test_timeout_on_a_working_context_is_a_timeout() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        app = client(coap)
        await app.request("GET", LOCK)
        coap.answers.append(TransportTimeout("no response"))
        await app.request("GET", LOCK)

    with pytest.raises(TransportTimeout):
        run(go())


def test_unverifiable_response_is_a_context_mismatch() -> None:
    coap = ScriptedCoap()
    coap.answers.append(ResponseProtectionFailed("bad tag"))

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(ContextMismatch, match="did not verify"):
        run(go())


# --- token upload --------------------------------------------------------------------------------------------


def test_equal_recipient_ids_derive_nothing() -> None:
    coap = ScriptedCoap()
    coap.uploads.append(ace(Status.CREATED, AuthzInfoResponse(nonce2=b"n" * 8, ace_server_recipientid=b"\x01")))

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(TokenUploadFailed, match="9203 §4.2"):
        run(go())
    assert coap.installed == {} and "protected" not in coap.kinds()


def test_cached_token_refused_at_authz_info_is_replaced_once() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        app = client(coap)
        await app.request("GET", LOCK)
        app.forget(LOCK)  # the token stays cached
        coap.uploads.append(ace(Status.UNAUTHORIZED, CreationHints(cnonce=b"\xc0\x03")))
        await app.request("GET", LOCK)

    run(go())
    assert coap.kinds()[4:] == ["authz-info", "token", "authz-info", "protected"]
    assert coap.token_requests()[-1].cnonce == b"\xc0\x03"


@pytest.mark.parametrize(("status", "words"), [(Status.FORBIDDEN, "audience"), (Status.BAD_REQUEST, "scope")])
def test_upload_refusal_is_explained(status: Status, words: str) -> None:
    coap = ScriptedCoap()
    coap.uploads.append(unprotected(status))

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(TokenUploadFailed, match=words) as exc:
        run(go())
    assert exc.value.response_status == status
    assert coap.kinds().count("token") == 1  # a fresh token refused is not retried


def test_malformed_authz_info_answer() -> None:
    coap = ScriptedCoap()
    coap.uploads.append(Response(Status.CREATED, b"\xa0", MEDIA_TYPE_ACE_CBOR))

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(TokenUploadFailed, match="no security context can be derived"):
        run(go())


# --- which AS, discovery -------------------------------------------------------------------------------------


def test_hinted_as_is_not_trusted_by_default() -> None:
    coap = ScriptedCoap()

    async def go() -> None:
        await client(coap, accept_hinted_as=False).request("GET", LOCK)

    with pytest.raises(UntrustedAuthorizationServer, match=AS):
        run(go())
    assert coap.kinds() == ["discovery"]  # the credentials went nowhere


def test_configured_as_wins_over_hints() -> None:
    coap = ScriptedCoap()
    evil = CreationHints(as_uri="coap://evil.example/token", audience="a", scope="s")
    coap.discovery.append(ace(Status.UNAUTHORIZED, evil))

    async def go() -> None:
        await AceClient(AS, "phone-app", SECRET, coap=coap, clock=FakeClock()).request("GET", LOCK)

    run(go())
    assert [call[2] for call in coap.calls if call[0] == "token"] == [AS]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (protected(Status.CONTENT, b"hello"), "not protected"),
        (unprotected(Status.UNAUTHORIZED), "not 4.01 with AS Request Creation Hints"),
        (unprotected(Status.NOT_FOUND), "4.04"),
    ],
)
def test_discovery_failures(answer: Response, words: str) -> None:
    coap = ScriptedCoap()
    coap.discovery.append(answer)

    async def go() -> None:
        await client(coap).discover(LOCK)

    with pytest.raises(DiscoveryFailed, match=words):
        run(go())


def test_discover_returns_the_hints() -> None:
    coap = ScriptedCoap()
    assert run(client(coap).discover(ORIGIN, "PUT", "/lock")) == HINTS
    assert coap.calls == [("discovery", "PUT", ORIGIN + "/lock", b"")]


def test_as_refusal_is_the_oauth_error() -> None:
    coap = ScriptedCoap()
    coap.tokens.append(ace(Status.BAD_REQUEST, ErrorResponse(error=ErrorCode.INVALID_SCOPE)))

    async def go() -> None:
        await client(coap).request("GET", LOCK)

    with pytest.raises(InvalidScope):
        run(go())


# --- concurrency, lifecycle ----------------------------------------------------------------------------------


def test_concurrent_requests_share_one_connect() -> None:
    coap = ScriptedCoap()

    async def go() -> list[Response]:
        app = client(coap)
        return list(await asyncio.gather(*(app.request("GET", LOCK) for _ in range(5))))

    assert all(r.ok for r in run(go()))
    assert coap.kinds().count("token") == 1 and coap.kinds().count("authz-info") == 1


def test_close_forgets_sessions() -> None:
    coap = ScriptedCoap()

    async def go() -> AceClient:
        app = client(coap)
        await app.request("GET", LOCK)
        await app.close()
        return app

    app = run(go())
    assert app.session_info(LOCK) is None and coap.installed == {} and coap.closed


def test_constructor_checks() -> None:
    with pytest.raises(TypeError):
        AceClient(AS)
    with pytest.raises(ValueError):
        AceClient("ftp://as.example/token", "c", "s")
    assert SECRET not in repr(AceClient(AS, "c", SECRET))
