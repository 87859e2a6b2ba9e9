"""The sans-IO ``/authz-info`` handler: exi (RFC 9200 §5.10.3), cnonce (§5.3.1), check order (§5.10.1.1), text
scopes, rate limiting; plus cnonce freshness over the wire."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiocoap.numbers.codes import Code

from ace_core.errors import (
    AudienceMismatch,
    CnonceInvalid,
    ScopeNotRecognized,
    TokenExpired,
)
from ace_core.keys import CoseKey
from ace_core.messages import AuthzInfoRequest, CreationHints
from ace_core.status import Status
from resource_server.authz_info import AuthzInfo
from resource_server.cnonce import CnonceManager
from resource_server.config import ScopeFormat
from resource_server.errors import ExiSequenceExpired, ExiSequenceInvalid, RateLimited
from resource_server.token_store import TokenStore
from tests.resource_server.support import AUDIENCE, T0, Client, Lock, material, mint, rs_config

SEQ = AUDIENCE.encode()


def _payload(token: bytes) -> bytes:
    return AuthzInfoRequest(access_token=token, nonce1=b"n" * 8, ace_client_recipientid=b"\x01").to_cbor()


def _authz(key: CoseKey, *, cnonces: CnonceManager | None = None, **config: object) -> AuthzInfo:
    cfg = rs_config(key, **config)
    return AuthzInfo(cfg, TokenStore(max_tokens=cfg.max_tokens), cnonces=cnonces)


def test_clockless_lock_accepts_exi_tokens_and_refuses_exp_only_tokens(key: CoseKey) -> None:
    authz = _authz(key, has_clock=False)
    token = mint(key, osc=material(), exp=None, exi=60, cti=SEQ + b"\x01")
    result = authz.handle(_payload(token), 19, now=T0, monotonic=10.0, peer="p")
    assert result.token.expires_after == 70.0 and result.token.expires_at is None  # now is ignored without a clock
    with pytest.raises(TokenExpired):  # exp cannot be checked without a clock: no usable expiry
        authz.handle(_payload(mint(key, osc=material())), 19, now=None, monotonic=11.0, peer="p")


def test_exi_token_needs_the_documented_cti_layout(key: CoseKey) -> None:
    authz = _authz(key, has_clock=False)
    for cti in (b"\x01\x02", b"back-door\x01", SEQ, SEQ + b"\x00" * 9):
        with pytest.raises(ExiSequenceInvalid) as exc:
            token = mint(key, osc=material(), exp=None, exi=60, cti=cti)
            authz.handle(_payload(token), 19, now=None, monotonic=0, peer="p")
        assert exc.value.status == Status.BAD_REQUEST


def test_exi_sequence_rule_comes_before_the_audience_check(key: CoseKey) -> None:
    authz = _authz(key, has_clock=False)
    authz.store.note_sequence_gone(AUDIENCE, 4)
    token = mint(key, osc=material(), exp=None, exi=60, cti=SEQ + b"\x04", aud="back-door")
    with pytest.raises(ExiSequenceExpired):  # an exp-class check: 4.01 before the 4.03 of aud
        authz.handle(_payload(token), 19, now=None, monotonic=0, peer="p")
    with pytest.raises(AudienceMismatch):
        token = mint(key, osc=material(), exp=None, exi=60, cti=SEQ + b"\x05", aud="back-door")
        authz.handle(_payload(token), 19, now=None, monotonic=0, peer="p")


def test_reposting_a_held_exi_token_keeps_its_first_receipt(key: CoseKey) -> None:
    authz = _authz(key, has_clock=False)
    osc = material()
    token = mint(key, osc=osc, exp=None, exi=60, cti=SEQ + b"\x09")
    first = authz.handle(_payload(token), 19, now=None, monotonic=100.0, peer="p")
    again = authz.handle(_payload(token), 19, now=None, monotonic=150.0, peer="p")
    assert first.token.expires_after == again.token.expires_after == 160.0  # exi counts from first receipt
    assert again.token.association is not first.token.association  # but a new context was derived


def test_text_scopes_map_to_configured_rights(key: CoseKey) -> None:
    from ace_core import cwt
    from ace_core.pop import Confirmation
    from ace_core.scope import AifScope

    authz = _authz(
        key,
        scope_format=ScopeFormat.TEXT,
        scope_map={"open": AifScope.parse_spec("/lock:PUT"), "status": AifScope.parse_spec("/lock:GET /battery:GET")},
    )

    def token(scope: str) -> bytes:
        cnf = Confirmation(osc=material())
        claims = cwt.Claims(iss="coap://as.test/token", aud=AUDIENCE, exp=T0 + 60, cti=b"c", scope=scope, cnf=cnf)
        return cwt.issue(claims, encrypt_key=key, cwt_tag=True)

    result = authz.handle(_payload(token("open status unknown")), 19, now=T0, monotonic=0, peer="p")
    assert result.token.rights == AifScope.parse_spec("/lock:GET,PUT /battery:GET")
    with pytest.raises(ScopeNotRecognized):
        authz.handle(_payload(token("unknown")), 19, now=T0, monotonic=0, peer="p")
    with pytest.raises(ScopeNotRecognized):  # AIF bytes are not a text scope
        authz.handle(_payload(mint(key, osc=material())), 19, now=T0, monotonic=0, peer="p")


def test_rate_limit_counts_every_submission_per_peer(key: CoseKey) -> None:
    authz = _authz(key, rate_limit=2, rate_window=10)
    for _ in range(2):
        authz.handle(_payload(mint(key, osc=material())), 19, now=T0, monotonic=0, peer="a")
    with pytest.raises(RateLimited) as exc:
        authz.handle(_payload(mint(key, osc=material())), 19, now=T0, monotonic=1, peer="a")
    assert exc.value.status == Status.TOO_MANY_REQUESTS and exc.value.retry_after == 9
    authz.handle(_payload(mint(key, osc=material())), 19, now=T0, monotonic=1, peer="b")  # another peer


def test_cnonce_required_fresh_and_issued_here(key: CoseKey) -> None:
    cnonces = CnonceManager(lifetime=60)
    authz = _authz(key, cnonces=cnonces, use_cnonce=True)
    issued = cnonces.issue(monotonic=0.0)
    osc = material()
    good = mint(key, osc=osc, cnonce=issued)
    authz.handle(_payload(good), 19, now=T0, monotonic=59.0, peer="p")
    for cnonce, monotonic in ((None, 1.0), (b"\x00" * 8, 1.0), (issued, 61.0)):
        with pytest.raises(CnonceInvalid) as exc:
            token = mint(key, osc=material(), cnonce=cnonce)
            authz.handle(_payload(token), 19, now=T0, monotonic=monotonic, peer="p")
        assert exc.value.status == Status.UNAUTHORIZED
    # The token the lock holds may be re-posted (new OSCORE context) after its cnonce went stale.
    authz.handle(_payload(good), 19, now=T0, monotonic=600.0, peer="q")


def test_cnonce_round_trip_over_the_wire(
    make_lock: Callable[..., Lock], make_client: Callable[[str], Client], key: CoseKey
) -> None:
    lock = make_lock(rs_config(key, use_cnonce=True, cnonce_lifetime=30))
    client = make_client(lock.base)
    reply = client.post("/lock", b"", code=Code.GET, content_format=None)
    hints = CreationHints.from_cbor(reply.payload)
    assert reply.dotted == "4.01" and hints.cnonce is not None and len(hints.cnonce) == 8
    second = CreationHints.from_cbor(client.post("/lock", b"", code=Code.GET, content_format=None).payload)
    assert second.cnonce != hints.cnonce  # a new one per 4.01
    # The AS copies the cnonce into the token (RFC 9200 §5.8.4.4); the lock accepts it while fresh ...
    osc = material()
    session = client.establish(mint(key, osc=osc, cnonce=hints.cnonce), osc)
    assert session.get("/lock").dotted == "2.05"
    # ... but not without one, nor after its lifetime.
    assert client.upload(mint(key, osc=material()), nonce1=b"n" * 8).dotted == "4.01"
    lock.clock.advance(31)
    assert client.upload(mint(key, osc=material(), cnonce=second.cnonce), nonce1=b"n" * 8).dotted == "4.01"
