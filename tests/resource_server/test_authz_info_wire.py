"""Every ``/authz-info`` answer over real UDP: RFC 9200 §5.10.1/§5.10.1.1 and RFC 9203 §4.1/§4.2.

Tokens are minted exactly as the AS mints OSCORE-profile tokens (COSE_Encrypt0 under the AS<->RS key, tag 61).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest
from aiocoap.numbers.codes import Code

from ace_core import cbor, cose
from ace_core.keys import CoseKey
from ace_core.messages import AuthzInfoRequest, AuthzInfoResponse
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile, CoseAlgorithm
from tests.resource_server.support import (
    T0,
    Client,
    Lock,
    material,
    mint,
    rs_config,
    shared_key,
)


def test_valid_token_is_created_with_nonce2_and_id2(lock: Lock, client: Client, key: CoseKey) -> None:
    osc = material()
    reply = client.upload(mint(key, osc=osc), nonce1=secrets.token_bytes(8), id1=b"\x00")
    assert reply.dotted == "2.01"
    assert reply.content_format == 19  # application/ace+cbor
    answer = AuthzInfoResponse.from_cbor(reply.payload)
    assert len(answer.nonce2) == 8
    assert answer.ace_server_recipientid != b"\x00"  # RFC 9203 §4.2: ID2 != ID1
    assert set(cbor.loads(reply.payload)) == {42, 44}
    assert lock.rs.store.get(osc.id or b"") is not None


def test_id2_differs_from_id1_and_is_unique_among_contexts(lock: Lock, client: Client, key: CoseKey) -> None:
    seen = set()
    for id1 in (b"\x00", b"\x01", b"\x02", b""):
        answer = AuthzInfoResponse.from_cbor(client.upload(mint(key, osc=material()), nonce1=b"n" * 8, id1=id1).payload)
        assert answer.ace_server_recipientid != id1
        seen.add(answer.ace_server_recipientid)
    assert len(seen) == 4


def test_bare_cwt_content_format_is_a_token_without_oscore_parameters(client: Client, key: CoseKey) -> None:
    # application/cwt (61): a bare token; the OSCORE profile then lacks nonce1/ID1 -> 4.00 (RFC 9203 §4.1).
    reply = client.post("/authz-info", mint(key, osc=material()), content_format=61)
    assert reply.dotted == "4.00"
    assert reply.payload == b""


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\x00garbage", id="not-cbor"),
        pytest.param(cbor.dumps({40: b"n" * 8, 43: b"\x01"}), id="map-without-token"),
        pytest.param(AuthzInfoRequest(access_token=b"\x01\x02", nonce1=b"n" * 8).to_cbor(), id="token-not-cose"),
        pytest.param(cbor.dumps([1, 2, 3]), id="array"),
    ],
)
def test_unparseable_payloads_are_4_00(client: Client, payload: bytes) -> None:
    reply = client.post("/authz-info", payload)
    assert reply.dotted == "4.00"
    assert reply.payload == b""  # only the status goes on the wire


def test_claims_that_are_not_a_map_are_4_00(client: Client, key: CoseKey) -> None:
    token = cose.encrypt0(cbor.dumps([1, 2]), key)  # decrypts fine; the claims cannot be obtained
    assert isinstance(token, bytes)
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.00"


@pytest.mark.parametrize(
    ("case", "upload"),
    [
        ("nonce1 missing", {"nonce1": None}),
        ("ID1 missing", {"id1": None}),
        ("ID1 too long for AES-CCM-16-64-128 (7 bytes max)", {"id1": b"12345678"}),
    ],
)
def test_missing_or_unusable_oscore_parameters_are_4_00(
    client: Client, key: CoseKey, case: str, upload: dict[str, bytes | None]
) -> None:
    arguments: dict[str, bytes | None] = {"nonce1": b"n" * 8, "id1": b"\x01", **upload}
    assert client.upload(mint(key, osc=material()), **arguments).dotted == "4.00", case


@pytest.mark.parametrize(
    "osc_extra",
    [
        pytest.param({"extra": {99: b"?"}}, id="unknown-member"),
        pytest.param({"alg": -65000}, id="unknown-alg"),
        pytest.param({"hkdf": 4}, id="unsupported-hkdf"),
        pytest.param({"version": 2}, id="unknown-version"),
    ],
)
def test_unrecognised_osc_parameters_are_4_00(client: Client, key: CoseKey, osc_extra: dict[str, object]) -> None:
    osc = material(**osc_extra)
    assert client.upload(mint(key, osc=osc), nonce1=b"n" * 8).dotted == "4.00"


@pytest.mark.parametrize(
    "scope",
    [
        pytest.param("read write", id="text-scope"),
        pytest.param(b"\x80", id="empty-aif"),
        pytest.param(b"\x81\x82", id="malformed-aif"),
        pytest.param(None, id="no-scope"),
        pytest.param(cbor.dumps([["/lock", 1 << 20]]), id="only-unknown-methods"),
    ],
)
def test_unrecognised_scope_is_4_00(client: Client, key: CoseKey, scope: str | bytes | None) -> None:
    token = _with_text_scope(key, scope) if isinstance(scope, str) else mint(key, osc=material(), scope=scope)
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.00"


def _with_text_scope(key: CoseKey, scope: str) -> bytes:
    from ace_core import cwt

    claims = cwt.Claims(
        iss="coap://as.test/token",
        aud="front-door",
        exp=T0 + 3600,
        cti=b"c" * 16,
        cnf=Confirmation(osc=material()),
        scope=scope,
        ace_profile=2,
    )
    return cwt.issue(claims, encrypt_key=key, cwt_tag=True)


@pytest.mark.parametrize(
    "cnf",
    [
        pytest.param(Confirmation(cose_key=CoseKey.generate(CoseAlgorithm.ES256).public()), id="raw-public-key"),
    ],
)
def test_token_for_another_pop_method_is_4_00(client: Client, key: CoseKey, cnf: Confirmation) -> None:
    assert client.upload(mint(key, cnf=cnf), nonce1=b"n" * 8).dotted == "4.00"


def test_token_for_the_dtls_profile_is_4_00(client: Client, key: CoseKey) -> None:
    token = mint(key, osc=material(), ace_profile=AceProfile.COAP_DTLS)
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.00"


def test_tampered_token_is_4_01(client: Client, key: CoseKey) -> None:
    token = bytearray(mint(key, osc=material()))
    token[-3] ^= 0x01  # inside the ciphertext/tag of the COSE_Encrypt0
    assert client.upload(bytes(token), nonce1=b"n" * 8).dotted == "4.01"


def test_token_under_an_unknown_key_is_4_01(client: Client) -> None:
    assert client.upload(mint(shared_key(), osc=material()), nonce1=b"n" * 8).dotted == "4.01"


def test_issuer_mismatch_is_4_01(client: Client, key: CoseKey) -> None:
    assert client.upload(mint(key, osc=material(), iss="coap://evil/token"), nonce1=b"n" * 8).dotted == "4.01"
    assert client.upload(mint(key, osc=material(), iss=None), nonce1=b"n" * 8).dotted == "4.01"


def test_expired_token_is_4_01(client: Client, key: CoseKey) -> None:
    token = mint(key, osc=material(), iat=T0 - 7200, exp=T0 - 1)  # the lock's clock stands at T0
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.01"


def test_token_without_any_expiry_is_4_01(client: Client, key: CoseKey) -> None:
    assert client.upload(mint(key, osc=material(), exp=None), nonce1=b"n" * 8).dotted == "4.01"


def test_kid_only_token_posted_without_oscore_is_4_01(client: Client, key: CoseKey) -> None:
    # cnf {3: kid} is an update of access rights (RFC 9203 §4.1); unprotected it proves nothing.
    token = mint(key, cnf=Confirmation(kid=b"abcdef"))
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.01"


def test_token_for_another_audience_is_4_03(client: Client, key: CoseKey) -> None:
    assert client.upload(mint(key, osc=material(), aud="back-door"), nonce1=b"n" * 8).dotted == "4.03"


def test_audience_is_checked_after_issuer_and_expiry(client: Client, key: CoseKey) -> None:
    # RFC 9200 §5.10.1.1 priority: iss (4.01) before aud (4.03).
    token = mint(key, osc=material(), aud="back-door", iss="coap://evil/token")
    assert client.upload(token, nonce1=b"n" * 8).dotted == "4.01"


def test_oversized_payload_is_4_13_before_parsing(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    lock = make_lock(rs_config(key, max_token_size=200))
    client = make_client(lock.base)
    reply = client.post("/authz-info", b"\xff" * 201)  # not even CBOR: refused for its size alone
    assert reply.dotted == "4.13"
    assert reply.size1 == 200  # RFC 7252 §5.10.9: the largest acceptable payload


def test_other_content_format_is_4_15(client: Client, key: CoseKey) -> None:
    reply = client.post("/authz-info", b'{"access_token": "x"}', content_format=50)
    assert reply.dotted == "4.15"


def test_too_many_submissions_are_4_29_with_max_age(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    lock = make_lock(rs_config(key, rate_limit=3, rate_window=60))
    client = make_client(lock.base)
    for _ in range(3):
        assert client.post("/authz-info", b"\xff").dotted == "4.00"
    reply = client.post("/authz-info", b"\xff")
    assert reply.dotted == "4.29"
    assert reply.max_age == 60  # RFC 8516 §2: seconds until the peer may retry
    lock.clock.advance(60)  # the window slides on the lock's monotonic clock
    assert client.upload(mint(key, osc=material()), nonce1=b"n" * 8).dotted == "2.01"


@pytest.mark.parametrize("code", [Code.GET, Code.PUT, Code.DELETE])
def test_other_methods_on_authz_info_are_4_05(client: Client, code: Code) -> None:
    assert client.post("/authz-info", b"", code=code, content_format=None).dotted == "4.05"


def test_authz_info_is_listed_with_rt_ace_ai(client: Client) -> None:
    reply = client.post("/.well-known/core", b"", code=Code.GET, content_format=None)
    assert reply.dotted == "2.05"
    links = reply.payload.decode()
    assert '</authz-info>;rt="ace.ai";ct="19 61"' in links
    assert "</lock>" in links


def test_authz_info_filtered_by_rt(client: Client) -> None:
    from aiocoap import Message

    message = Message(code=Code.GET, uri=client.base + "/.well-known/core?rt=ace.ai")
    reply = client.send(client.plain, message)
    assert reply.payload.decode() == '</authz-info>;rt="ace.ai";ct="19 61"'
