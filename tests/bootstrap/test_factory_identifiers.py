"""Factory names (issue #7): serial numbers, endpoint names, PSK identities within tinydtls's limits, enrolment ids
whose check character catches every single typo and every swap, and a parser that fails only with clear errors."""

from __future__ import annotations

import base64
import itertools
import os
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.lwm2m import identifiers
from ace_core.lwm2m.identifiers import (
    ALPHABET,
    ENROLMENT_RANDOM_BYTES,
    MAX_PSK_IDENTITY_BYTES,
    EnrolmentIdError,
    InvalidName,
    check_model,
    check_site,
    check_vendor,
    enrolment_digest,
    make_batch_id,
    make_endpoint,
    make_enrolment_id,
    make_psk_identity,
    make_serial,
    parse_enrolment_id,
    parse_serial,
)

FUZZ = settings(max_examples=500, deadline=None)
ENROLMENT = re.compile(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}")


def _symbols(eid: str) -> list[str]:
    return list(eid.replace("-", ""))


def _join(symbols: list[str]) -> str:
    text = "".join(symbols)
    return "-".join(text[i : i + 4] for i in range(0, 16, 4))


def test_serial_and_endpoint_follow_rfc_9039_ops() -> None:
    serial = make_serial("L1", 42)
    assert serial == "L1-00000042"
    assert parse_serial(serial) == ("L1", 42)
    assert make_endpoint("00A0C6", serial) == "urn:dev:ops:00A0C6-L1-00000042"
    with pytest.raises(InvalidName):
        make_serial("L1", 0)
    with pytest.raises(InvalidName):
        make_serial("L1", 100_000_000)
    for bad in ("L1-42", "L-1-00000042", "L1_00000042", "", "L1-000000420"):
        with pytest.raises(InvalidName):
            parse_serial(bad)


@pytest.mark.parametrize("model", ["L1", "lock.v2", "A_B", "X" * 16])
def test_valid_models(model: str) -> None:
    assert check_model(model) == model


@pytest.mark.parametrize("model", ["", "L-1", "X" * 17, "L 1", "_L1", "L1/2", "Ü"])
def test_invalid_models(model: str) -> None:
    with pytest.raises(InvalidName, match="model"):
        check_model(model)


def test_vendor_and_site_checks() -> None:
    assert check_vendor("00A0C6") == "00A0C6"
    for bad in ("", "acme-corp", "a b", "x" * 33):
        with pytest.raises(InvalidName):
            check_vendor(bad)
    for good in ("building-a", "campus/building-a", "site:7", "b.2_x~y"):
        assert check_site(good) == good
    for bad in ("", "building a", "building-*", "b?", "[a]", "/root", "x" * 129, "a\nb"):
        with pytest.raises(InvalidName):
            check_site(bad)


def test_batch_ids() -> None:
    assert make_batch_id("L1", 1774279812, b"\xff\xff\xff") == "L1-20260323-153012-ZZZZ"
    assert identifiers.check_batch_id("L1-20260323-153012-ZZZZ")
    with pytest.raises(InvalidName):
        identifiers.check_batch_id("../etc")


def test_psk_identity_is_short_ascii_and_matches_rfc_4648_base32() -> None:
    for _ in range(200):
        raw = os.urandom(10)
        identity = make_psk_identity(raw)
        assert identity == b"bs-" + base64.b32encode(raw).lower()
        assert len(identity) == 19 <= MAX_PSK_IDENTITY_BYTES
        assert identity.isascii() and identity.decode().isprintable()
    with pytest.raises(ValueError):
        make_psk_identity(b"short")


def test_enrolment_ids_are_canonical_and_parse_back() -> None:
    for _ in range(500):
        raw = os.urandom(ENROLMENT_RANDOM_BYTES)
        eid = make_enrolment_id(raw)
        assert ENROLMENT.fullmatch(eid)
        assert parse_enrolment_id(eid) == eid
        # 75 random bits: the first 15 symbols are the top bits of the random bytes in Crockford's alphabet.
        crockford = (
            base64.b32encode(raw).decode().translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET))
        )
        assert eid.replace("-", "")[:15] == crockford[:15]


def test_enrolment_ids_forgive_case_separators_and_look_alikes() -> None:
    eid = make_enrolment_id(bytes(range(10)))
    assert eid == "000G-40R4-0M30-E202"
    for typed in ("000g40r40m30e202", " 000G 40R4 0M30 E202 ", "OOOG-4OR4-OM3O-E2O2", "000G--40R4\t0M30-E202"):
        assert parse_enrolment_id(typed) == eid
    eid1 = make_enrolment_id(bytes.fromhex("08421084210842108421"))  # symbols "1" throughout
    assert parse_enrolment_id(eid1.replace("1", "l").replace("-", "")) == eid1
    assert parse_enrolment_id(eid1.replace("1", "I")) == eid1


def test_every_single_substitution_is_detected() -> None:
    for raw in (bytes(10), bytes(range(10)), os.urandom(10), os.urandom(10)):
        symbols = _symbols(make_enrolment_id(raw))
        for position, replacement in itertools.product(range(16), ALPHABET):
            if symbols[position] == replacement:
                continue
            typo = symbols.copy()
            typo[position] = replacement
            with pytest.raises(EnrolmentIdError, match="check failed"):
                parse_enrolment_id(_join(typo))


def test_every_swap_of_two_different_characters_is_detected() -> None:
    for raw in (bytes(range(10)), os.urandom(10), os.urandom(10)):
        symbols = _symbols(make_enrolment_id(raw))
        for i, j in itertools.combinations(range(16), 2):
            if symbols[i] == symbols[j]:
                continue
            swapped = symbols.copy()
            swapped[i], swapped[j] = swapped[j], swapped[i]
            with pytest.raises(EnrolmentIdError, match="check failed"):
                parse_enrolment_id(_join(swapped))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "16 characters"),
        ("000G-40R4-0M30", "got 12"),
        ("000G-40R4-0M30-E202-0", "got 17"),
        ("000G-40R4-0M30-E20U", "'U' at position 19"),
        ("000G-40R4-0M30-E20!", "'!' at position 19"),
        ("000G-40R4-0M30-E20\x00", "U+0000"),
        ("x" * 200, "far longer"),
    ],
)
def test_enrolment_id_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(EnrolmentIdError, match=re.escape(message)):
        parse_enrolment_id(text)


def test_enrolment_digest_is_of_the_canonical_form() -> None:
    eid = make_enrolment_id(bytes(range(10)))
    assert enrolment_digest(eid) == enrolment_digest(parse_enrolment_id(eid.lower().replace("-", "")))
    assert len(enrolment_digest(eid)) == 32


@FUZZ
@given(st.text(max_size=80))
def test_fuzz_enrolment_id_parser_fails_only_clearly(text: str) -> None:
    try:
        eid = parse_enrolment_id(text)
    except EnrolmentIdError as exc:
        assert str(exc)
    else:
        assert ENROLMENT.fullmatch(eid)


@FUZZ
@given(st.text(alphabet=ALPHABET + "-oilOIL ", min_size=14, max_size=24))
def test_fuzz_near_miss_enrolment_ids(text: str) -> None:
    try:
        eid = parse_enrolment_id(text)
    except EnrolmentIdError as exc:
        assert str(exc)
    else:
        assert parse_enrolment_id(eid) == eid


@FUZZ
@given(st.binary(min_size=10, max_size=10))
def test_fuzz_generated_ids_always_parse(raw: bytes) -> None:
    eid = make_enrolment_id(raw)
    assert parse_enrolment_id(eid) == eid
    assert make_psk_identity(raw).startswith(b"bs-")
