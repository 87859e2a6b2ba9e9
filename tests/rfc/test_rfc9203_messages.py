"""RFC 9203 (OSCORE profile) examples for the ACE messages.

RFC 9203 gives its message examples only in diagnostic notation (with the access token elided), so there are no
byte vectors here: each test builds the message from the diagnostic values and checks that the decoded CBOR of
our encoding equals the diagnostic map.
"""

from __future__ import annotations

from ace_core import cbor
from ace_core.messages import AccessInformation, AuthzInfoRequest, AuthzInfoResponse, TokenRequest
from ace_core.registry import AceProfile, ConfirmationMethod, CwtClaim, OscoreInputMaterial, TokenParam
from tests.helpers import assert_cbor_structure
from tests.vectors_loader import vector_hex

# Stand-in for the access token the RFC elides as h'…' (clearly not RFC data).
ELIDED_TOKEN = b"<elided access token>"

MASTER_SECRET = bytes.fromhex("f9af838368e353e78888e1426bd94e6f")


def test_rfc9203_4_1_authz_info_request() -> None:
    """§4.1: ``{1: h'…', 40: h'018a278f7faab55a', 43: h'1645'}`` (access_token, nonce1, ace_client_recipientid)."""
    request = AuthzInfoRequest(
        access_token=ELIDED_TOKEN,
        nonce1=bytes.fromhex("018a278f7faab55a"),
        ace_client_recipientid=bytes.fromhex("1645"),
    )
    assert_cbor_structure(
        request,
        {
            TokenParam.ACCESS_TOKEN: ELIDED_TOKEN,
            TokenParam.NONCE1: bytes.fromhex("018a278f7faab55a"),
            TokenParam.ACE_CLIENT_RECIPIENTID: bytes.fromhex("1645"),
        },
    )


def test_rfc9203_4_2_authz_info_response() -> None:
    """§4.2: ``{42: h'25a8991cd700ac01', 44: h'0000'}`` (nonce2, ace_server_recipientid), in this key order."""
    response = AuthzInfoResponse(nonce2=bytes.fromhex("25a8991cd700ac01"), ace_server_recipientid=b"\x00\x00")
    expected = {TokenParam.NONCE2: bytes.fromhex("25a8991cd700ac01"), TokenParam.ACE_SERVER_RECIPIENTID: b"\x00\x00"}
    assert_cbor_structure(response, expected)
    assert list(cbor.loads(response.to_cbor())) == list(expected)


def _osc_cnf() -> dict[int, object]:
    return {ConfirmationMethod.OSC: {OscoreInputMaterial.ID: b"\x01", OscoreInputMaterial.MS: MASTER_SECRET}}


def test_rfc9203_3_2_token_response() -> None:
    """§3.2: ``{1: h'8343a1010aa2044c53…', 38: 2, 2: 3600, 8: {4: {0: h'01', 2: h'f9af…6f'}}}``."""
    info = AccessInformation(
        access_token=ELIDED_TOKEN, ace_profile=AceProfile.COAP_OSCORE, expires_in=3600, cnf=_osc_cnf()
    )
    assert_cbor_structure(
        info,
        {
            TokenParam.ACCESS_TOKEN: ELIDED_TOKEN,
            TokenParam.ACE_PROFILE: AceProfile.COAP_OSCORE,
            TokenParam.EXPIRES_IN: 3600,
            TokenParam.CNF: _osc_cnf(),
        },
    )
    # RFC 9201 §3.1 / RFC 9203 §3.2.1: JSON carries the osc confirmation method with its Table 1 names.
    assert info.to_json()["cnf"] == {"osc": {"id": "AQ", "ms": "-a-Dg2jjU-eIiOFCa9lObw"}}
    assert AccessInformation.from_json(info.to_json()) == info


def test_rfc9203_3_2_response_cnf_equals_token_cnf_claim() -> None:
    """§3.2: the response's ``cnf`` carries the same OSCORE_Input_Material as the token's ``cnf`` claim
    (the claims set is a byte vector, ``rfc9203/claims_set_3_2.hex``)."""
    claims = cbor.loads(vector_hex("rfc9203/claims_set_3_2.hex"))
    info = AccessInformation(access_token=ELIDED_TOKEN, ace_profile=AceProfile.COAP_OSCORE, cnf=_osc_cnf())
    assert claims[CwtClaim.CNF] == info.cnf


def test_rfc9203_update_of_access_rights_req_cnf_kid() -> None:
    """§3.1 update of access rights: the client names its OSCORE_Input_Material id, ``{4: {3: h'01'}}``."""
    request = TokenRequest(req_cnf={ConfirmationMethod.KID: b"\x01"})
    assert_cbor_structure(request, {TokenParam.REQ_CNF: {ConfirmationMethod.KID: b"\x01"}})
