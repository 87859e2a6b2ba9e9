"""Token hashes (RFC 9770 §4.2.1, RFC 6920 §6) and the JSON form of stored scopes."""

from __future__ import annotations

import base64
import hashlib

import pytest

from ace_core.errors import WireFormatError
from ace_core.keys import b64url_decode
from ace_core.scope import AifScope
from as_server.tokens import json_scope, token_hash

#: The ``access_token`` of RFC 9770 Figure 3 as base64url (its HASH_INPUT_TEXT), from
#: shared/reference/ace-wire-formats.md §8, where the bytes were checked against the figure's hex.
RFC9770_FIG3_HASH_INPUT_TEXT = (
    "2D3Qg1ggowEKBExTeW1tZXRyaWMxMjgFTZmg14RudixJ_-imPgugWFi5GKEf2B5Di3-XPZ4uEZvLIkJLoPOKgPJ1YvQA7h0NbA_bVZwCQh_ThPwu"
    "viLXBxN4sOp0KP_xV0RNRffmr82hquX2SVgwxYYnCH_FtJdPMZqHB6Y13WQ7"
)
#: The token hash of that token, DERIVED in shared/reference/ace-wire-formats.md §8 -- not an RFC vector.
DERIVED_FIG3_TOKEN_HASH = "011a06427bcbe5d29385202b8255820b8370ae481065a1e94017c0185bfbd51707"


def test_token_hash_of_rfc9770_fig3_token_derived_example() -> None:
    """Derived example, NOT an RFC test vector: RFC 9770 gives the token (Fig. 3) but no hash of it. The expected
    value was computed independently for the reference document (§8) from the §4.2.1 rules: 0x01 (RFC 6920 §9.4
    Suite ID of sha-256) || SHA-256(UTF-8(base64url-without-padding(access_token)))."""
    token = b64url_decode(RFC9770_FIG3_HASH_INPUT_TEXT)
    assert token[:10].hex() == "d83dd0835820a3010a04" and token[-2:].hex() == "643b"  # as printed in Fig. 3
    assert token_hash(token).hex() == DERIVED_FIG3_TOKEN_HASH


@pytest.mark.parametrize("token", [b"", b"\x00", b"\xfb\xff", bytes(range(256))])
def test_token_hash_structure(token: bytes) -> None:
    value = token_hash(token)
    assert len(value) == 33 and value[0] == 0x01  # RFC 6920 §6: reserved bits 0, Suite ID 1
    text = base64.urlsafe_b64encode(token).rstrip(b"=")
    assert value[1:] == hashlib.sha256(text).digest()


def test_json_scope() -> None:
    scope = AifScope.parse_spec("/lock:GET,PUT")
    assert json_scope(scope.to_cbor()) == '[["/lock",5]]'
    assert json_scope("read write") == "read write"
    with pytest.raises(WireFormatError):
        json_scope(b"\xff")


def test_module_doctest() -> None:
    import doctest

    from as_server import tokens

    result = doctest.testmod(tokens)
    assert result.attempted > 0 and result.failed == 0
