"""Our ContentFormat registry agrees with aiocoap's (STYLE §3.2: transports may use either)."""

from __future__ import annotations

import pytest

from ace_core.registry import MEDIA_TYPE_ACE_CBOR, MEDIA_TYPE_CWT, ContentFormat

numbers = pytest.importorskip("aiocoap.numbers", reason="aiocoap (the 'coap' extra) is not installed")

MEDIA_TYPES = {
    ContentFormat.ACE_CBOR: MEDIA_TYPE_ACE_CBOR,
    ContentFormat.CWT: MEDIA_TYPE_CWT,
    ContentFormat.OSCORE: "application/oscore",
    ContentFormat.AIF_CBOR: "application/aif+cbor",
    ContentFormat.AIF_JSON: "application/aif+json",
    ContentFormat.ACE_TRL_CBOR: "application/ace-trl+cbor",
    ContentFormat.CONCISE_PROBLEM_DETAILS_CBOR: "application/concise-problem-details+cbor",
}


@pytest.mark.parametrize("member", list(ContentFormat), ids=lambda m: m.name)
def test_content_format_matches_aiocoap(member: ContentFormat) -> None:
    try:
        theirs = numbers.ContentFormat(int(member)).media_type
    except AttributeError:
        # aiocoap 0.4.17 does not know application/ace-trl+cbor (RFC 9770, 2025) yet; it must not know the
        # media type under another number either.
        with pytest.raises(KeyError):
            numbers.ContentFormat.by_media_type(MEDIA_TYPES[member])
        return
    assert theirs == MEDIA_TYPES[member]
    assert int(numbers.ContentFormat.by_media_type(MEDIA_TYPES[member])) == member
