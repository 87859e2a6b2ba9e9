"""``ostiary demo``: the end-to-end scenario, printed for a person to read.

For this milestone the scenario exercises the shared core exactly as the authorization server, a door lock and a
phone app will: the app's token request is encoded on the wire, the AS grants an AIF scope and issues a
proof-of-possession CWT bound to fresh OSCORE input material (RFC 9203), the lock verifies it with the keys it
shares with the AS and enforces the scope, and every kind of bad token is refused with the RFC 9200 §5.10.1.1
response code. Network transports (CoAP, HTTP) arrive with the authorization-server issue.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from ace_core import cbor, cose, cwt
from ace_core.errors import TokenRejected
from ace_core.keys import CoseKey
from ace_core.messages import ACE_PROFILE_REQUESTED, AccessInformation, TokenRequest
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, CoseAlgorithm, TokenType
from ace_core.scope import AifScope

AS_URI = "coaps://as.example.org/token"
LOCK = "front-door"
OTHER_LOCK = "server-room"
LIFETIME = 3600


def run(out: TextIO = sys.stdout) -> int:
    """Run the scenario, writing to ``out``. Returns the process exit status (0: every step behaved)."""

    def say(text: str = "") -> None:
        print(text, file=out)

    failures = 0

    def check(label: str, ok: bool) -> None:
        nonlocal failures
        failures += not ok
        say(f"    {'ok  ' if ok else 'FAIL'} {label}")

    now = int(time.time())
    say("Ostiary demo: an ACE-OAuth token from the authorization server to a door lock")
    say("=" * 78)

    say("\n1. Provisioning (what the bootstrap adapter will do for real locks)")
    as_signing = CoseKey.generate(CoseAlgorithm.EDDSA)
    lock_key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    other_lock_key = CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)
    say(f"    AS token-signing key   Ed25519 (EdDSA), kid {as_signing.kid.hex() if as_signing.kid else '-'}")
    say(f"    AS <-> {LOCK} key  AES-CCM-16-64-128, kid {lock_key.kid.hex() if lock_key.kid else '-'}")
    say("    The lock holds the AS's public key and the shared key; never the AS's private key.")

    say("\n2. The phone app asks for a token (RFC 9200 §5.8.1, CoAP payload application/ace+cbor)")
    wanted = AifScope.parse_spec("/lock:GET,PUT")
    request = TokenRequest(audience=LOCK, scope=wanted.to_cbor(), ace_profile=ACE_PROFILE_REQUESTED)
    wire = request.to_cbor()
    say(f"    request   audience={LOCK!r}, scope={wanted.to_spec()!r} (AIF), ace_profile=null (tell me)")
    say(f"    on the wire ({len(wire)} bytes): {wire.hex()}")
    check("the AS decodes exactly what the app sent", TokenRequest.from_cbor(wire) == request)

    say("\n3. The AS grants it and issues a proof-of-possession CWT (RFC 8392, RFC 8747 cnf, RFC 9203 osc)")
    granted = wanted & AifScope.parse_spec("/lock:GET,PUT /battery:GET")  # requested ∩ allowed by policy
    material = OscoreMaterial(id=os.urandom(2), ms=os.urandom(16))
    claims = cwt.Claims(
        iss=AS_URI,
        aud=LOCK,
        exp=now + LIFETIME,
        iat=now,
        cti=os.urandom(8),
        scope=granted.to_cbor(),
        cnf=Confirmation(osc=material),
        ace_profile=AceProfile.COAP_OSCORE,
    )
    # Signed by the AS, then encrypted for the lock so only it can read the OSCORE master secret (RFC 9203 §3.2).
    token = cwt.issue(claims, sign_key=as_signing, encrypt_key=lock_key)
    response = AccessInformation(
        access_token=token,
        token_type=TokenType.POP,
        expires_in=LIFETIME,
        ace_profile=AceProfile.COAP_OSCORE,
        cnf=Confirmation(osc=material).to_cbor_map(),
    )
    say(f"    granted scope (AIF, RFC 9237): {granted.to_spec()}  = {granted.to_json()}")
    say(f"    token: COSE_Sign1 (EdDSA) inside COSE_Encrypt0 (AES-CCM-16-64-128), {len(token)} bytes")
    say(f"    token response: {len(response.to_cbor())} bytes of application/ace+cbor, expires_in {LIFETIME} s")

    say("\n4. The lock verifies the token (RFC 9200 §5.10.1.1) and enforces its scope (§5.10.2)")
    lock_keys = cose.KeySet([as_signing.public(), lock_key])
    verified = cwt.verify(token, lock_keys, now=now, audience=LOCK, issuer=AS_URI)
    check(f"verified: iss={verified.iss} aud={verified.aud} exp in {int(verified.exp or 0) - now} s", True)
    check(
        "the OSCORE material in the token equals the one the app received",
        verified.cnf is not None and verified.cnf.osc == material,
    )
    scope = AifScope.from_cbor(verified.scope) if isinstance(verified.scope, bytes) else None
    assert scope is not None
    check("PUT /lock (unlock) is permitted", scope.permits("PUT", "/lock"))
    check("DELETE /lock is refused: method not covered -> 4.05", not scope.permits("DELETE", "/lock"))
    check("GET /log is refused: resource not covered -> 4.03", not scope.covers_path("/log"))

    say("\n5. What the lock refuses, and the response code it sends")

    def refused(label: str, bad_token: bytes, *, at: int, audience: str, keys: cose.KeySet, code: str) -> None:
        try:
            cwt.verify(bad_token, keys, now=at, audience=audience, issuer=AS_URI)
        except TokenRejected as exc:
            check(
                f"{label}: {exc.status.coap_dotted} {type(exc).__name__} (expected {code})",
                exc.status.coap_dotted == code,
            )
            return
        check(f"{label}: accepted!", False)

    tampered = bytearray(token)
    tampered[len(tampered) // 2] ^= 0x01
    refused("one byte flipped in transit", bytes(tampered), at=now, audience=LOCK, keys=lock_keys, code="4.01")
    refused("the same token an hour later", token, at=now + LIFETIME, audience=LOCK, keys=lock_keys, code="4.01")
    other = cwt.issue(
        cwt.Claims(
            iss=AS_URI,
            aud=OTHER_LOCK,
            exp=now + LIFETIME,
            iat=now,
            cti=os.urandom(8),
            scope=granted.to_cbor(),
            cnf=Confirmation(osc=material),
        ),
        sign_key=as_signing,
        encrypt_key=lock_key,
    )
    refused(f"a token for '{OTHER_LOCK}' shown to '{LOCK}'", other, at=now, audience=LOCK, keys=lock_keys, code="4.03")
    forged_as = CoseKey.generate(CoseAlgorithm.EDDSA, kid=as_signing.kid)
    forged = cwt.issue(claims, sign_key=forged_as, encrypt_key=lock_key)
    refused("a token signed by an impostor AS", forged, at=now, audience=LOCK, keys=lock_keys, code="4.01")
    foreign = cwt.issue(claims, sign_key=as_signing, encrypt_key=other_lock_key)
    refused("a token encrypted for another lock", foreign, at=now, audience=LOCK, keys=lock_keys, code="4.01")
    refused(
        "bytes that are not a token", cbor.dumps({"hello": "lock"}), at=now, audience=LOCK, keys=lock_keys, code="4.00"
    )

    say("")
    if failures:
        say(f"{failures} step(s) did not behave as expected.")
        return 1
    say("Every step behaved as RFC 9200 says. Next: `make test` runs the full suite; `make bench` the benchmarks.")
    return 0
