"""The names a device gets at manufacture (issue #7, "Factory side"): serial number, LwM2M Endpoint Client Name,
bootstrap PSK identity and enrolment id, and the checks on the names an operator types (model, vendor, site).

* **Serial number** ``{model}-{sequence:08d}`` (``L1-00000042``): what the label shows and what operators type;
  unique in the device store because the sequence comes from a per-model counter there.
* **Endpoint Client Name** ``urn:dev:ops:{vendor}-{model}-{sequence:08d}``, i.e. ``urn:dev:ops:{vendor}-{serial}``:
  the ``urn:dev:ops:{OUI}-{ProductClass}-{SerialNumber}`` form OMA recommends for LwM2M endpoint names (as Anjay's
  documentation lists them) and RFC 9039 §3.2 defines (organisation and product class without ``-``, the serial
  may contain one). ``vendor`` should be the manufacturer's IEEE OUI in hex; the default is a placeholder.
* **PSK identity** ``bs-`` + 16 lowercase base32 characters (80 random bits): 19 ASCII bytes, inside tinydtls's
  32-byte limit on identities (``DTLS_PSK_MAX_CLIENT_IDENTITY_LEN``; ``shared/reference/library-notes.md`` §0.3,
  §2.2: 33 bytes and more fail). It is random rather than derived from the endpoint name because DTLS 1.2 sends it
  in clear in the ClientKeyExchange: a passive observer learns an opaque value, not the model and serial (the
  endpoint name travels inside the DTLS session). The ``bs-`` prefix keeps bootstrap identities apart from the
  operational identities the bootstrap server writes later (ref. §3b: "MUST use different key pairs").
* **Enrolment id** 15 random symbols (75 bits) of Crockford's base32 alphabet plus one check symbol, printed in
  four groups of four (``7J2V-989J-BDV2-K6GJ``): typed by an installer to claim the device for a site, so it is
  unguessable and forgiving: case and separators are ignored and the look-alikes ``O``/``I``/``L`` read as
  ``0``/``1``/``1``. The check symbol is ``sum(v[i] * a**(i+1))`` over GF(32) (``a`` a root of the primitive
  polynomial x^5 + x^2 + 1), which, unlike Crockford's mod-37 check, needs no symbols outside the alphabet and
  detects *every* single mistyped character and *every* swap of two characters (all weights are distinct and
  non-zero), the errors people make when typing codes.

>>> serial = make_serial("L1", 42); serial
'L1-00000042'
>>> make_endpoint("ostiary", serial)
'urn:dev:ops:ostiary-L1-00000042'
>>> make_psk_identity(bytes(10))
b'bs-aaaaaaaaaaaaaaaa'
>>> eid = make_enrolment_id(bytes(range(10))); eid
'000G-40R4-0M30-E202'
>>> parse_enrolment_id(" 000g 4or4-om3o-e2o2 ") == eid
True
>>> parse_enrolment_id("000G-40R4-0M30-E203")
Traceback (most recent call last):
...
ace_core.lwm2m.identifiers.EnrolmentIdError: enrolment id check failed: a character is mistyped or two are swapped
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime
from typing import Final

from ace_core.errors import WireFormatError

__all__ = [
    "ENDPOINT_PREFIX",
    "ENROLMENT_ID_LENGTH",
    "ENROLMENT_RANDOM_BYTES",
    "IDENTITY_PREFIX",
    "IDENTITY_RANDOM_BYTES",
    "MAX_PSK_IDENTITY_BYTES",
    "MAX_SEQUENCE",
    "PSK_BYTES",
    "EnrolmentIdError",
    "InvalidName",
    "check_batch_id",
    "check_model",
    "check_site",
    "check_vendor",
    "enrolment_digest",
    "make_batch_id",
    "make_endpoint",
    "make_enrolment_id",
    "make_psk_identity",
    "make_serial",
    "parse_enrolment_id",
    "parse_serial",
]

#: Bootstrap PSK length: 128 bits. tinydtls (aiocoap's DTLS) takes at most 16 bytes; a longer PSK is
#: memory-unsafe in DTLSSocket (library-notes §0.3).
PSK_BYTES: Final = 16
#: Longest PSK identity tinydtls accepts without a rebuild (library-notes §0.3, §2.2).
MAX_PSK_IDENTITY_BYTES: Final = 32
IDENTITY_PREFIX: Final = b"bs-"
#: Random bytes behind a PSK identity (80 bits: 16 base32 characters).
IDENTITY_RANDOM_BYTES: Final = 10
#: RFC 9039 §3.2 ``ops`` form, which OMA recommends for LwM2M Endpoint Client Names.
ENDPOINT_PREFIX: Final = "urn:dev:ops:"
#: Random bytes drawn per enrolment id; 75 of their 80 bits are used.
ENROLMENT_RANDOM_BYTES: Final = 10
#: Symbols in an enrolment id, check symbol included (printed as four groups of four).
ENROLMENT_ID_LENGTH: Final = 16
_ENROLMENT_DATA = ENROLMENT_ID_LENGTH - 1
_GROUP = 4
#: Serial sequence numbers have eight digits.
MAX_SEQUENCE: Final = 99_999_999

_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._]{0,15}")
_VENDOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._]{0,31}")
# A site is what the console scopes managers to: an audience or audience prefix (``building-a``,
# ``campus/building-a``); no glob characters, which would make it a pattern, and no spaces.
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~/:-]{0,127}")
_BATCH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SERIAL = re.compile(r"([A-Za-z0-9][A-Za-z0-9._]{0,15})-([0-9]{8})")


class EnrolmentIdError(WireFormatError):
    """Text that is not a valid enrolment id (wrong length, a character outside the alphabet, a failed check)."""


class InvalidName(ValueError):
    """A model, vendor, site or serial number that does not have the allowed form (the message says which)."""


def check_model(model: str) -> str:
    """A model (LwM2M product class): 1-16 letters, digits, ``.`` or ``_``, starting with a letter or digit.

    No ``-``: RFC 9039 §3.2 separates organisation, product class and serial with it.

    :raises InvalidName:
    """
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise InvalidName(f"invalid model {model!r}: 1-16 letters, digits, '.' or '_' (no '-')")
    return model


def check_vendor(vendor: str) -> str:
    """A vendor token for endpoint names (ideally the IEEE OUI in hex): 1-32 letters, digits, ``.`` or ``_``.

    :raises InvalidName:
    """
    if not isinstance(vendor, str) or not _VENDOR.fullmatch(vendor):
        raise InvalidName(f"invalid vendor {vendor!r}: 1-32 letters, digits, '.' or '_' (e.g. an OUI: 00A0C6)")
    return vendor


def check_site(site: str) -> str:
    """A site name: 1-128 characters of ``A-Z a-z 0-9 . _ ~ / : -``, starting with a letter or digit.

    :raises InvalidName:
    """
    if not isinstance(site, str) or not _SITE.fullmatch(site):
        raise InvalidName(f"invalid site {site!r}: 1-128 letters, digits or . _ ~ / : - (no spaces or glob characters)")
    return site


def make_batch_id(model: str, now: int, random: bytes) -> str:
    """A factory batch's id: model, UTC time and four random symbols (``L1-20260323-153012-7K2Q``).

    >>> make_batch_id("L1", 1774279812, bytes(3))
    'L1-20260323-153012-0000'
    """
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
    suffix = base64.b32encode(random.ljust(5, b"\0")[:5]).decode("ascii").translate(_FROM_RFC4648)[:4]
    return f"{model}-{stamp}-{suffix}"


def check_batch_id(batch_id: str) -> str:
    """A batch id as :func:`make_batch_id` makes them (or any 1-64 letters, digits, ``.``, ``_``, ``-``).

    :raises InvalidName:
    """
    if not isinstance(batch_id, str) or not _BATCH.fullmatch(batch_id):
        raise InvalidName(f"invalid batch id {batch_id!r}")
    return batch_id


def make_serial(model: str, sequence: int) -> str:
    """The serial number of the ``sequence``-th device of ``model`` (``L1-00000042``)."""
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise InvalidName(f"serial sequence {sequence} outside 1..{MAX_SEQUENCE}")
    return f"{model}-{sequence:08d}"


def parse_serial(serial: str) -> tuple[str, int]:
    """Model and sequence number of a serial number. :raises InvalidName: not of the form ``MODEL-NNNNNNNN``."""
    found = _SERIAL.fullmatch(serial) if isinstance(serial, str) else None
    if found is None:
        raise InvalidName(f"invalid serial number {serial!r}: expected MODEL-NNNNNNNN, e.g. L1-00000042")
    return found.group(1), int(found.group(2))


def make_endpoint(vendor: str, serial: str) -> str:
    """The LwM2M Endpoint Client Name ``urn:dev:ops:{vendor}-{model}-{sequence}`` (RFC 9039 §3.2)."""
    return f"{ENDPOINT_PREFIX}{vendor}-{serial}"


def make_psk_identity(random: bytes) -> bytes:
    """``bs-`` + base32 (RFC 4648 §6, lowercase) of :data:`IDENTITY_RANDOM_BYTES` random bytes: 19 ASCII bytes."""
    if len(random) != IDENTITY_RANDOM_BYTES:
        raise ValueError(f"a PSK identity takes {IDENTITY_RANDOM_BYTES} random bytes")
    n = int.from_bytes(random, "big")
    p = _RFC4648_PAIRS
    return IDENTITY_PREFIX + (
        p[n >> 70]
        + p[(n >> 60) & 1023]
        + p[(n >> 50) & 1023]
        + p[(n >> 40) & 1023]
        + p[(n >> 30) & 1023]
        + p[(n >> 20) & 1023]
        + p[(n >> 10) & 1023]
        + p[n & 1023]
    ).encode("ascii")


# --- enrolment ids --------------------------------------------------------------------------------------------

#: Crockford's base32 alphabet: digits and letters without I, L, O and U.
ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
# Crockford's decoding: case-insensitive; O reads as 0, I and L as 1.
_VALUE.update({c.lower(): i for c, i in list(_VALUE.items())})
_VALUE.update({"O": 0, "o": 0, "I": 1, "i": 1, "L": 1, "l": 1})
_SEPARATORS = frozenset(" -\t")
# RFC 4648 base32 -> Crockford (same 5-bit values, other symbols), for generating ids with base64.b32encode.
_FROM_RFC4648 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ALPHABET)


def _gf32_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Powers and logarithms in GF(32) = GF(2)[x] / (x^5 + x^2 + 1); ``a = x`` generates the 31 non-zero elements."""
    exp = [0] * 31
    value = 1
    for i in range(31):
        exp[i] = value
        value <<= 1
        if value & 0b100000:
            value ^= 0b100101
    log = [0] * 32
    for i, v in enumerate(exp):
        log[v] = i
    return tuple(exp), tuple(log)


_EXP, _LOG = _gf32_tables()
# _WEIGHTED[i][v] = v * a**(i+1): data symbol i's contribution to the check; the check symbol has weight a**0 = 1.
_WEIGHTED: Final = tuple(
    tuple(0 if v == 0 else _EXP[(_LOG[v] + i + 1) % 31] for v in range(32)) for i in range(_ENROLMENT_DATA)
)


# The factory makes an identity and an enrolment id per device: base64.b32encode is pure Python and a check computed
# symbol by symbol is a loop, so both look up 10-bit groups (two symbols) at once -- their text and their
# contribution to the check -- which took an enrolment id from 8.6 to 2.4 microseconds.
_RFC4648_PAIRS: Final = tuple(
    a + b for a in "abcdefghijklmnopqrstuvwxyz234567" for b in "abcdefghijklmnopqrstuvwxyz234567"
)
_PAIRS: Final = tuple(a + b for a in ALPHABET for b in ALPHABET)
_PAIR_CHECK: Final = tuple(
    tuple(_WEIGHTED[2 * k][v >> 5] ^ _WEIGHTED[2 * k + 1][v & 31] for v in range(1024)) for k in range(7)
)


def _check_value(values: list[int]) -> int:
    check = 0
    for weights, v in zip(_WEIGHTED, values, strict=True):
        check ^= weights[v]
    return check


def _group(symbols: str) -> str:
    return "-".join(symbols[i : i + _GROUP] for i in range(0, len(symbols), _GROUP))


def make_enrolment_id(random: bytes) -> str:
    """An enrolment id from :data:`ENROLMENT_RANDOM_BYTES` random bytes (the first 75 bits), in canonical form."""
    if len(random) != ENROLMENT_RANDOM_BYTES:
        raise ValueError(f"an enrolment id takes {ENROLMENT_RANDOM_BYTES} random bytes")
    n = int.from_bytes(random, "big") >> 5  # 75 bits: symbols 0-13 as seven 10-bit pairs, then symbol 14
    g0, g1, g2, g3 = n >> 65, (n >> 55) & 1023, (n >> 45) & 1023, (n >> 35) & 1023
    g4, g5, g6, last = (n >> 25) & 1023, (n >> 15) & 1023, (n >> 5) & 1023, n & 31
    t = _PAIR_CHECK
    check = t[0][g0] ^ t[1][g1] ^ t[2][g2] ^ t[3][g3] ^ t[4][g4] ^ t[5][g5] ^ t[6][g6] ^ _WEIGHTED[14][last]
    p = _PAIRS
    a, b, c, d, e, f, g = p[g0], p[g1], p[g2], p[g3], p[g4], p[g5], p[g6]
    return f"{a}{b}-{c}{d}-{e}{f}-{g}{ALPHABET[last]}{ALPHABET[check]}"


def parse_enrolment_id(text: str) -> str:
    """The canonical form (``XXXX-XXXX-XXXX-XXXX``, upper case) of an enrolment id as typed.

    Spaces, tabs and hyphens anywhere are ignored, as are case and the look-alikes O, I and L.

    :raises EnrolmentIdError: with a message saying what is wrong (never the whole input).
    """
    if not isinstance(text, str):
        raise EnrolmentIdError("an enrolment id is text")
    if len(text) > 4 * ENROLMENT_ID_LENGTH:
        raise EnrolmentIdError(f"an enrolment id has {ENROLMENT_ID_LENGTH} characters; this is far longer")
    values: list[int] = []
    for position, char in enumerate(text, 1):
        if char in _SEPARATORS:
            continue
        value = _VALUE.get(char)
        if value is None:
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise EnrolmentIdError(f"character {shown} at position {position} is not used in enrolment ids")
        values.append(value)
    if len(values) != ENROLMENT_ID_LENGTH:
        raise EnrolmentIdError(
            f"an enrolment id has {ENROLMENT_ID_LENGTH} characters (four groups of four); got {len(values)}"
        )
    if _check_value(values[:-1]) != values[-1]:
        raise EnrolmentIdError("enrolment id check failed: a character is mistyped or two are swapped")
    return _group("".join(ALPHABET[v] for v in values))


def enrolment_digest(enrolment_id: str) -> bytes:
    """What a device store keeps instead of the enrolment id: SHA-256 over a context string and the canonical id.

    An enrolment id claims a device, so the store keeps only this hash (as the AS keeps client secrets,
    :func:`as_server.sealing.hash_secret`); 75 random bits need no salt or slow hash.
    """
    return hashlib.sha256(b"ostiary enrolment id\x00" + enrolment_id.encode("ascii")).digest()
