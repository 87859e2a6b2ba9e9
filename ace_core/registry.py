"""IANA registries used by ACE-OAuth: every wire integer of the project is spelled here, once.

One ``IntEnum`` per IANA table, each citing where it is defined. The same integer means different things in
different tables (``2`` is ``expires_in`` in :class:`TokenParam` but ``sub`` in :class:`IntrospectionParam`),
which is why there is no flat dictionary of "ACE numbers". Values come from
``shared/reference/ace-wire-formats.md`` (verified against the RFC text).

Values a peer sends that are not listed here decode to plain ``int`` (see :func:`lookup`), so unknown registry
entries round-trip instead of failing (STYLE §3.6 rule 9).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import TypeVar

__all__ = [
    "AceProfile",
    "AifMethod",
    "ConfirmationMethod",
    "ContentFormat",
    "CoseAlgorithm",
    "CoseCurve",
    "CoseHeader",
    "CoseKeyOp",
    "CoseKeyParam",
    "CoseKeyType",
    "CoseTag",
    "CreationHint",
    "CwtClaim",
    "ErrorCode",
    "GrantType",
    "IntrospectionParam",
    "OscoreInputMaterial",
    "TokenParam",
    "TokenType",
    "lookup",
]


class TokenParam(IntEnum):
    """CBOR map keys of token requests and responses (OAuth Parameters CBOR Mappings).

    RFC 9200 §5.8.5 Table 5; ``req_cnf``, ``cnf``, ``rs_cnf`` from RFC 9201 §6/§10.2; ``nonce1``, ``nonce2``,
    ``ace_client_recipientid``, ``ace_server_recipientid`` from RFC 9203 §9.3. The same keys are used in the
    RFC 9203 §4.1 ``/authz-info`` exchange.
    """

    ACCESS_TOKEN = 1
    EXPIRES_IN = 2
    REQ_CNF = 4  # RFC 9201 §3.1
    AUDIENCE = 5
    CNF = 8  # RFC 9201 §3.2
    SCOPE = 9
    CLIENT_ID = 24
    CLIENT_SECRET = 25
    RESPONSE_TYPE = 26
    REDIRECT_URI = 27
    STATE = 28
    CODE = 29
    ERROR = 30
    ERROR_DESCRIPTION = 31
    ERROR_URI = 32
    GRANT_TYPE = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    PASSWORD = 36
    REFRESH_TOKEN = 37
    ACE_PROFILE = 38
    CNONCE = 39
    NONCE1 = 40  # RFC 9203 §9.3
    RS_CNF = 41  # RFC 9201 §3.2
    NONCE2 = 42  # RFC 9203 §9.3
    ACE_CLIENT_RECIPIENTID = 43  # RFC 9203 §9.3
    ACE_SERVER_RECIPIENTID = 44  # RFC 9203 §9.3


class GrantType(IntEnum):
    """CBOR abbreviations of OAuth grant types. RFC 9200 §5.8.4.1 Table 4."""

    PASSWORD = 0
    AUTHORIZATION_CODE = 1
    CLIENT_CREDENTIALS = 2
    REFRESH_TOKEN = 3


class TokenType(IntEnum):
    """CBOR abbreviations of OAuth access token types. RFC 9200 §8.7.1."""

    BEARER = 1
    POP = 2


class AceProfile(IntEnum):
    """ACE profiles. RFC 9202 §9 (``coap_dtls``), RFC 9203 §9.1 (``coap_oscore``)."""

    COAP_DTLS = 1
    COAP_OSCORE = 2


class ErrorCode(IntEnum):
    """OAuth error codes in CBOR. RFC 9200 §5.8.3 Table 3, registry §8.4."""

    INVALID_REQUEST = 1
    INVALID_CLIENT = 2
    INVALID_GRANT = 3
    UNAUTHORIZED_CLIENT = 4
    UNSUPPORTED_GRANT_TYPE = 5
    INVALID_SCOPE = 6
    UNSUPPORTED_POP_KEY = 7
    INCOMPATIBLE_ACE_PROFILES = 8


class IntrospectionParam(IntEnum):
    """CBOR map keys of introspection requests and responses. RFC 9200 §5.9.4 Table 6, registry §8.12."""

    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACTIVE = 10
    TOKEN = 11
    CLIENT_ID = 24
    ERROR = 30
    ERROR_DESCRIPTION = 31
    ERROR_URI = 32
    TOKEN_TYPE_HINT = 33
    TOKEN_TYPE = 34
    USERNAME = 35
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40


class CwtClaim(IntEnum):
    """CWT claim keys. RFC 8392 §4 (1-7), RFC 8747 §3.1 (``cnf``), RFC 9200 §8.14 (``scope`` onwards)."""

    ISS = 1
    SUB = 2
    AUD = 3
    EXP = 4
    NBF = 5
    IAT = 6
    CTI = 7
    CNF = 8
    SCOPE = 9
    ACE_PROFILE = 38
    CNONCE = 39
    EXI = 40


class ConfirmationMethod(IntEnum):
    """Members of the ``cnf`` map (CWT Confirmation Methods). RFC 8747 §3.1 Table 1; ``osc`` RFC 9203 §9.5."""

    COSE_KEY = 1
    ENCRYPTED_COSE_KEY = 2
    KID = 3
    OSC = 4


class CreationHint(IntEnum):
    """AS Request Creation Hints. RFC 9200 §5.3 Table 1, registry §8.1."""

    AS = 1
    KID = 2
    AUDIENCE = 5
    SCOPE = 9
    CNONCE = 39


class OscoreInputMaterial(IntEnum):
    """Labels of the OSCORE_Input_Material object. RFC 9203 §3.2.1 Table 1, registry §9.4."""

    ID = 0
    VERSION = 1
    MS = 2
    HKDF = 3
    ALG = 4
    SALT = 5
    CONTEXT_ID = 6


class CoseHeader(IntEnum):
    """COSE header parameters used here. RFC 9052 §3.1 Table 3; ``kid_context`` RFC 8613 §5.1."""

    ALG = 1
    CRIT = 2
    CONTENT_TYPE = 3
    KID = 4
    IV = 5
    PARTIAL_IV = 6
    KID_CONTEXT = 10


class CoseKeyParam(IntEnum):
    """COSE_Key parameters. RFC 9052 §7.1 Table 4 (common); RFC 9053 §7.1-§7.2, §6.1 (type-specific).

    The type-specific labels overlap (``-1`` is ``crv`` for OKP/EC2 and ``k`` for Symmetric), hence the two
    spellings below share a value by design; use the one named for the key type at hand.
    """

    KTY = 1
    KID = 2
    ALG = 3
    KEY_OPS = 4
    BASE_IV = 5
    CRV = -1  # OKP and EC2
    K = -1  # Symmetric (alias of CRV: same label, other key type)
    X = -2
    Y = -3  # EC2 only
    D = -4


class CoseKeyType(IntEnum):
    """COSE key types. RFC 9053 §7 Table 17."""

    OKP = 1
    EC2 = 2
    SYMMETRIC = 4


class CoseCurve(IntEnum):
    """COSE elliptic curves. RFC 9053 §7.1 Table 18."""

    P_256 = 1
    P_384 = 2
    P_521 = 3
    X25519 = 4
    X448 = 5
    ED25519 = 6
    ED448 = 7


class CoseKeyOp(IntEnum):
    """COSE_Key ``key_ops`` values. RFC 9052 §7.1 Table 5."""

    SIGN = 1
    VERIFY = 2
    ENCRYPT = 3
    DECRYPT = 4
    WRAP_KEY = 5
    UNWRAP_KEY = 6
    DERIVE_KEY = 7
    DERIVE_BITS = 8
    MAC_CREATE = 9
    MAC_VERIFY = 10


class CoseAlgorithm(IntEnum):
    """COSE algorithms this project issues or verifies tokens with. RFC 9053 §2-§4 (Tables 1, 2, 5, 7, 10)."""

    A128GCM = 1
    A192GCM = 2
    A256GCM = 3
    HMAC_256_64 = 4
    HMAC_256_256 = 5
    HMAC_384_384 = 6
    HMAC_512_512 = 7
    AES_CCM_16_64_128 = 10
    AES_CCM_16_64_256 = 11
    AES_CCM_64_64_128 = 12
    AES_CCM_64_64_256 = 13
    ES256 = -7
    EDDSA = -8
    ES384 = -35


class CoseTag(IntEnum):
    """CBOR tags of COSE messages and CWTs. RFC 9052 §2 Table 1; CWT tag RFC 8392 §6."""

    ENCRYPT0 = 16
    MAC0 = 17
    SIGN1 = 18
    CWT = 61


class ContentFormat(IntEnum):
    """CoAP Content-Formats of ACE payloads (CoRE Parameters registry).

    ``application/ace+cbor`` RFC 9200 §8.16; ``application/cwt`` RFC 8392 §9.4; ``application/aif+*``
    RFC 9237 §5.3; ``application/oscore`` RFC 8613 §13.6; ``application/ace-trl+cbor`` RFC 9770 §15.2;
    ``application/concise-problem-details+cbor`` RFC 9290 §6.4. Transports may use aiocoap's own enum; these
    values are what it must agree with.
    """

    OSCORE = 10001
    ACE_CBOR = 19
    CWT = 61
    CONCISE_PROBLEM_DETAILS_CBOR = 257
    ACE_TRL_CBOR = 262
    AIF_CBOR = 290
    AIF_JSON = 291


class AifMethod(IntFlag):
    """REST-method-set bits of AIF-REST. RFC 9237 §3: bit = CoAP method code - 1; Dynamic-X = bit + 32."""

    GET = 1 << 0
    POST = 1 << 1
    PUT = 1 << 2
    DELETE = 1 << 3
    FETCH = 1 << 4
    PATCH = 1 << 5
    IPATCH = 1 << 6
    DYNAMIC_GET = 1 << 32
    DYNAMIC_POST = 1 << 33
    DYNAMIC_PUT = 1 << 34
    DYNAMIC_DELETE = 1 << 35
    DYNAMIC_FETCH = 1 << 36
    DYNAMIC_PATCH = 1 << 37
    DYNAMIC_IPATCH = 1 << 38


#: Media type of ACE messages (RFC 9200 §8.15); CoAP Content-Format :attr:`ContentFormat.ACE_CBOR`.
MEDIA_TYPE_ACE_CBOR = "application/ace+cbor"
#: Media type of CWTs (RFC 8392 §9.3).
MEDIA_TYPE_CWT = "application/cwt"

#: RFC 6920 §9.4 Named Information Hash Algorithm "sha-256" suite id, used for token hashes (RFC 9770 §4).
NI_SUITE_SHA_256 = 1

_E = TypeVar("_E", bound=IntEnum)


def lookup(enum: type[_E], value: int) -> _E | int:
    """Return ``enum(value)`` when registered, else the plain ``int`` (unknown values round-trip)."""
    try:
        return enum(value)
    except ValueError:
        return value
