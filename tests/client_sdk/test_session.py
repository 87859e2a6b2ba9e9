"""Sans-IO client bookkeeping (``client_sdk.session``): refresh margins, the token cache on a fake clock, recipient
ids and the RFC 9203 §4.2/§4.3 context derivation from an authz-info exchange."""

from __future__ import annotations

import pytest

from ace_core import cbor
from ace_core.messages import AccessInformation, AuthzInfoResponse
from ace_core.oscore import Role, context_parameters
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile
from client_sdk.errors import TokenUnusable
from client_sdk.session import (
    NONCE1_SIZE,
    CachedToken,
    RefreshPolicy,
    SessionBook,
    TokenCache,
    origin_of,
    oscore_material,
)

MS = bytes(range(16))


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def access_info(
    *,
    expires_in: int | None = 3600,
    profile: AceProfile | None = AceProfile.COAP_OSCORE,
    token: bytes = b"token-1",
    salt: bytes | None = None,
) -> AccessInformation:
    osc = OscoreMaterial(id=b"\x01", ms=MS, salt=salt)
    return AccessInformation(
        access_token=token,
        expires_in=expires_in,
        ace_profile=profile,
        cnf=Confirmation(osc=osc).to_cbor_map(),
    )


# --- RefreshPolicy -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lifetime", "margin"), [(10, 1.0), (60, 6.0), (600, 60.0), (3600, 60.0)])
def test_margin_is_ten_percent_capped_at_a_minute(lifetime: float, margin: float) -> None:
    assert RefreshPolicy().margin(lifetime) == pytest.approx(margin)


# --- TokenCache ----------------------------------------------------------------------------------------------


def test_token_is_reused_until_the_margin_then_evicted() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    token = cache.put("front-door", b"aif", access_info(expires_in=600), requested_at=clock())
    assert token.expires_at == clock() + 600
    clock.advance(600 - 60 - 0.001)  # just before the 60 s margin
    assert cache.get("front-door", b"aif") is token
    clock.advance(0.001)
    assert cache.get("front-door", b"aif") is None
    assert len(cache) == 0  # evicted


def test_lifetime_counts_from_the_request() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    sent = clock()
    clock.advance(5)  # the AS took 5 s to answer
    token = cache.put("front-door", "read", access_info(expires_in=100), requested_at=sent)
    assert token.expires_at == sent + 100
    clock.advance(100 - 5 - 10)  # margin of a 100 s token is 10 s
    assert cache.get("front-door", "read") is None


def test_other_scope_or_audience_is_a_miss() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.put("front-door", b"a", access_info(), requested_at=clock())
    assert cache.get("front-door", b"b") is None
    assert cache.get("back-door", b"a") is None
    assert cache.get("front-door", b"a") is not None


def test_one_token_per_audience_and_guarded_discard() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    first = cache.put("front-door", b"a", access_info(token=b"t1"), requested_at=clock())
    second = cache.put("front-door", b"b", access_info(token=b"t2"), requested_at=clock())
    assert len(cache) == 1 and cache.get("front-door", b"a") is None
    cache.discard("front-door", first)  # not the current one: kept
    assert cache.get("front-door", b"b") is second
    cache.discard("front-door", second)
    assert cache.get("front-door", b"b") is None


def test_token_without_expires_in_is_refused_rfc9200_5_10_4() -> None:
    cache = TokenCache(clock=FakeClock())
    with pytest.raises(TokenUnusable, match="5.10.4"):
        cache.put("front-door", b"a", access_info(expires_in=None), requested_at=0)


def test_default_lifetime_applies_without_expires_in() -> None:
    clock = FakeClock()
    cache = TokenCache(clock=clock, default_lifetime=120)
    assert cache.put("front-door", b"a", access_info(expires_in=None), requested_at=clock()).lifetime == 120


@pytest.mark.parametrize(
    "info",
    [
        access_info(profile=AceProfile.COAP_DTLS),
        AccessInformation(access_token=b"t", expires_in=60),  # no cnf
        AccessInformation(access_token=b"t", expires_in=60, cnf={3: b"kid"}),  # cnf without osc
        AccessInformation(access_token=b"t", expires_in=60, cnf={4: {0: b"\x01"}}),  # osc without ms
    ],
)
def test_non_oscore_tokens_are_unusable(info: AccessInformation) -> None:
    with pytest.raises(TokenUnusable):
        oscore_material(info)


def test_cached_token_repr_hides_the_master_secret() -> None:
    token = TokenCache(clock=FakeClock()).put("front-door", b"a", access_info(), requested_at=0)
    assert MS.hex() not in repr(token) and repr(MS) not in repr(token)


# --- SessionBook ---------------------------------------------------------------------------------------------


def _token(clock: FakeClock, salt: bytes | None = None) -> CachedToken:
    return TokenCache(clock=clock).put("front-door", b"a", access_info(salt=salt), requested_at=clock())


def _counter_bytes() -> object:
    n = 0

    def random_bytes(size: int) -> bytes:
        nonlocal n
        n += 1
        return n.to_bytes(size, "big")

    return random_bytes


def test_begin_uses_a_fresh_nonce1_and_unique_recipient_ids() -> None:
    clock = FakeClock()
    book = SessionBook(clock=clock)
    token = _token(clock)
    seen: set[bytes] = set()
    for i in range(300):
        pending = book.begin(f"coap://lock{i}.example:5683", token)
        assert len(pending.nonce1) == NONCE1_SIZE
        assert pending.client_recipient_id not in seen
        seen.add(pending.client_recipient_id)
        request = pending.request()
        assert (request.access_token, request.nonce1, request.ace_client_recipientid) == (
            b"token-1",
            pending.nonce1,
            pending.client_recipient_id,
        )
    assert max(len(rid) for rid in seen) == 2  # 1..300 fit in two bytes


def test_recipient_ids_are_not_reused_after_a_session_ends() -> None:
    clock = FakeClock()
    book = SessionBook(clock=clock)
    token = _token(clock)
    first = book.complete(
        book.begin("coap://a:5683", token), AuthzInfoResponse(nonce2=b"n" * 8, ace_server_recipientid=b"\x00")
    )
    book.drop("coap://a:5683")
    second = book.begin("coap://a:5683", token)
    assert second.client_recipient_id != first.client_recipient_id


def test_complete_derives_the_rfc9203_client_context() -> None:
    clock = FakeClock()
    book = SessionBook(clock=clock, random_bytes=_counter_bytes())  # type: ignore[arg-type]
    token = _token(clock)
    pending = book.begin("coap://lock.example:5683", token)
    answer = AuthzInfoResponse(nonce2=bytes.fromhex("25a8991cd700ac01"), ace_server_recipientid=b"\x00\x00")
    session = book.complete(pending, answer)
    expected = context_parameters(
        token.material,
        nonce1=pending.nonce1,
        nonce2=answer.nonce2,
        client_recipient_id=pending.client_recipient_id,
        server_recipient_id=b"\x00\x00",
        role=Role.CLIENT,
    )
    assert session.params == expected
    # RFC 9203 §4.3: the client sends with ID2 and receives with ID1.
    assert (session.params.sender_id, session.params.recipient_id) == (b"\x00\x00", pending.client_recipient_id)
    assert book.get("coap://lock.example:5683") is session
    assert not session.confirmed


def test_equal_recipient_ids_refused_rfc9203_4_2() -> None:
    clock = FakeClock()
    book = SessionBook(clock=clock)
    pending = book.begin("coap://lock.example:5683", _token(clock))
    with pytest.raises(ValueError, match="9203 §4.2"):
        book.complete(pending, AuthzInfoResponse(nonce2=b"n" * 8, ace_server_recipientid=pending.client_recipient_id))
    assert book.get("coap://lock.example:5683") is None


def test_interop_hook_omits_the_absent_salt_item() -> None:
    clock = FakeClock()
    answer = AuthzInfoResponse(nonce2=b"N" * 8, ace_server_recipientid=b"\x00")
    ours = SessionBook(clock=clock, random_bytes=lambda n: b"\x11" * n)
    other = SessionBook(clock=clock, random_bytes=lambda n: b"\x11" * n, omit_absent_salt=True)
    a = ours.complete(ours.begin("coap://x:5683", _token(clock)), answer)
    b = other.complete(other.begin("coap://x:5683", _token(clock)), answer)
    assert a.params.master_salt == cbor.bstr(b"") + cbor.bstr(b"\x11" * 8) + cbor.bstr(b"N" * 8)
    assert b.params.master_salt == cbor.bstr(b"\x11" * 8) + cbor.bstr(b"N" * 8)
    assert a.params.sender_key() != b.params.sender_key()
    # With a salt in the token, the hook changes nothing.
    c = other.complete(other.begin("coap://y:5683", _token(clock, salt=b"s")), answer)
    assert c.params.master_salt.startswith(cbor.bstr(b"s"))


def test_drop_only_the_given_session() -> None:
    clock = FakeClock()
    book = SessionBook(clock=clock)
    answer = AuthzInfoResponse(nonce2=b"n" * 8, ace_server_recipientid=b"\x00")
    old = book.complete(book.begin("coap://a:5683", _token(clock)), answer)
    new = book.complete(book.begin("coap://a:5683", _token(clock)), answer)
    assert book.drop("coap://a:5683", old) is None
    assert book.drop("coap://a:5683", new) is new
    assert book.origins() == []


@pytest.mark.parametrize(
    ("uri", "origin"),
    [
        ("coap://Lock.Example/lock?x=1", "coap://lock.example:5683"),
        ("coap://127.0.0.1:5690/a/b", "coap://127.0.0.1:5690"),
        ("coap://[::1]/", "coap://[::1]:5683"),
    ],
)
def test_origin_of(uri: str, origin: str) -> None:
    assert origin_of(uri) == origin


@pytest.mark.parametrize("uri", ["http://lock.example/lock", "coaps://lock.example/", "/lock", "coap:///lock"])
def test_origin_of_rejects_other_uris(uri: str) -> None:
    with pytest.raises(ValueError):
        origin_of(uri)


def test_session_doctests() -> None:
    import doctest

    import client_sdk.session

    result = doctest.testmod(client_sdk.session)
    assert result.attempted > 0 and result.failed == 0
