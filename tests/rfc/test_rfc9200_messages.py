"""RFC 9200 examples for the ACE messages (``ace_core.messages``).

Byte vectors live in ``tests/vectors/rfc9200/`` (provenance in ``tests/vectors/README.md``). Figures that the RFC
gives only in diagnostic notation, or with elided bytes (``h'…'``), are checked structurally: the decoded CBOR of
our encoding must equal the diagnostic map. Elided values are replaced by labelled placeholders; nothing here is
a byte vector computed by us.
"""

from __future__ import annotations

import base64

import pytest

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.messages import (
    ACE_PROFILE_REQUESTED,
    AccessInformation,
    CreationHints,
    IntrospectionRequest,
    TokenRequest,
)
from ace_core.registry import (
    AceProfile,
    ConfirmationMethod,
    CoseKeyParam,
    CoseKeyType,
    GrantType,
    IntrospectionParam,
    TokenParam,
    TokenType,
)
from tests.helpers import assert_cbor_roundtrip, assert_cbor_structure
from tests.vectors_loader import VECTORS

# Stand-ins for bytes the RFC elides as h'…' (clearly not RFC data).
ELIDED_TOKEN = b"<elided access token>"
ELIDED_KID = b"<elided kid>"
ELIDED_KEY = b"<elided key>"


def test_rfc9200_fig3_creation_hints() -> None:
    """RFC 9200 §5.3 Fig. 3: AS Request Creation Hints, byte for byte."""
    hints = CreationHints(
        as_uri="coaps://as.example.com/token",
        audience="coaps://rs.example.com",
        scope="rTempC",
        cnonce=bytes.fromhex("e0a156bb3f"),
    )
    assert_cbor_roundtrip(hints, (VECTORS / "rfc9200" / "fig3_creation_hints.hex").read_text())


def _fig7_map(ace_profile: object) -> dict[int, object]:
    # RFC 9200 §5.8.2 Fig. 7 in diagnostic notation, with the elided byte strings replaced by placeholders.
    return {
        TokenParam.ACCESS_TOKEN: ELIDED_TOKEN,
        TokenParam.ACE_PROFILE: ace_profile,
        TokenParam.EXPIRES_IN: 3600,
        TokenParam.CNF: {
            ConfirmationMethod.COSE_KEY: {
                CoseKeyParam.KTY: CoseKeyType.SYMMETRIC,
                CoseKeyParam.KID: ELIDED_KID,
                CoseKeyParam.K: ELIDED_KEY,
            }
        },
    }


def test_rfc9200_fig7_access_information_with_erratum_8232() -> None:
    """Fig. 7 with erratum 8232 applied: ``ace_profile`` (38) is the integer ``coap_dtls`` = 1."""
    info = AccessInformation.from_cbor(cbor.dumps(_fig7_map(AceProfile.COAP_DTLS)))
    assert info.access_token == ELIDED_TOKEN
    assert info.ace_profile is AceProfile.COAP_DTLS
    assert info.expires_in == 3600
    assert info.cnf == _fig7_map(AceProfile.COAP_DTLS)[TokenParam.CNF]
    assert info.token_type is None and info.effective_token_type is TokenType.POP  # §5.8.2 default
    assert_cbor_structure(info, _fig7_map(AceProfile.COAP_DTLS))


def test_rfc9200_fig7_as_printed_text_ace_profile_is_rejected() -> None:
    """Fig. 7 as printed sends ``38: "coap_dtls"``; Table 5 and erratum 8232 say integer, so CBOR text is
    malformed. Decision: strict (a lenient decoder would hide peers that follow the misprint)."""
    with pytest.raises(WireFormatError, match="ace_profile"):
        AccessInformation.from_cbor(cbor.dumps(_fig7_map("coap_dtls")))


def test_rfc9200_5_8_4_3_ace_profile_requested_with_null() -> None:
    """§5.8.4.3: a client asks for the profile by sending ``ace_profile`` as CBOR null (empty string in JSON)."""
    request = TokenRequest(audience="tempSensor4711", ace_profile=ACE_PROFILE_REQUESTED)
    assert_cbor_structure(request, {TokenParam.AUDIENCE: "tempSensor4711", TokenParam.ACE_PROFILE: None})
    assert request.to_json() == {"audience": "tempSensor4711", "ace_profile": ""}
    assert TokenRequest.from_json(request.to_json()) == request


def test_rfc9200_5_8_1_grant_type_defaults_to_client_credentials() -> None:
    """§5.8.1: grant_type is OPTIONAL; when missing, client_credentials is implied."""
    request = TokenRequest.from_cbor_map({TokenParam.AUDIENCE: "tempSensor4711"})
    assert request.grant_type is None
    assert request.effective_grant_type is GrantType.CLIENT_CREDENTIALS


def test_rfc9200_fig9_introspection_request_integer_token_type_hint() -> None:
    """§5.9.1 Fig. 9: ``{11: b64'7gj0dXJQ43U', 33: 2 /PoP/}`` -- token_type_hint as an integer, accepted."""
    token = base64.b64decode("7gj0dXJQ43U=")  # the figure's b64'...' literal
    request = IntrospectionRequest(token=token, token_type_hint=TokenType.POP)
    assert_cbor_structure(request, {IntrospectionParam.TOKEN: token, IntrospectionParam.TOKEN_TYPE_HINT: TokenType.POP})
    decoded = IntrospectionRequest.from_cbor(request.to_cbor())
    assert decoded.token_type_hint is TokenType.POP


def test_rfc9200_table6_introspection_request_text_token_type_hint() -> None:
    """Table 6 types token_type_hint as a text string; that form is accepted and kept as text."""
    token = base64.b64decode("7gj0dXJQ43U=")
    request = IntrospectionRequest(token=token, token_type_hint="access_token")
    assert_cbor_structure(
        request, {IntrospectionParam.TOKEN: token, IntrospectionParam.TOKEN_TYPE_HINT: "access_token"}
    )
