"""RFC 9202 (DTLS profile) §3.3: the PSK token exchange and the Fig. 9 ``psk_identity``.

Fig. 9 is a byte vector (``tests/vectors/rfc9202/fig9_psk_identity.hex``, provenance in
``tests/vectors/README.md``); the §3.3.1 messages are given in diagnostic notation with the token elided and
are checked structurally.
"""

from __future__ import annotations

from ace_core import cbor
from ace_core.errors import InvalidRequest
from ace_core.messages import AccessInformation, ErrorResponse, TokenRequest
from ace_core.registry import (
    AceProfile,
    ConfirmationMethod,
    CoseKeyParam,
    CoseKeyType,
    CwtClaim,
    ErrorCode,
    TokenParam,
    TokenType,
)
from tests.helpers import assert_cbor_structure
from tests.vectors_loader import vector_hex

KID = bytes.fromhex("3d027833fc6267ce")
ELIDED_TOKEN = b"<elided access token>"  # stand-in for the RFC's h'd08343a1…'

FIG9_PSK_IDENTITY = {
    CwtClaim.CNF: {ConfirmationMethod.COSE_KEY: {CoseKeyParam.KTY: CoseKeyType.SYMMETRIC, CoseKeyParam.KID: KID}}
}


def test_rfc9202_fig9_psk_identity() -> None:
    """§3.3.2 Fig. 9: ``{8: {1: {1: 4, 2: h'3d027833fc6267ce'}}}`` decodes, and re-encodes byte for byte."""
    vector = vector_hex("rfc9202/fig9_psk_identity.hex")
    assert cbor.loads(vector) == FIG9_PSK_IDENTITY
    assert cbor.dumps(FIG9_PSK_IDENTITY) == vector


def test_rfc9202_3_3_1_psk_token_request() -> None:
    """§3.3.1: the minimal PSK token request ``{5: "smokeSensor1807"}``."""
    request = TokenRequest(audience="smokeSensor1807")
    assert_cbor_structure(request, {TokenParam.AUDIENCE: "smokeSensor1807"})


def _psk_response_map() -> dict[int, object]:
    # §3.3.1: {1: h'd08343a1…', 34: 2, 2: 86400, 38: 1, 8: {1: {1: 4, 2: h'3d02…ce', -1: h'7365…79'}}}
    return {
        TokenParam.ACCESS_TOKEN: ELIDED_TOKEN,
        TokenParam.TOKEN_TYPE: TokenType.POP,
        TokenParam.EXPIRES_IN: 86400,
        TokenParam.ACE_PROFILE: AceProfile.COAP_DTLS,
        TokenParam.CNF: {
            ConfirmationMethod.COSE_KEY: {
                CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
                CoseKeyParam.KID: KID,
                CoseKeyParam.K: bytes.fromhex("73657373696f6e6b6579"),
            }
        },
    }


def test_rfc9202_3_3_1_psk_token_response() -> None:
    """§3.3.1: the AS's PSK response decodes with the registry values of Table 5."""
    info = AccessInformation.from_cbor_map(_psk_response_map())
    assert info.token_type is TokenType.POP
    assert info.expires_in == 86400
    assert info.ace_profile is AceProfile.COAP_DTLS
    assert_cbor_structure(info, _psk_response_map())


def test_rfc9202_psk_identity_from_token_response_kid_matches_fig9() -> None:
    """§3.3.2: the psk_identity names the kid the AS returned (the RFC says "rs_cnf"; it is the response's
    ``cnf``, reference §11 item 4). Built from the §3.3.1 response, it equals the Fig. 9 bytes."""
    info = AccessInformation.from_cbor_map(_psk_response_map())
    assert info.cnf is not None
    kid = info.cnf[ConfirmationMethod.COSE_KEY][CoseKeyParam.KID]
    identity = {
        CwtClaim.CNF: {ConfirmationMethod.COSE_KEY: {CoseKeyParam.KTY: CoseKeyType.SYMMETRIC, CoseKeyParam.KID: kid}}
    }
    assert cbor.dumps(identity) == vector_hex("rfc9202/fig9_psk_identity.hex")


def test_rfc9202_3_3_1_rejected_request() -> None:
    """§3.3.1: the AS rejects a request with 4.00 and ``{30: 1}`` (invalid_request)."""
    error = ErrorResponse(error=ErrorCode.INVALID_REQUEST)
    assert_cbor_structure(error, {TokenParam.ERROR: ErrorCode.INVALID_REQUEST})
    assert isinstance(error.to_exception(), InvalidRequest)
