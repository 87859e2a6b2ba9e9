"""The token endpoint (RFC 9200 §5.8, RFC 9201 §3, RFC 9202 §3-§4, RFC 9203 §3): every PoP mode, the claims and
their protection, lifetimes, defaults, scope narrowing, and every error path with its class and status.

``invalid_grant`` (RFC 6749 §5.2) is never raised: the only grant offered, ``client_credentials``, carries no grant
of its own that could be invalid, expired or revoked; the client's credentials are checked as ``invalid_client``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from typing import Any

import pytest

from ace_core import cbor, cose, cwt
from ace_core.errors import (
    IncompatibleAceProfiles,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedPopKey,
)
from ace_core.keys import CoseKey
from ace_core.messages import ACE_PROFILE_REQUESTED, AccessInformation, TokenRequest
from ace_core.pop import Confirmation
from ace_core.registry import (
    AceProfile,
    ConfirmationMethod,
    CoseAlgorithm,
    CoseKeyType,
    CoseTag,
    ErrorCode,
    GrantType,
    OscoreInputMaterial,
    TokenType,
)
from ace_core.scope import AifScope, TextScope
from ace_core.status import Status
from as_server.auth import METHOD_BASIC, ClientCredentials
from as_server.endpoints.token import CTI_LENGTH, UNKNOWN_AUDIENCE, clocked_cti
from as_server.errors import TooManyRequests
from as_server.models import PopKeyType, TokenForm, TokenStatus
from as_server.tokens import token_hash
from policies.base import AccessRequest, Decision
from tests.as_server.fixtures_endpoints import (
    AS_SIGNING_KEY,
    CLIENT_ED25519,
    CLIENT_P256,
    ISSUER,
    LOCK_SHARED_KEY,
    MAC_SHARED_KEY,
    NESTED_SHARED_KEY,
    NOW,
    PEER,
    PHONE_SECRET,
    RPK_CLIENT_KEY,
    RPK_SECRET,
    RS_PUBLIC_KEY,
    SENSOR_PUBLIC_KEY,
    World,
    aif,
    open_token,
    rs_keys,
)

OSC = int(ConfirmationMethod.OSC)
COSE_KEY = int(ConfirmationMethod.COSE_KEY)
KID = int(ConfirmationMethod.KID)


@pytest.fixture
def world() -> World:
    return World.create()


def expect(error: type[Exception], status: Status, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``call`` and check it raises exactly ``error`` with ``status``; return the exception."""
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    assert type(info.value) is error
    assert info.value.status == status  # type: ignore[attr-defined]
    return info.value


def cnf_req(key: CoseKey) -> dict[int, Any]:
    """``req_cnf`` carrying ``key`` by value (RFC 9201 §3.1, Fig. 1)."""
    return Confirmation(cose_key=key).to_cbor_map()


def rs_cnf(key: CoseKey) -> dict[int, Any]:
    """The ``rs_cnf`` the AS returns for an RS whose public key is ``key`` (RFC 9201 §3.2)."""
    return Confirmation(cose_key=key.public()).to_cbor_map()


#: ``req_cnf`` with phone-app's registered public key.
PHONE_RPK = cnf_req(CLIENT_ED25519.public())


class FixedDecision:
    """A policy that always answers the same decision (for lifetime and policy-shape tests)."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.requests: list[AccessRequest] = []

    def decide(self, request: AccessRequest) -> Decision:
        self.requests.append(request)
        return self.decision


# --------------------------------------------------------------------------------------------------------------
# PoP mode (a): the AS generates the key
# --------------------------------------------------------------------------------------------------------------


def test_oscore_input_material_is_the_same_in_response_and_token(world: World) -> None:
    """RFC 9203 §3.2: ``id`` and ``ms`` in the response's ``cnf`` and, identically, in the token's ``cnf``."""
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    assert isinstance(response, AccessInformation) and response.cnf is not None
    material = response.cnf[OSC]
    assert set(material) == {OscoreInputMaterial.ID, OscoreInputMaterial.MS}
    assert len(material[OscoreInputMaterial.ID]) == 6 and len(material[OscoreInputMaterial.MS]) == 16

    claims = open_token(response.access_token)
    assert claims.cnf is not None and claims.cnf.to_cbor_map() == response.cnf
    assert claims.ace_profile == AceProfile.COAP_OSCORE
    assert response.ace_profile is None  # not asked for (RFC 9200 §5.8.4.3)
    assert response.token_type == TokenType.POP
    assert response.rs_cnf is None

    record = world.storage.get_by_hash(token_hash(response.access_token))
    assert record is not None
    assert record.pop_kid == material[OscoreInputMaterial.ID]
    assert cbor.loads(record.cnf) == response.cnf
    assert record.profile == AceProfile.COAP_OSCORE and record.client_id == "phone-app"


def test_each_token_gets_fresh_material(world: World) -> None:
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    second = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    assert first.cnf[OSC][OscoreInputMaterial.ID] != second.cnf[OSC][OscoreInputMaterial.ID]
    assert first.cnf[OSC][OscoreInputMaterial.MS] != second.cnf[OSC][OscoreInputMaterial.MS]
    assert open_token(first.access_token).cti != open_token(second.access_token).cti


def test_ctis_are_unique_and_sort_in_issue_order(world: World) -> None:
    """RFC 8392 §3.1.7 unique ids; ours start with the issue time and this endpoint's counter (clocked_cti), so
    the cti indexes grow at their end."""
    world.token._cti_counter = itertools.count(0xFFFD)  # noqa: SLF001 - a seam: the counter's start is random
    ctis = []
    for step in (0, 0, 1, 1, 60):  # same second twice, then later seconds; the counter wraps at 0x10000
        world.clock.now += step
        ctis.append(open_token(world.request_token(audience="lock-aif").access_token, now=int(world.clock.now)).cti)
    assert all(len(cti) == CTI_LENGTH for cti in ctis) and len(set(ctis)) == len(ctis)
    assert [cti[:4] for cti in ctis] == [int(NOW + d).to_bytes(4, "big") for d in (0, 0, 1, 2, 62)]
    assert [cti[4:6].hex() for cti in ctis] == ["fffd", "fffe", "ffff", "0000", "0001"]
    assert ctis == sorted(ctis)  # within a second by the counter, across seconds by the time
    for cti in ctis:
        record = world.storage.get_by_cti(cti)
        assert record is not None and record.cti == cti


def test_clocked_cti_layout() -> None:
    assert clocked_cti(1_800_000_000, 0x0203, b"\xab\xcd") == bytes.fromhex("6b49d200 0203 abcd")
    assert clocked_cti(0x1_0000_0001, 0x1_0002, b"\x00\x00") == bytes.fromhex("00000001 0002 0000")  # low bits
    with pytest.raises(ValueError, match="2 random bytes"):
        clocked_cti(1_800_000_000, 0, b"\x00")


def test_dtls_psk_is_a_symmetric_cose_key_in_response_and_token(world: World) -> None:
    """RFC 9202 §3.3.1: a kty 4 COSE_Key with a kid, in the encrypted token and in the response."""
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), ace_profile=AceProfile.COAP_DTLS)
    key = CoseKey.from_cbor_map(response.cnf[COSE_KEY])
    assert key.kty == CoseKeyType.SYMMETRIC and len(key.secret()) == 16 and key.kid is not None
    assert len(key.kid) == 8
    claims = open_token(response.access_token)
    assert claims.cnf == Confirmation(cose_key=key)
    assert claims.ace_profile == AceProfile.COAP_DTLS
    assert response.ace_profile == AceProfile.COAP_DTLS  # named: confirmed in the response
    record = world.storage.get_by_hash(token_hash(response.access_token))
    assert record is not None and record.pop_kid == key.kid


def test_profile_requested_with_null_is_mandatory_in_the_response(world: World) -> None:
    """RFC 9200 §5.8.4.3: an empty ``ace_profile`` asks the AS; the response MUST then carry it."""
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), ace_profile=ACE_PROFILE_REQUESTED)
    assert response.ace_profile == AceProfile.COAP_OSCORE  # first preference
    response = world.request_token(
        client_id="dtls-only",
        secret="dtls-only-secret",
        audience="lock-aif",
        scope=aif("/lock:GET"),
        ace_profile=ACE_PROFILE_REQUESTED,
    )
    assert response.ace_profile == AceProfile.COAP_DTLS  # the only shared profile
    assert COSE_KEY in response.cnf


@pytest.mark.parametrize(
    ("audience", "form", "keys"),
    [
        ("lock-aif", TokenForm.ENCRYPT0, (LOCK_SHARED_KEY,)),
        ("lock-nested", TokenForm.SIGN1_ENCRYPT0, (NESTED_SHARED_KEY, AS_SIGNING_KEY.public())),
    ],
)
def test_generated_keys_travel_in_encrypted_tokens(
    world: World, audience: str, form: TokenForm, keys: tuple[CoseKey, ...]
) -> None:
    response = world.request_token(audience=audience, scope=aif("/lock:GET"))
    verified = cwt.verify_token(response.access_token, rs_keys(*keys), now=NOW, audience=audience, issuer=ISSUER)
    tags = [layer.tag for layer in verified.layers]
    assert tags == ([CoseTag.ENCRYPT0] if form == TokenForm.ENCRYPT0 else [CoseTag.ENCRYPT0, CoseTag.SIGN1])
    assert verified.claims.cnf is not None and verified.claims.cnf.osc is not None


def test_token_is_tagged_61_with_empty_unprotected_header(world: World) -> None:
    """RFC 9770 §3: COSE tag inside CWT tag 61, unprotected map empty, so the token hash identifies it."""
    token = world.request_token(audience="lock-aif", scope=aif("/lock:GET")).access_token
    assert token[:3] == bytes([0xD8, CoseTag.CWT, 0xC0 + CoseTag.ENCRYPT0])
    assert cose.decode(token).unprotected == {}


def test_claims(world: World) -> None:
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT"), cnonce=b"\x01\x02\x03")
    claims = open_token(response.access_token)
    assert claims.iss == ISSUER and claims.aud == "lock-aif"
    assert claims.exp == NOW + response.expires_in and claims.exi is None
    assert claims.iat is None  # compact claims (the default): the record keeps iat
    assert claims.cti is not None and len(claims.cti) == 8
    assert claims.scope == aif("/lock:GET,PUT")  # AIF is a byte string claim
    assert claims.cnonce == b"\x01\x02\x03"  # RFC 9200 §5.8.4.4: copied into the token
    record = world.storage.get_by_cti(claims.cti)
    assert record is not None
    assert (record.iat, record.exp, record.scope, record.audience) == (NOW, claims.exp, claims.scope, "lock-aif")
    assert record.status == TokenStatus.ACTIVE and record.token_hash == token_hash(response.access_token)


# --------------------------------------------------------------------------------------------------------------
# PoP mode (b): the client's public key in req_cnf
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [CLIENT_ED25519, CLIENT_P256], ids=["Ed25519", "P-256"])
def test_asymmetric_req_cnf_binds_the_key_and_returns_rs_cnf(key: CoseKey) -> None:
    """RFC 9201 §3.2 / RFC 9202 §3.2.1: token ``cnf`` = client key, response ``rs_cnf`` = RS key, no ``cnf``."""
    world = World.create(client_overrides={"phone-app": {"public_key": key.public()}})
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=cnf_req(key.public()))
    assert response.cnf is None
    assert response.rs_cnf == rs_cnf(RS_PUBLIC_KEY)
    claims = open_token(response.access_token)
    assert claims.cnf is not None and claims.cnf.cose_key is not None
    assert claims.cnf.cose_key.thumbprint() == key.thumbprint()
    assert claims.cnf.cose_key.d is None
    assert claims.ace_profile == AceProfile.COAP_DTLS  # raw public keys: RFC 9202
    record = world.storage.get_by_hash(token_hash(response.access_token))
    assert record is not None and record.pop_kid == key.kid


def test_key_without_kid_gets_its_thumbprint_kid() -> None:
    key = replace(CLIENT_ED25519.public(), kid=None)
    world = World.create(client_overrides={"phone-app": {"public_key": key}})  # registered without a kid
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=cnf_req(key))
    claims = open_token(response.access_token)
    assert claims.cnf is not None and claims.cnf.cose_key is not None
    assert claims.cnf.cose_key.kid == key.thumbprint()[:8]
    record = world.storage.get_by_hash(token_hash(response.access_token))
    assert record is not None and record.pop_kid == key.thumbprint()[:8]


@pytest.mark.parametrize("key", [CLIENT_ED25519, CLIENT_P256], ids=["Ed25519", "P-256"])
def test_unregistered_key_in_req_cnf_is_invalid_request(key: CoseKey) -> None:
    """RFC 9202 §3.2.1: the AS MUST check that the key is the client's; a client without a registered key cannot
    bind one it merely names."""
    world = World.create(client_overrides={"phone-app": {"public_key": None}})
    error = expect(
        InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf=cnf_req(key.public()),
    )
    assert error.code == ErrorCode.INVALID_REQUEST and error.to_message().error == ErrorCode.INVALID_REQUEST
    assert error.description == "req_cnf is not the registered key of the client"
    assert world.storage.count() == 0


@pytest.mark.parametrize(
    "key",
    [
        CoseKey.generate(CoseAlgorithm.EDDSA).public(),
        CLIENT_P256.public(),  # a key type phone-app may use, but not its key
        replace(CoseKey.generate(CoseAlgorithm.EDDSA).public(), kid=CLIENT_ED25519.kid),  # the registered kid only
    ],
    ids=["other-Ed25519", "P-256", "same-kid"],
)
def test_key_other_than_the_registered_one_is_invalid_request(world: World, key: CoseKey) -> None:
    error = expect(
        InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf=cnf_req(key),
    )
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.description == "req_cnf is not the registered key of the client"
    assert world.storage.count() == 0
    # The registered key itself is still bound.
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    assert open_token(response.access_token).cnf == Confirmation(cose_key=CLIENT_ED25519.public())


def test_registered_key_must_be_the_one_presented(world: World) -> None:
    response = world.request_token(
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf=cnf_req(replace(RPK_CLIENT_KEY.public(), kid=None)),
    )
    claims = open_token(response.access_token)
    assert claims.cnf is not None and claims.cnf.cose_key == RPK_CLIENT_KEY.public()  # the registered key, its kid
    other = CoseKey.generate(CoseAlgorithm.EDDSA)
    expect(
        InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf=cnf_req(other.public()),
    )


def test_token_without_secret_may_be_signed_or_maced(world: World) -> None:
    """A token whose ``cnf`` holds only a public key needs no encryption (RFC 8747 §3.3)."""
    mac = world.request_token(audience="lock-mac", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    verified = cwt.verify_token(mac.access_token, rs_keys(MAC_SHARED_KEY), now=NOW, audience="lock-mac")
    assert [layer.tag for layer in verified.layers] == [CoseTag.MAC0]
    signed = world.request_token(audience="sensor-text", scope="read", req_cnf=PHONE_RPK)
    verified = cwt.verify_token(signed.access_token, rs_keys(AS_SIGNING_KEY.public()), now=NOW, audience="sensor-text")
    assert [layer.tag for layer in verified.layers] == [CoseTag.SIGN1]
    assert verified.claims.scope == "read"
    assert mac.rs_cnf == rs_cnf(RS_PUBLIC_KEY) and signed.rs_cnf == rs_cnf(SENSOR_PUBLIC_KEY)


@pytest.mark.parametrize(
    ("audience", "scope", "rs_key"),
    [
        ("lock-aif", aif("/lock:GET"), RS_PUBLIC_KEY),
        ("lock-mac", aif("/lock:GET"), RS_PUBLIC_KEY),
        ("sensor-text", "read", SENSOR_PUBLIC_KEY),
    ],
)
def test_rs_cnf_is_the_public_key_of_the_audience(world: World, audience: str, scope: Any, rs_key: CoseKey) -> None:
    """RFC 9202 §3.2.1: a raw-public-key response MUST carry ``rs_cnf``, the audience's registered public key."""
    response = world.request_token(audience=audience, scope=scope, req_cnf=PHONE_RPK)
    assert response.rs_cnf == rs_cnf(rs_key)
    confirmation = Confirmation.from_cbor_map(dict(response.rs_cnf))
    assert confirmation.cose_key is not None and confirmation.cose_key.thumbprint() == rs_key.thumbprint()


def test_rs_cnf_never_carries_a_private_part() -> None:
    """An RS registered with its full key pair still only has its public key returned."""
    world = World.create(rs_overrides={"lock-aif": {"public_key": RS_PUBLIC_KEY}})
    assert RS_PUBLIC_KEY.d is not None
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    assert response.rs_cnf == rs_cnf(RS_PUBLIC_KEY)
    confirmation = Confirmation.from_cbor_map(dict(response.rs_cnf))
    assert confirmation.cose_key is not None and confirmation.cose_key.d is None


# --------------------------------------------------------------------------------------------------------------
# PoP mode (c): req_cnf by kid (update of access rights)
# --------------------------------------------------------------------------------------------------------------


def test_oscore_rebinding_by_kid(world: World) -> None:
    """RFC 9203 §3.1: ``req_cnf: {3: id}`` -> token ``cnf`` = ``{3: id}``, no ``cnf`` in the response."""
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    material_id = first.cnf[OSC][OscoreInputMaterial.ID]
    update = world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT"), req_cnf={KID: material_id})
    assert update.cnf is None and update.rs_cnf is None
    claims = open_token(update.access_token)
    assert claims.cnf == Confirmation(kid=material_id)
    assert claims.ace_profile == AceProfile.COAP_OSCORE
    record = world.storage.get_by_hash(token_hash(update.access_token))
    assert record is not None and record.pop_kid == material_id and cbor.loads(record.cnf) == {KID: material_id}
    # A chain of updates keeps working: the newest token now names the key.
    again = world.request_token(audience="lock-aif", scope=aif("/battery:GET"), req_cnf={KID: material_id})
    assert open_token(again.access_token).cnf == Confirmation(kid=material_id)


def test_dtls_rebinding_by_kid(world: World) -> None:
    """RFC 9202 §4: the new token names the PSK by kid."""
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), ace_profile=AceProfile.COAP_DTLS)
    kid = first.cnf[COSE_KEY][2]
    update = world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT"), req_cnf={KID: kid})
    assert update.cnf is None
    claims = open_token(update.access_token)
    assert claims.cnf == Confirmation(kid=kid) and claims.ace_profile == AceProfile.COAP_DTLS


def test_rpk_rebinding_by_kid(world: World) -> None:
    world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    assert CLIENT_ED25519.kid is not None
    update = world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT"), req_cnf={KID: CLIENT_ED25519.kid})
    assert open_token(update.access_token).cnf == Confirmation(kid=CLIENT_ED25519.kid)
    assert update.rs_cnf is None and update.cnf is None


def test_kid_of_the_registered_key_binds_it_by_value(world: World) -> None:
    """No earlier token: the RS does not know the key yet, so the token carries it (RFC 9202 §3.2.1)."""
    assert RPK_CLIENT_KEY.kid is not None
    response = world.request_token(
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf={KID: RPK_CLIENT_KEY.kid},
    )
    claims = open_token(response.access_token)
    assert claims.cnf == Confirmation(cose_key=RPK_CLIENT_KEY.public())
    assert response.rs_cnf == rs_cnf(RS_PUBLIC_KEY)


@pytest.mark.parametrize("why", ["revoked", "expired", "other client", "other audience"])
def test_kid_of_a_dead_or_foreign_token_is_unknown(world: World, why: str) -> None:
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    material_id = first.cnf[OSC][OscoreInputMaterial.ID]
    kwargs: dict[str, Any] = {"audience": "lock-aif", "scope": aif("/lock:GET"), "req_cnf": {KID: material_id}}
    if why == "revoked":
        claims = open_token(first.access_token)
        assert claims.cti is not None and world.storage.revoke(claims.cti)
    elif why == "expired":
        world.clock.now = NOW + first.expires_in
    elif why == "other client":
        kwargs.update(client_id="dtls-only", secret="dtls-only-secret")
    else:
        kwargs.update(audience="lock-oscore-only")
    error = expect(
        UnsupportedPopKey if why == "other client" else InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        **kwargs,
    )
    assert error.description == "unknown kid"


def test_unknown_kid_is_invalid_request_for_oscore(world: World) -> None:
    """RFC 9203 §3.1."""
    expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf={KID: b"\x99"})


def test_unknown_kid_is_unsupported_pop_key_for_dtls(world: World) -> None:
    """RFC 9202 §4."""
    expect(
        UnsupportedPopKey,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-aif",
        req_cnf={KID: b"\x99"},
        ace_profile=AceProfile.COAP_DTLS,
    )


def test_rebinding_rechecks_the_key_type(world: World) -> None:
    world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    client = world.storage.get_client("phone-app")
    assert client is not None
    world.storage.update_client(replace(client, pop_key_types=frozenset({PopKeyType.SYMMETRIC})))
    expect(
        UnsupportedPopKey,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-aif",
        req_cnf={KID: CLIENT_ED25519.kid},
    )


def test_rebinding_keeps_the_profile_of_the_key(world: World) -> None:
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    material_id = first.cnf[OSC][OscoreInputMaterial.ID]
    expect(
        IncompatibleAceProfiles,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-aif",
        req_cnf={KID: material_id},
        ace_profile=AceProfile.COAP_DTLS,
    )


# --------------------------------------------------------------------------------------------------------------
# Lifetime, defaults, scope
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_lifetime", "rs_max", "decision", "expected"),
    [
        (3600, 7200, Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t"), 3600),  # AS default
        (3600, 900, Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t"), 900),  # RS maximum
        (3600, 7200, Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t", max_lifetime=120), 120),
        (3600, 7200, Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t", not_after=NOW + 45), 45),
        (60, 7200, Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t", max_lifetime=120), 60),
    ],
    ids=["settings", "rs", "policy-max", "policy-not-after", "settings-below-policy"],
)
def test_lifetime_is_the_minimum(settings_lifetime: int, rs_max: int, decision: Decision, expected: int) -> None:
    world = World.create(
        policy=FixedDecision(decision),
        settings={"token_lifetime": settings_lifetime},
        rs_overrides={"lock-aif": {"max_lifetime": rs_max}},
    )
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    assert response.expires_in == expected
    claims = open_token(response.access_token)
    assert claims.exp is not None and claims.exp - NOW == expected


def test_allow_list_max_lifetime_applies(world: World) -> None:
    """The lock policy rule says 1800 s; AS default 3600, RS 7200."""
    assert world.request_token(audience="lock-aif", scope=aif("/lock:GET")).expires_in == 1800
    # sensor-text: rule without max_lifetime, RS maximum 600.
    assert world.request_token(audience="sensor-text", scope="read", req_cnf=PHONE_RPK).expires_in == 600


def test_policy_sees_the_request_and_now() -> None:
    policy = FixedDecision(Decision(granted=AifScope.parse_spec("/lock:GET"), reason="t"))
    world = World.create(policy=policy)
    world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT"))
    assert policy.requests == [
        AccessRequest(client_id="phone-app", audience="lock-aif", scope=AifScope.parse_spec("/lock:GET,PUT"), now=NOW)
    ]


def test_default_audience_and_scope(world: World) -> None:
    """RFC 9200 §5.8.1 / RFC 6749 §3.3: the client's defaults; the scope is then reported (RFC 6749 §5.1)."""
    response = world.request_token()
    claims = open_token(response.access_token)
    assert claims.aud == "lock-aif" and claims.scope == aif("/lock:GET")
    assert response.scope == aif("/lock:GET")  # CBOR form: the request had no scope to mirror


def test_scope_unchanged_is_not_repeated(world: World) -> None:
    assert world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT")).scope is None
    assert world.request_token(audience="sensor-text", scope="read", req_cnf=PHONE_RPK).scope is None


def test_narrowed_scope_is_reported_in_the_request_form(world: World) -> None:
    """RFC 6749 §5.1: the granted scope when it differs; bytes stay bytes, AIF JSON text stays text."""
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET,DELETE /door:GET"))
    assert response.scope == aif("/lock:GET")
    assert open_token(response.access_token).scope == aif("/lock:GET")

    response = world.request_token(audience="lock-aif", scope='[["/lock",9],["/battery",1]]')  # GET|DELETE, GET
    assert response.scope == '[["/lock",1],["/battery",1]]'
    assert open_token(response.access_token).scope == aif("/lock:GET /battery:GET")

    response = world.request_token(audience="sensor-text", scope="read admin", req_cnf=PHONE_RPK)
    assert response.scope == "read"


def test_resources_of_the_rs_narrow_the_grant(world: World) -> None:
    """The policy allows /config:GET at lock-*, but lock-aif does not serve /config."""
    response = world.request_token(audience="lock-aif", scope=aif("/config:GET /lock:GET"))
    assert response.scope == aif("/lock:GET")
    expect(InvalidScope, Status.BAD_REQUEST, world.request_token, audience="lock-aif", scope=aif("/config:GET"))


@pytest.mark.parametrize("resources", [aif("/lock:GET"), '[["/lock",1]]', "/lock:GET"], ids=["cbor", "json", "spec"])
def test_resources_forms(resources: bytes | str) -> None:
    world = World.create(rs_overrides={"lock-aif": {"resources": resources}})
    assert world.request_token(audience="lock-aif", scope=aif("/lock:GET,PUT")).scope == aif("/lock:GET")


# --------------------------------------------------------------------------------------------------------------
# Errors: client authentication and rate limit
# --------------------------------------------------------------------------------------------------------------


def test_payload_credentials(world: World) -> None:
    """RFC 9200 §5.8.1: ``client_id`` + ``client_secret`` in the request itself."""
    request = TokenRequest(client_id="phone-app", client_secret=PHONE_SECRET.encode(), audience="lock-aif")
    assert world.token.handle(request, credentials=None, peer=PEER).access_token


def test_two_authentication_methods_are_invalid_request(world: World) -> None:
    """RFC 6749 §2.3: at most one method per request."""
    request = TokenRequest(client_id="phone-app", client_secret=PHONE_SECRET.encode(), audience="lock-aif")
    creds = ClientCredentials("phone-app", PHONE_SECRET.encode(), METHOD_BASIC)
    expect(InvalidRequest, Status.BAD_REQUEST, world.token.handle, request, credentials=creds, peer=PEER)
    mismatch = TokenRequest(client_id="rpk-client", audience="lock-aif")
    expect(InvalidRequest, Status.BAD_REQUEST, world.token.handle, mismatch, credentials=creds, peer=PEER)
    secret_only = TokenRequest(client_secret=PHONE_SECRET.encode(), audience="lock-aif")
    expect(InvalidRequest, Status.BAD_REQUEST, world.token.handle, secret_only, credentials=None, peer=PEER)


def test_matching_client_id_next_to_basic_is_fine(world: World) -> None:
    assert world.request_token(client_id="phone-app", request=TokenRequest(client_id="phone-app")).access_token


@pytest.mark.parametrize(
    ("client_id", "secret"),
    [("phone-app", "wrong"), ("nobody", PHONE_SECRET), ("switched-off", "switched-off-secret")],
    ids=["wrong-secret", "unknown-client", "disabled-client"],
)
def test_invalid_client_is_401(world: World, client_id: str, secret: str) -> None:
    error = expect(InvalidClient, Status.UNAUTHORIZED, world.request_token, client_id=client_id, secret=secret)
    assert error.code == ErrorCode.INVALID_CLIENT
    assert error.description == "client authentication failed"  # the same for all three: no oracle


def test_no_credentials_is_invalid_client(world: World) -> None:
    expect(
        InvalidClient,
        Status.UNAUTHORIZED,
        world.token.handle,
        TokenRequest(audience="lock-aif"),
        credentials=None,
        peer=PEER,
    )
    assert len(world.limiter) == 0  # not counted: HTTP clients may retry after the challenge


def test_rate_limit_per_client_id(world: World) -> None:
    limit = world.settings.auth_failure_limit
    for i in range(limit):
        expect(InvalidClient, Status.UNAUTHORIZED, world.request_token, secret="wrong", peer=f"198.51.100.{i}")
    error = expect(TooManyRequests, Status.TOO_MANY_REQUESTS, world.request_token, peer="203.0.113.1")
    assert 1 <= error.retry_after <= world.settings.auth_failure_window  # even the right secret is refused
    world.clock.now = NOW + world.settings.auth_failure_window
    assert world.request_token(audience="lock-aif").access_token  # the window has passed


def test_rate_limit_per_peer(world: World) -> None:
    for i in range(world.settings.auth_failure_limit):
        expect(InvalidClient, Status.UNAUTHORIZED, world.request_token, client_id=f"guess-{i}", secret="x")
    expect(TooManyRequests, Status.TOO_MANY_REQUESTS, world.request_token)
    assert world.request_token(peer="192.0.2.99").access_token  # another source is not affected


def test_rate_limit_checked_before_the_secret(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(world.settings.auth_failure_limit):
        expect(InvalidClient, Status.UNAUTHORIZED, world.request_token, secret="wrong")
    calls: list[object] = []

    def spy(*args: object) -> bool:
        calls.append(args)
        return True

    monkeypatch.setattr("as_server.endpoints.token.check_secret", spy)
    expect(TooManyRequests, Status.TOO_MANY_REQUESTS, world.request_token)
    assert calls == []


# --------------------------------------------------------------------------------------------------------------
# Errors: grant type, audience, scope
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("grant", [GrantType.PASSWORD, GrantType.AUTHORIZATION_CODE, GrantType.REFRESH_TOKEN, 99])
def test_unsupported_grant_types(world: World, grant: int) -> None:
    error = expect(UnsupportedGrantType, Status.BAD_REQUEST, world.request_token, grant_type=grant)
    assert error.code == ErrorCode.UNSUPPORTED_GRANT_TYPE
    # The detail (logs, audit) spells the grant as on the wire, not as a Python enum.
    assert error.detail == f"grant_type {grant.name.lower() if isinstance(grant, GrantType) else grant}"


def test_explicit_client_credentials_grant(world: World) -> None:
    assert world.request_token(grant_type=GrantType.CLIENT_CREDENTIALS).access_token


def test_client_without_the_grant_is_unauthorized_client(world: World) -> None:
    expect(
        UnauthorizedClient, Status.BAD_REQUEST, world.request_token, client_id="code-only", secret="code-only-secret"
    )


@pytest.mark.parametrize(
    ("client_id", "secret", "audience"),
    [
        ("no-defaults", "no-defaults-secret", None),  # no audience, no default
        ("phone-app", PHONE_SECRET, ""),  # empty audience
        ("phone-app", PHONE_SECRET, "nowhere"),  # not registered
        ("phone-app", PHONE_SECRET, "lock-off"),  # disabled
        ("rpk-client", RPK_SECRET, "sensor-text"),  # registered, but not for this client
    ],
    ids=["missing", "empty", "unknown", "disabled", "not-allowed"],
)
def test_audience_errors_are_invalid_request(world: World, client_id: str, secret: str, audience: str | None) -> None:
    error = expect(
        InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        client_id=client_id,
        secret=secret,
        audience=audience,
        scope=aif("/lock:GET"),
    )
    if audience:
        assert error.description == UNKNOWN_AUDIENCE  # one answer: no probing of what exists


@pytest.mark.parametrize(
    ("audience", "scope"),
    [
        ("lock-aif", b"\xff\x00"),  # not CBOR
        ("lock-aif", cbor.dumps({"lock": 1})),  # CBOR, not AIF
        ("lock-aif", "read"),  # text where AIF JSON text is expected
        ("lock-aif", aif("")),  # empty AIF
        ("sensor-text", aif("/lock:GET")),  # bytes for a text audience
        ("sensor-text", "read  write"),  # malformed text scope (RFC 6749 §3.3)
    ],
    ids=["not-cbor", "not-aif", "text-for-aif", "empty", "bytes-for-text", "double-space"],
)
def test_malformed_or_mismatched_scope_is_invalid_scope(world: World, audience: str, scope: str | bytes) -> None:
    expect(InvalidScope, Status.BAD_REQUEST, world.request_token, audience=audience, scope=scope)


def test_missing_scope_without_default_is_invalid_scope(world: World) -> None:
    """RFC 6749 §3.3: no scope and no default -> fail "indicating an invalid scope"."""
    expect(
        InvalidScope,
        Status.BAD_REQUEST,
        world.request_token,
        client_id="no-defaults",
        secret="no-defaults-secret",
        audience="lock-aif",
    )


def test_policy_refusals_are_invalid_scope(world: World) -> None:
    expect(
        InvalidScope, Status.BAD_REQUEST, world.request_token, audience="lock-aif", scope=aif("/door:PUT")
    )  # no overlap
    expect(
        InvalidScope,
        Status.BAD_REQUEST,
        world.request_token,
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-oscore-only",
        scope=aif("/lock:GET"),
    )  # no rule


@pytest.mark.parametrize(
    "decision",
    [
        Decision(granted=None, reason="no"),
        Decision(granted=AifScope(), reason="empty"),
        Decision(granted=TextScope.parse("read"), reason="other kind"),
        Decision(granted=AifScope.parse_spec("/lock:GET"), reason="window closed", not_after=NOW),
    ],
    ids=["none", "empty", "other-kind", "not-after-now"],
)
def test_policy_decisions_that_grant_nothing(decision: Decision) -> None:
    world = World.create(policy=FixedDecision(decision))
    expect(InvalidScope, Status.BAD_REQUEST, world.request_token, audience="lock-aif", scope=aif("/lock:GET"))
    assert world.storage.count() == 0


# --------------------------------------------------------------------------------------------------------------
# Errors: PoP keys and profiles
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "req_cnf",
    [
        {COSE_KEY: "not a key"},
        {COSE_KEY: {1: 2, -1: 1, -2: b"\x00" * 32, -3: b"\x00" * 32}},  # not on the curve
        {KID: "text kid"},
        {},
    ],
    ids=["not-a-map", "off-curve", "text-kid", "empty"],
)
def test_malformed_req_cnf_is_invalid_request(world: World, req_cnf: dict[int, Any]) -> None:
    expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf=req_cnf)


def test_symmetric_key_in_req_cnf_is_refused(world: World) -> None:
    """RFC 9201 §3.1: the AS SHOULD reject a symmetric key value (chosen: ``invalid_request``)."""
    key = CoseKey.symmetric(bytes(16), kid=b"k")
    expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf=cnf_req(key))


def test_private_key_in_req_cnf_is_refused(world: World) -> None:
    expect(
        InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf=cnf_req(CLIENT_ED25519)
    )


def test_osc_or_encrypted_key_in_req_cnf_is_refused(world: World) -> None:
    expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf={OSC: {0: b"\x01"}})


def test_unsupported_curve_is_unsupported_pop_key(world: World) -> None:
    p384 = CoseKey.generate(CoseAlgorithm.ES384).public()
    expect(UnsupportedPopKey, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf=cnf_req(p384))


def test_key_with_a_foreign_algorithm_is_unsupported_pop_key(world: World) -> None:
    key = replace(CLIENT_P256.public(), alg=CoseAlgorithm.ES384)
    expect(UnsupportedPopKey, Status.BAD_REQUEST, world.request_token, audience="lock-aif", req_cnf=cnf_req(key))


def test_key_type_not_allowed_for_client_is_unsupported_pop_key(world: World) -> None:
    expect(
        UnsupportedPopKey,
        Status.BAD_REQUEST,
        world.request_token,
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-aif",
        scope=aif("/lock:GET"),
        req_cnf=cnf_req(CLIENT_P256.public()),
    )


def test_rpk_for_an_audience_without_dtls_is_unsupported_pop_key() -> None:
    # The RS has a public key, so the missing coap_dtls profile is what refuses the request.
    world = World.create(rs_overrides={"lock-oscore-only": {"public_key": RS_PUBLIC_KEY.public()}})
    error = expect(
        UnsupportedPopKey,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-oscore-only",
        scope=aif("/lock:GET"),
        req_cnf=PHONE_RPK,
    )
    assert "profiles" in str(error)  # the logged detail: refused by the profile check
    assert world.storage.count() == 0


def test_rpk_for_an_audience_without_public_key_is_unsupported_pop_key(world: World) -> None:
    """RFC 9202 §3.2.1: the response MUST carry ``rs_cnf``; lock-nested speaks coap_dtls but has no public key."""
    error = expect(
        UnsupportedPopKey,
        Status.BAD_REQUEST,
        world.request_token,
        audience="lock-nested",
        scope=aif("/lock:GET"),
        req_cnf=PHONE_RPK,
    )
    assert error.code == ErrorCode.UNSUPPORTED_POP_KEY
    assert error.description == "audience does not accept raw public keys"
    assert "lock-nested has no public key" in str(error)
    assert world.storage.count() == 0
    # The same request succeeds once the RS has a public key to return.
    keyed = World.create(rs_overrides={"lock-nested": {"public_key": RS_PUBLIC_KEY.public()}})
    response = keyed.request_token(audience="lock-nested", scope=aif("/lock:GET"), req_cnf=PHONE_RPK)
    assert response.rs_cnf == rs_cnf(RS_PUBLIC_KEY)


def test_client_that_may_not_use_generated_keys_must_send_req_cnf(world: World) -> None:
    expect(
        InvalidRequest,
        Status.BAD_REQUEST,
        world.request_token,
        client_id="rpk-client",
        secret=RPK_SECRET,
        audience="lock-aif",
        scope=aif("/lock:GET"),
    )


@pytest.mark.parametrize(
    ("client_id", "secret", "audience", "ace_profile"),
    [
        ("dtls-only", "dtls-only-secret", "lock-oscore-only", None),  # nothing shared
        ("phone-app", PHONE_SECRET, "lock-oscore-only", AceProfile.COAP_DTLS),  # named, not supported by the RS
        ("dtls-only", "dtls-only-secret", "lock-aif", AceProfile.COAP_OSCORE),  # named, not allowed for the client
        ("phone-app", PHONE_SECRET, "lock-aif", 99),  # unknown profile
    ],
    ids=["none-shared", "rs-lacks-named", "client-lacks-named", "unknown"],
)
def test_incompatible_ace_profiles(
    world: World, client_id: str, secret: str, audience: str, ace_profile: int | None
) -> None:
    error = expect(
        IncompatibleAceProfiles,
        Status.BAD_REQUEST,
        world.request_token,
        client_id=client_id,
        secret=secret,
        audience=audience,
        scope=aif("/lock:GET"),
        ace_profile=ace_profile,
    )
    assert error.code == ErrorCode.INCOMPATIBLE_ACE_PROFILES


# --------------------------------------------------------------------------------------------------------------
# Errors: resource-server configuration (refused with invalid_request, logged)
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("audience", "overrides", "signing_key"),
    [
        ("lock-aif", {"token_form": TokenForm.SIGN1}, True),  # a generated secret in a signed-only token
        ("lock-aif", {"token_form": TokenForm.MAC0}, True),
        ("lock-aif", {"shared_key": None}, True),
        ("lock-aif", {"shared_key": CoseKey.symmetric(bytes(20))}, True),  # no AEAD for a 20-byte key
        ("lock-aif", {"resources": b"\xff"}, True),
        ("lock-nested", {}, False),  # no AS signing key
    ],
    ids=["sign1", "mac0", "no-shared-key", "odd-key", "bad-resources", "no-signing-key"],
)
def test_misconfigured_audience(
    audience: str, overrides: dict[str, Any], signing_key: bool, caplog: pytest.LogCaptureFixture
) -> None:
    world = World.create(rs_overrides={audience: overrides}, signing_key=signing_key)
    with caplog.at_level(logging.ERROR, logger="as_server.endpoints.token"):
        expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience=audience, scope=aif("/lock:GET"))
    assert f"resource server '{audience}' is misconfigured" in caplog.text
    assert world.storage.count() == 0


def test_wrong_key_for_the_form_is_a_configuration_error(caplog: pytest.LogCaptureFixture) -> None:
    key = CoseKey.symmetric(bytes(range(16)), alg=CoseAlgorithm.HMAC_256_256)
    world = World.create(rs_overrides={"lock-aif": {"shared_key": key}})
    with caplog.at_level(logging.ERROR):
        expect(InvalidRequest, Status.BAD_REQUEST, world.request_token, audience="lock-aif", scope=aif("/lock:GET"))
    assert "cannot protect" in caplog.text


# --------------------------------------------------------------------------------------------------------------
# Logs and records
# --------------------------------------------------------------------------------------------------------------


def test_secrets_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    world.token.handle(
        TokenRequest(client_id="phone-app", client_secret=PHONE_SECRET.encode()), credentials=None, peer=PEER
    )
    with pytest.raises(InvalidClient):
        world.request_token(secret=PHONE_SECRET + "x")
    with pytest.raises(InvalidRequest):
        world.token.handle(
            TokenRequest(client_id="phone-app", client_secret=PHONE_SECRET.encode()),
            credentials=ClientCredentials("phone-app", PHONE_SECRET.encode()),
            peer=PEER,
        )
    text = caplog.text
    assert "phone-app" in text and PEER in text  # the logs do say who and from where
    assert PHONE_SECRET not in text
    master_secret = response.cnf[OSC][OscoreInputMaterial.MS]
    assert master_secret.hex() not in text and repr(master_secret) not in text
    assert response.access_token.hex() not in text


def test_nothing_is_recorded_for_refused_requests(world: World) -> None:
    for kwargs in ({"secret": "wrong"}, {"audience": "nowhere"}, {"scope": aif("/door:GET")}):
        with pytest.raises((OAuthError, TooManyRequests)):
            world.request_token(**kwargs)
    assert world.storage.count() == 0


def test_every_issued_token_is_recorded(world: World) -> None:
    tokens = [world.request_token(audience="lock-aif", scope=aif("/lock:GET")).access_token for _ in range(5)]
    assert world.storage.count() == 5
    for token in tokens:
        record = world.storage.get_by_hash(token_hash(token))
        assert record is not None and record.client_id == "phone-app"
