"""CWT issue/verify: every token form, the RFC 9200 §5.10.1.1 check order and statuses, time handling."""

from __future__ import annotations

import os

import pytest

from ace_core import cbor, cose, cwt
from ace_core.errors import (
    AudienceMismatch,
    ClaimsUnavailable,
    CnonceInvalid,
    IssuerMismatch,
    ScopeNotRecognized,
    SecurityWrapperFailed,
    TokenExpired,
    TokenMalformed,
)
from ace_core.keys import CoseKey
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import CoseAlgorithm, CoseTag
from ace_core.status import Status

NOW = 1_800_000_000
AS = "coaps://as.example.com"
AUD = "lock-1"


def claims(**over: object) -> cwt.Claims:
    base: dict[str, object] = dict(
        iss=AS,
        aud=AUD,
        exp=NOW + 3600,
        iat=NOW,
        cti=os.urandom(8),
        scope="open",
        cnf=Confirmation(osc=OscoreMaterial(id=b"\x01", ms=os.urandom(16))),
    )
    base.update(over)
    return cwt.Claims(**base)  # type: ignore[arg-type]


SIGN_KEY = CoseKey.generate(CoseAlgorithm.EDDSA)
ES_KEY = CoseKey.generate(CoseAlgorithm.ES256)
MAC_KEY = CoseKey.generate(CoseAlgorithm.HMAC_256_64)
MAC256_KEY = CoseKey.generate(CoseAlgorithm.HMAC_256_256)
ENC_KEYS = {
    a: CoseKey.generate(a)
    for a in (
        CoseAlgorithm.AES_CCM_16_64_128,
        CoseAlgorithm.AES_CCM_16_64_256,
        CoseAlgorithm.A128GCM,
        CoseAlgorithm.A256GCM,
    )
}
RS_KEYS = cose.KeySet([SIGN_KEY.public(), ES_KEY.public(), MAC_KEY, MAC256_KEY, *ENC_KEYS.values()])

FORMS: dict[str, dict[str, CoseKey]] = {
    "sign1-eddsa": {"sign_key": SIGN_KEY},
    "sign1-es256": {"sign_key": ES_KEY},
    "mac0-hmac256/64": {"mac_key": MAC_KEY},
    "mac0-hmac256/256": {"mac_key": MAC256_KEY},
    **{f"encrypt0-{a.name}": {"encrypt_key": k} for a, k in ENC_KEYS.items()},
    "nested-eddsa-in-ccm": {"sign_key": SIGN_KEY, "encrypt_key": ENC_KEYS[CoseAlgorithm.AES_CCM_16_64_128]},
}


@pytest.mark.parametrize("form", FORMS)
def test_issue_verify_every_form(form: str) -> None:
    c = claims()
    token = cwt.issue(c, **FORMS[form])
    assert cwt.verify(token, RS_KEYS, now=NOW, audience=AUD, issuer=AS) == c


@pytest.mark.parametrize("form", FORMS)
def test_cwt_tag_accepted(form: str) -> None:
    c = claims()
    token = cwt.issue(c, cwt_tag=True, **FORMS[form])
    assert token[:2] == b"\xd8\x3d"
    assert cwt.verify(token, RS_KEYS, now=NOW, audience=AUD) == c


def test_nested_is_sign1_inside_encrypt0() -> None:
    token = cwt.issue(claims(), **FORMS["nested-eddsa-in-ccm"])
    v = cwt.verify_token(token, RS_KEYS, now=NOW, audience=AUD)
    assert [layer.tag for layer in v.layers] == [CoseTag.ENCRYPT0, CoseTag.SIGN1]


def test_issue_argument_combinations() -> None:
    with pytest.raises(ValueError):
        cwt.issue(claims())
    with pytest.raises(ValueError):
        cwt.issue(claims(), mac_key=MAC_KEY, sign_key=SIGN_KEY)


# -- RFC 9200 §5.10.1.1 order and statuses ---------------------------------------------------------------------


def test_status_of_each_rejection() -> None:
    token = cwt.issue(claims(), sign_key=SIGN_KEY)
    cases = [
        (lambda: cwt.verify(b"\xa0", RS_KEYS, now=NOW, audience=AUD), TokenMalformed, Status.BAD_REQUEST),
        (
            lambda: cwt.verify(token, cose.KeySet([MAC_KEY]), now=NOW, audience=AUD),
            SecurityWrapperFailed,
            Status.UNAUTHORIZED,
        ),
        (lambda: cwt.verify(token, RS_KEYS, now=NOW, audience=AUD, issuer="x"), IssuerMismatch, Status.UNAUTHORIZED),
        (lambda: cwt.verify(token, RS_KEYS, now=NOW + 3600, audience=AUD), TokenExpired, Status.UNAUTHORIZED),
        (lambda: cwt.verify(token, RS_KEYS, now=NOW, audience="lock-2"), AudienceMismatch, Status.FORBIDDEN),
        (
            lambda: cwt.verify(token, RS_KEYS, now=NOW, audience=AUD, accept_scope=lambda s: s == "x"),
            ScopeNotRecognized,
            Status.BAD_REQUEST,
        ),
        (
            lambda: cwt.verify(token, RS_KEYS, now=NOW, audience=AUD, accept_cnonce=lambda n: n is not None),
            CnonceInvalid,
            Status.UNAUTHORIZED,
        ),
    ]
    for call, exc, status in cases:
        with pytest.raises(exc) as info:
            call()
        assert info.value.status == status


def test_priority_order_iss_before_exp_before_aud_before_scope() -> None:
    # A token that is wrong in every respect reports the highest-priority failure first.
    token = cwt.issue(claims(iss="other", exp=NOW - 1, aud="other", scope="zzz"), sign_key=SIGN_KEY)

    def run(**kw: object) -> None:
        args: dict[str, object] = dict(now=NOW, audience=AUD, issuer=AS, accept_scope=lambda s: False)
        args.update(kw)
        cwt.verify(token, RS_KEYS, **args)

    with pytest.raises(IssuerMismatch):
        run()
    with pytest.raises(TokenExpired):
        run(issuer=None)
    with pytest.raises(AudienceMismatch):
        run(issuer=None, now=NOW - 10)
    with pytest.raises(ScopeNotRecognized):
        run(issuer=None, now=NOW - 10, audience="other")


def test_claims_not_a_map_is_claims_unavailable() -> None:
    token = cose.sign1(cbor.dumps([1, 2, 3]), SIGN_KEY)
    with pytest.raises(ClaimsUnavailable) as info:
        cwt.verify(token, RS_KEYS, now=NOW, audience=AUD)
    assert info.value.status == Status.BAD_REQUEST
    token = cose.sign1(cbor.dumps({4: "tomorrow"}), SIGN_KEY)
    with pytest.raises(ClaimsUnavailable):
        cwt.verify(token, RS_KEYS, now=NOW, audience=AUD)


def test_time_is_a_parameter_with_leeway_and_nbf() -> None:
    token = cwt.issue(claims(nbf=NOW + 10, exp=NOW + 20), mac_key=MAC_KEY)
    with pytest.raises(TokenExpired):
        cwt.verify(token, RS_KEYS, now=NOW, audience=AUD)
    assert cwt.verify(token, RS_KEYS, now=NOW + 5, audience=AUD, leeway=5).nbf == NOW + 10
    assert cwt.verify(token, RS_KEYS, now=NOW + 19.9, audience=AUD).exp == NOW + 20
    with pytest.raises(TokenExpired):
        cwt.verify(token, RS_KEYS, now=NOW + 20, audience=AUD)
    assert cwt.verify(token, RS_KEYS, now=NOW + 24, audience=AUD, leeway=5).exp == NOW + 20


def test_clockless_device_needs_exi() -> None:
    with_exp = cwt.issue(claims(), mac_key=MAC_KEY)
    with pytest.raises(TokenExpired):
        cwt.verify(with_exp, RS_KEYS, now=None, audience=AUD)
    with_exi = cwt.issue(claims(exp=None, exi=3600), mac_key=MAC_KEY)
    assert cwt.verify(with_exi, RS_KEYS, now=None, audience=AUD).exi == 3600
    never = cwt.issue(claims(exp=None), mac_key=MAC_KEY)
    with pytest.raises(TokenExpired):
        cwt.verify(never, RS_KEYS, now=NOW, audience=AUD)


def test_audience_array_and_multiple_rs_audiences() -> None:
    token = cwt.issue(claims(aud=("lock-1", "lock-2")), mac_key=MAC_KEY)
    assert cwt.verify(token, RS_KEYS, now=NOW, audience="lock-2").aud == ("lock-1", "lock-2")
    assert cwt.verify(token, RS_KEYS, now=NOW, audience=["x", "lock-1"]).aud == ("lock-1", "lock-2")


def test_unknown_claims_round_trip() -> None:
    c = claims(extra={1000: "x", "private": [1, 2]})
    token = cwt.issue(c, sign_key=SIGN_KEY)
    assert cwt.verify(token, RS_KEYS, now=NOW, audience=AUD).extra == {1000: "x", "private": [1, 2]}


def test_nesting_depth_is_bounded() -> None:
    inner = cwt.issue(claims(), sign_key=SIGN_KEY)
    middle = cose.encrypt0(inner, ENC_KEYS[CoseAlgorithm.A128GCM])
    assert isinstance(middle, bytes)
    outer = cose.mac0(middle, MAC_KEY)
    with pytest.raises(TokenMalformed):
        cwt.verify(outer, RS_KEYS, now=NOW, audience=AUD)


def test_size_limit() -> None:
    token = cwt.issue(claims(scope="x" * 5000), sign_key=SIGN_KEY)
    with pytest.raises(TokenMalformed):
        cwt.verify(token, RS_KEYS, now=NOW, audience=AUD, max_size=1000)
