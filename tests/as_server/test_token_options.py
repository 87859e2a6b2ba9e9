"""Per-resource-server token options of the token endpoint: compact claims (no ``iat``; no ``ace_profile`` for an RS
with one profile), full claims, and ``exi`` tokens for resource servers without a clock (RFC 9200 §5.10.3) -- their
``cti`` layout checked against the resource-server library that parses it, their sequence numbers, and their
introspection (RFC 9200 §5.9.2)."""

from __future__ import annotations

import threading
from concurrent import futures

import pytest

from ace_core import cose, cwt
from ace_core.messages import ACE_PROFILE_REQUESTED, AuthzInfoRequest, AuthzInfoResponse
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile, ConfirmationMethod, ContentFormat
from ace_core.status import Status
from as_server.endpoints.token import exi_cti
from as_server.sealing import hash_secret
from as_server.storage.base import Storage
from as_server.storage.memory import MemoryStorage
from as_server.tokens import token_hash
from resource_server.authz_info import AuthzInfo, AuthzInfoResult
from resource_server.config import RsConfig
from resource_server.errors import ExiSequenceExpired
from resource_server.token_store import MAX_SEQUENCE_BYTES, TokenStore, parse_exi_cti
from tests.as_server.fixtures_endpoints import (
    ISSUER,
    LOCK_SHARED_KEY,
    NOW,
    RS_INTROSPECTION_SECRET,
    World,
    aif,
    open_token,
)

#: The audience used here: OSCORE only (one profile), AES-CCM Encrypt0 under LOCK_SHARED_KEY.
LOCK = "lock-oscore-only"
#: Its tokens' lifetime: the policy's max_lifetime for phone-app at "lock-*".
LIFETIME = 1800
#: exi_upload_window in these tests (not the default, to show that the setting is what counts).
WINDOW = 600
#: Bound on waiting for the threads of the concurrency tests (seconds); reached only when a test fails.
WAIT = 10.0
KID = int(ConfirmationMethod.KID)


def world(*, storage: Storage | None = None, **rs_options: object) -> World:
    overrides = {LOCK: {"introspection_secret_hash": hash_secret(RS_INTROSPECTION_SECRET), **rs_options}}
    return World.create(rs_overrides=overrides, settings={"exi_upload_window": WINDOW}, storage=storage)


def issue(w: World, **fields: object) -> bytes:
    return bytes(w.request_token(audience=LOCK, scope=aif("/lock:PUT"), **fields).access_token)


def claims_of(token: bytes, *, clock: bool = True) -> cwt.Claims:
    return open_token(token, audience=LOCK, now=NOW if clock else None)  # type: ignore[arg-type]


# --- compact and full claims ----------------------------------------------------------------------------------


def test_compact_claims_are_the_default() -> None:
    """No ``iat`` (the record keeps it) and no ``ace_profile`` for an RS with one profile (RFC 9200 §5.8.4.3)."""
    w = world()
    rs = w.storage.get_resource_server(LOCK)
    assert rs is not None and rs.compact_claims and rs.has_clock and rs.profiles == {AceProfile.COAP_OSCORE}
    token = issue(w)
    claims = claims_of(token)
    assert claims.iat is None and claims.ace_profile is None
    assert claims.exp == NOW + LIFETIME and claims.exi is None
    assert claims.iss == ISSUER and claims.aud == LOCK and claims.cti is not None and len(claims.cti) == 8
    record = w.storage.get_by_hash(token_hash(token))
    assert record is not None and (record.iat, record.exp, record.exi) == (NOW, NOW + LIFETIME, None)
    assert record.profile == AceProfile.COAP_OSCORE


def test_compact_claims_keep_ace_profile_when_the_rs_has_several() -> None:
    w = world()
    claims = open_token(w.request_token(audience="lock-aif", scope=aif("/lock:GET")).access_token)
    assert claims.iat is None
    assert claims.ace_profile == AceProfile.COAP_OSCORE  # lock-aif speaks coap_oscore and coap_dtls


def test_the_response_carries_ace_profile_when_asked_whatever_the_token_holds() -> None:
    """RFC 9200 §5.8.4.3: an empty ``ace_profile`` in the request makes it mandatory in the response."""
    w = world()
    response = w.request_token(audience=LOCK, scope=aif("/lock:PUT"), ace_profile=ACE_PROFILE_REQUESTED)
    assert response.ace_profile == AceProfile.COAP_OSCORE
    assert claims_of(response.access_token).ace_profile is None
    assert w.request_token(audience=LOCK, scope=aif("/lock:PUT")).ace_profile is None  # not asked: not sent


def test_full_claims_put_iat_and_ace_profile_in_the_token() -> None:
    w = world(compact_claims=False)
    token = issue(w)
    claims = claims_of(token)
    assert claims.iat == NOW and claims.ace_profile == AceProfile.COAP_OSCORE and claims.exp == NOW + LIFETIME
    compact = issue(world())
    # iat: key 6 + a 4-byte uint (5 bytes); ace_profile: key 38 (2 bytes) + 1 byte.
    assert len(token) - len(compact) == 6 + 3


# --- exi tokens (RFC 9200 §5.10.3) ----------------------------------------------------------------------------


def test_exi_cti_layout_is_what_the_resource_server_parses() -> None:
    for number in (1, 7, 255, 256, 65_535, 65_536, 2**64 - 1):
        cti = exi_cti("front-door", number)
        length = (number.bit_length() + 7) // 8
        assert cti == b"front-door" + number.to_bytes(length, "big")  # as few bytes as the number needs
        assert parse_exi_cti(cti, ["front-door"]) == ("front-door", number)
    assert len(exi_cti("front-door", 2**64 - 1)) == len(b"front-door") + MAX_SEQUENCE_BYTES
    assert parse_exi_cti(exi_cti("tür", 3), ["tür"]) == ("tür", 3)  # UTF-8
    for bad in (0, -1, 2**64):
        with pytest.raises(ValueError):
            exi_cti("front-door", bad)


def test_an_rs_without_a_clock_gets_exi_and_a_numbered_cti() -> None:
    w = world(has_clock=False)
    first, second = issue(w), issue(w)
    for number, token in enumerate((first, second), start=1):
        claims = claims_of(token, clock=False)
        assert claims.exp is None and claims.exi == LIFETIME
        assert claims.cti == LOCK.encode() + bytes([number])
        assert claims.iat is None and claims.ace_profile is None  # compact claims apply as well
        record = w.storage.get_by_cti(claims.cti)
        assert record is not None and record.token_hash == token_hash(token)
        assert (record.iat, record.exi, record.exp) == (NOW, LIFETIME, NOW + LIFETIME + WINDOW)
    response = w.request_token(audience=LOCK, scope=aif("/lock:PUT"))
    assert response.expires_in == LIFETIME  # RFC 9200 §5.10.4: how the client learns the lifetime
    assert cwt.verify(response.access_token, cose.KeySet([LOCK_SHARED_KEY]), now=None, audience=LOCK).exi == LIFETIME


def test_exi_with_full_claims() -> None:
    claims = claims_of(issue(world(has_clock=False, compact_claims=False)), clock=False)
    assert (claims.iat, claims.ace_profile, claims.exp, claims.exi) == (NOW, AceProfile.COAP_OSCORE, None, LIFETIME)


def test_tokens_for_clocked_rs_draw_no_sequence_number() -> None:
    """The hot path: an ``exp`` token costs no counter increment (no extra database round trip)."""

    class NoCounter(MemoryStorage):
        def next_exi_sequence(self, audience: str) -> int:
            raise AssertionError("a clocked RS's token drew an exi sequence number")

    w = world(storage=NoCounter())
    issue(w)
    w.request_token(audience="lock-aif", scope=aif("/lock:GET"))


def test_update_of_access_rights_for_an_exi_rs() -> None:
    """RFC 9203 §3.1: ``req_cnf`` by kid re-binds the earlier token's key; the new token gets the next number."""
    w = world(has_clock=False)
    first = w.request_token(audience=LOCK, scope=aif("/lock:PUT"))
    osc_id = first.cnf[int(ConfirmationMethod.OSC)][0]
    update = w.request_token(audience=LOCK, scope=aif("/lock:GET,PUT"), req_cnf={KID: osc_id})
    assert update.cnf is None
    claims = claims_of(update.access_token, clock=False)
    assert claims.cnf == Confirmation(kid=osc_id) and claims.cti == LOCK.encode() + b"\x02"


def test_exi_numbers_are_distinct_and_gapless_under_concurrent_requests(storage: Storage) -> None:
    """Every backend: 4 threads x 10 token requests, each number once, 1..40."""
    w = world(storage=storage, has_clock=False)
    start = threading.Barrier(4)

    def run() -> list[int]:
        start.wait(WAIT)
        return [_number(issue(w)) for _ in range(10)]

    with futures.ThreadPoolExecutor(4) as pool:
        per_thread = [job.result(timeout=WAIT) for job in [pool.submit(run) for _ in range(4)]]
    for numbers in per_thread:
        assert numbers == sorted(numbers)  # each thread sees its numbers rise
    assert sorted(n for numbers in per_thread for n in numbers) == list(range(1, 41))


def _number(token: bytes) -> int:
    parsed = parse_exi_cti(claims_of(token, clock=False).cti, [LOCK])
    assert parsed is not None
    return parsed[1]


# --- round trip through the resource-server library -----------------------------------------------------------


def test_exi_tokens_from_the_as_are_accepted_by_a_clockless_lock() -> None:
    """Issue with the AS endpoint, upload to the real ``/authz-info`` handler (sans-IO) of a lock without a clock:
    accepted, sequence numbers parsed as issued, the lifetime counted from first receipt, and a token numbered
    below one that has expired refused (RFC 9200 §5.10.3)."""
    w = world(has_clock=False)
    config = RsConfig(
        audiences=(LOCK,), issuer=ISSUER, as_uri="coap://as.test/token", keys=cose.KeySet([LOCK_SHARED_KEY]),
        has_clock=False, rate_limit=100,
    )  # fmt: skip
    store = TokenStore(max_tokens=8)
    lock = AuthzInfo(config, store)
    late, first, second = issue(w), issue(w), issue(w)  # numbers 1, 2, 3

    def upload(token: bytes, monotonic: float, id1: bytes) -> AuthzInfoResult:
        payload = AuthzInfoRequest(access_token=token, nonce1=b"\x00" * 8, ace_client_recipientid=id1).to_cbor()
        return lock.handle(payload, ContentFormat.ACE_CBOR, now=None, monotonic=monotonic, peer="192.0.2.1")

    result = upload(first, 100.0, b"\x01")
    assert result.status == Status.CREATED and result.context is not None
    assert AuthzInfoResponse.from_cbor(result.payload).nonce2 is not None
    stored = result.token
    assert (stored.audience, stored.exi_sequence, stored.expires_after) == (LOCK, 2, 100.0 + LIFETIME)
    first_claims = claims_of(first, clock=False)
    assert first_claims.ace_profile is None and first_claims.iat is None  # compact claims: the lock needs neither
    assert upload(second, 200.0, b"\x02").token.exi_sequence == 3

    store.purge(now=None, monotonic=100.0 + LIFETIME)  # number 2 has expired at the lock
    assert store.highest_gone_sequence(LOCK) == 2
    with pytest.raises(ExiSequenceExpired):
        upload(late, 100.0 + LIFETIME, b"\x03")  # number 1: treated as expired
    assert upload(issue(w), 100.0 + LIFETIME, b"\x04").token.exi_sequence == 4


# --- introspection (RFC 9200 §5.9.2) --------------------------------------------------------------------------


def test_introspection_of_an_exi_token_answers_exi_until_the_as_bound() -> None:
    w = world(has_clock=False)
    token = issue(w)
    result = w.introspect(token, caller=LOCK)
    assert result.active and result.exi == LIFETIME and result.exp is None
    assert result.iat == NOW and result.cti == LOCK.encode() + b"\x01" and result.aud == LOCK
    assert result.ace_profile == AceProfile.COAP_OSCORE  # the record knows it even when the token omits it
    assert result.to_cbor_map()[40] == LIFETIME  # exi, Table 6
    w.clock.now = NOW + LIFETIME + WINDOW - 1
    assert w.introspect(token, caller=LOCK).active
    w.clock.now = NOW + LIFETIME + WINDOW  # issue + exi + exi_upload_window: no longer in use, whenever uploaded
    assert not w.introspect(token, caller=LOCK).active
    w.clock.now = NOW
    w.storage.revoke(LOCK.encode() + b"\x01")
    assert not w.introspect(token, caller=LOCK).active


def test_introspection_of_an_exp_token_answers_exp() -> None:
    w = world()
    result = w.introspect(issue(w), caller=LOCK)
    assert result.active and result.exp == NOW + LIFETIME and result.exi is None and result.iat == NOW
