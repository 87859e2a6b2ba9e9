"""Factory credential bundles: what one device needs to reach the bootstrap server, sealed for the trip from the
factory batch to the flashing station (issue #7, "Factory side").

**Contents** (:class:`DeviceBundle`, a CBOR map with the integer labels of :class:`BundleLabel`): the LwM2M
Endpoint Client Name, serial number, model, bootstrap PSK identity and PSK, the bootstrap server's URI and,
if the operator gave one, the AS's token-signing public key as a COSE_Key (RFC 9052 §7). These are the values a
standard LwM2M client keeps in its bootstrap account, ``/0/{bs}``: URI in resource 0, Security Mode 0 (PSK) in
2, identity in 3, PSK in 5 (ref. §2.1, §3b). Unknown labels are kept in ``extra`` and round-trip.

**Protection.** A batch gets a fresh AES-256-GCM *bundle key*; every bundle is sealed under it with a random
96-bit nonce and with the file's clear header as associated data (the same envelope construction as
:class:`~as_server.sealing.MasterKey`):

.. code-block:: text

    "OSTB" | 0x01 | key id (4) | len | batch id | len | serial | nonce (12) | AES-256-GCM(CBOR map) + tag (16)
    \\_________________ associated data ________________________/

The key id is the first four bytes of SHA-256 over a context string and the key, so the wrong key is reported as
such; the batch id and serial in the header are bound by the tag, so a header cannot be edited to pass one
device's bundle off as another's, and the serial inside must equal the one outside. Why not the master key:
every flashing station would then hold the key that opens every secret in the AS's database. Instead the bundle
key is written twice: sealed under the master key in the device store (so ``ostiary factory show-bundle`` works on
the AS host without a key file), and in clear, mode 0600, to the batch's key file for the flashing station --
the protection the master key itself has at rest (``master.key``, mode 0600). The bundles and the manifests can
then travel to the line, be copied and backed up without exposing a PSK; only the one key file must be guarded,
and destroyed with the bundles once the batch is flashed (without it the bundles are noise).

**Decrypting on the line** (any language with AES-GCM): take the member ``SERIAL.bundle`` from the batch's
``bundles.zip`` (:mod:`.archive`; any ZIP tool); read the key file's base64url line (32 bytes); split the bundle
after the header (its lengths are single bytes); AES-256-GCM-decrypt the rest with the 12-byte nonce that follows
the header and the header as associated data; decode the CBOR map. ``ostiary factory show-bundle bundles.zip
--serial SERIAL --key KEYFILE [--json]`` does exactly that, and prints what to flash.

>>> key, raw = BundleKey.generate()
>>> bundle = DeviceBundle(endpoint="urn:dev:ops:ostiary-L1-00000001", serial="L1-00000001", model="L1",
...                       psk_identity=b"bs-aaaaaaaaaaaaaaaa", psk=bytes(16), bootstrap_uri="coaps://bs.example")
>>> blob = key.seal(bundle, batch_id="L1-20260323-153012-0000")
>>> peek_header(blob).serial
'L1-00000001'
>>> key.open(blob) == bundle
True
>>> key.open(blob[:-1] + bytes([blob[-1] ^ 1]))
Traceback (most recent call last):
...
ace_core.lwm2m.bundle.BundleError: the bundle does not open: it was altered, or sealed under another key
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.keys import b64url_decode, b64url_encode, is_int
from ace_core.lwm2m.identifiers import MAX_PSK_IDENTITY_BYTES, PSK_BYTES

__all__ = [
    "MAGIC",
    "MAX_BUNDLE_SIZE",
    "BundleError",
    "BundleHeader",
    "BundleKey",
    "BundleLabel",
    "BundleTemplate",
    "DeviceBundle",
    "format_key_file",
    "parse_key_file",
    "peek_header",
]

MAGIC: Final = b"OSTB"
_VERSION: Final = 1
_KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY_ID_CONTEXT = b"ostiary bundle key id\x00"
#: Larger files are refused before parsing (a bundle is about 200 bytes; a COSE_Key adds about 50).
MAX_BUNDLE_SIZE: Final = 4096
# Security /0 resource 0 is a String of 0..255 bytes (ref. §2.1); Endpoint Client Names arrive in a Uri-Query
# option of at most 255 bytes, 252 after "ep=" (ace_core.lwm2m.messages).
_MAX_URI_BYTES = 255
_MAX_ENDPOINT_BYTES = 252
_MAX_NAME_BYTES = 255


class BundleError(WireFormatError):
    """A bundle or bundle-key file is malformed, or a bundle does not open (wrong key or altered)."""


class BundleLabel(IntEnum):
    """CBOR map labels of a :class:`DeviceBundle` (this format's own numbering, not an IANA registry)."""

    ENDPOINT = 1
    SERIAL = 2
    MODEL = 3
    PSK_IDENTITY = 4
    PSK = 5
    BOOTSTRAP_URI = 6
    AS_PUBLIC_KEY = 7


_L = BundleLabel


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceBundle:
    """The factory credentials of one device (see the module documentation). ``psk`` never appears in ``repr``."""

    endpoint: str
    serial: str
    model: str
    psk_identity: bytes
    psk: bytes = field(repr=False)
    bootstrap_uri: str
    #: The AS's token-signing public key, a CBOR COSE_Key, if the batch was given one.
    as_public_key: bytes | None = None
    #: Labels this version does not know, kept so that they round-trip.
    extra: Mapping[int, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        _text(self.endpoint, "endpoint", _MAX_ENDPOINT_BYTES)
        _text(self.serial, "serial", _MAX_NAME_BYTES)
        _text(self.model, "model", _MAX_NAME_BYTES)
        _text(self.bootstrap_uri, "bootstrap_uri", _MAX_URI_BYTES)
        if not isinstance(self.psk_identity, bytes) or not 1 <= len(self.psk_identity) <= MAX_PSK_IDENTITY_BYTES:
            raise BundleError(f"psk_identity must be 1-{MAX_PSK_IDENTITY_BYTES} bytes")
        if not isinstance(self.psk, bytes) or len(self.psk) != PSK_BYTES:
            raise BundleError(f"psk must be {PSK_BYTES} bytes")
        if self.as_public_key is not None and (not isinstance(self.as_public_key, bytes) or not self.as_public_key):
            raise BundleError("as_public_key must be a non-empty CBOR COSE_Key")
        if any(not is_int(label) or label in _KNOWN for label in self.extra):
            raise BundleError("extra labels must be integers this format does not define")

    def to_cbor(self) -> bytes:
        """The CBOR map, labels ascending, unknown labels after the known ones."""
        items: dict[int, Any] = {
            _L.ENDPOINT: self.endpoint,
            _L.SERIAL: self.serial,
            _L.MODEL: self.model,
            _L.PSK_IDENTITY: self.psk_identity,
            _L.PSK: self.psk,
            _L.BOOTSTRAP_URI: self.bootstrap_uri,
        }
        if self.as_public_key is not None:
            items[_L.AS_PUBLIC_KEY] = self.as_public_key
        for label in sorted(self.extra):
            items[int(label)] = self.extra[label]
        return cbor.dumps({int(k): v for k, v in items.items()})

    @classmethod
    def from_cbor(cls, data: bytes) -> DeviceBundle:
        """Decode :meth:`to_cbor`'s output. :raises BundleError: malformed CBOR, missing or mistyped fields."""
        try:
            obj = cbor.loads(data, max_size=MAX_BUNDLE_SIZE)
        except WireFormatError as exc:
            raise BundleError(f"bundle content is not CBOR: {exc}") from None
        if not isinstance(obj, dict) or any(not is_int(k) for k in obj):
            raise BundleError("bundle content is not a CBOR map with integer labels")
        try:
            return cls(
                endpoint=_field(obj, _L.ENDPOINT, str),
                serial=_field(obj, _L.SERIAL, str),
                model=_field(obj, _L.MODEL, str),
                psk_identity=_field(obj, _L.PSK_IDENTITY, bytes),
                psk=_field(obj, _L.PSK, bytes),
                bootstrap_uri=_field(obj, _L.BOOTSTRAP_URI, str),
                as_public_key=_field(obj, _L.AS_PUBLIC_KEY, bytes, required=False),
                extra={k: v for k, v in obj.items() if k not in _KNOWN},
            )
        except TypeError as exc:  # e.g. an unhashable value cbor2 produced for a key we do not use
            raise BundleError(f"bundle content is malformed: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """What a flashing station needs, as JSON: the PSK and binary values in hex (as Anjay's ``--key`` and
        Wakaama's ``-s`` take them), the identity also as text when it is printable ASCII."""
        identity_text = self.psk_identity.decode("ascii") if _printable(self.psk_identity) else None
        return {
            "endpoint": self.endpoint,
            "serial": self.serial,
            "model": self.model,
            "psk_identity": identity_text,
            "psk_identity_hex": self.psk_identity.hex(),
            "psk_hex": self.psk.hex(),
            "bootstrap_uri": self.bootstrap_uri,
            "as_public_key_hex": None if self.as_public_key is None else self.as_public_key.hex(),
        }


_KNOWN = frozenset(int(label) for label in BundleLabel)


class BundleTemplate:
    """Encodes many bundles that share model, bootstrap URI and AS key (a factory batch) without building a
    :class:`DeviceBundle` each: the shared fields are checked and encoded once, the rest is concatenated. The
    bytes are exactly :meth:`DeviceBundle.to_cbor`'s for the same values.

    The per-device values must come from :mod:`.identifiers` (endpoint names and serial numbers of checked
    models and vendors); only the PSK and identity lengths are checked here.
    """

    __slots__ = ("_head", "_model", "_tail")

    def __init__(self, *, model: str, bootstrap_uri: str, as_public_key: bytes | None = None) -> None:
        DeviceBundle(  # validates the shared fields
            endpoint="-",
            serial="-",
            model=model,
            psk_identity=b"-",
            psk=bytes(PSK_BYTES),
            bootstrap_uri=bootstrap_uri,
            as_public_key=as_public_key,
        )
        self._head = cbor.head(5, 6 if as_public_key is None else 7)
        self._model = bytes((_L.MODEL,)) + cbor.tstr(model)
        self._tail = bytes((_L.BOOTSTRAP_URI,)) + cbor.tstr(bootstrap_uri)
        if as_public_key is not None:
            self._tail += bytes((_L.AS_PUBLIC_KEY,)) + cbor.bstr(as_public_key)

    def encode(self, *, endpoint: str, serial: str, psk_identity: bytes, psk: bytes) -> bytes:
        """The CBOR of one device's bundle."""
        if len(psk) != PSK_BYTES or not 0 < len(psk_identity) <= MAX_PSK_IDENTITY_BYTES:
            raise BundleError("PSK or PSK identity of the wrong length")
        return b"".join(
            (
                self._head,
                b"\x01",
                cbor.tstr(endpoint),
                b"\x02",
                cbor.tstr(serial),
                self._model,
                b"\x04",
                cbor.bstr(psk_identity),
                b"\x05",
                cbor.bstr(psk),
                self._tail,
            )
        )


_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _text(value: object, name: str, limit: int) -> None:
    if not isinstance(value, str) or not value or len(value.encode("utf-8", "surrogatepass")) > limit:
        raise BundleError(f"{name} must be non-empty text of at most {limit} bytes")
    if _CONTROL.search(value):
        raise BundleError(f"{name} contains a control character")


def _field(obj: dict[Any, Any], label: BundleLabel, kind: type, *, required: bool = True) -> Any:
    if label not in obj:
        if required:
            raise BundleError(f"bundle lacks {label.name.lower()} (label {int(label)})")
        return None
    value = obj[label]
    if not isinstance(value, kind):
        raise BundleError(f"bundle {label.name.lower()} (label {int(label)}) must be {kind.__name__}")
    return value


def _printable(data: bytes) -> bool:
    return data.isascii() and data.decode("ascii").isprintable()


@dataclass(frozen=True, slots=True)
class BundleHeader:
    """The clear part of a sealed bundle: which key, which batch, which device."""

    key_id: bytes
    batch_id: str
    serial: str
    #: Length of the header in bytes (the associated data).
    size: int


def _short_text(blob: bytes, offset: int, what: str) -> tuple[str, int]:
    if offset >= len(blob):
        raise BundleError(f"bundle header truncated before the {what}")
    n = blob[offset]
    end = offset + 1 + n
    if n == 0 or end > len(blob):
        raise BundleError(f"bundle header has an empty or truncated {what}")
    try:
        text = blob[offset + 1 : end].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"bundle header {what} is not UTF-8") from None
    return text, end


def peek_header(blob: bytes) -> BundleHeader:
    """The clear header of a sealed bundle, without opening it. :raises BundleError: not a bundle file."""
    if not isinstance(blob, bytes | bytearray):
        raise BundleError("a bundle is bytes")
    blob = bytes(blob)
    if len(blob) > MAX_BUNDLE_SIZE:
        raise BundleError(f"larger than {MAX_BUNDLE_SIZE} bytes: not a bundle")
    if blob[:4] != MAGIC:
        raise BundleError("not an Ostiary bundle (no OSTB signature)")
    if len(blob) < 5 or blob[4] != _VERSION:
        raise BundleError("unsupported bundle version")
    key_id = blob[5:9]
    if len(key_id) != 4:
        raise BundleError("bundle header truncated")
    batch_id, offset = _short_text(blob, 9, "batch id")
    serial, offset = _short_text(blob, offset, "serial")
    if len(blob) < offset + _NONCE_BYTES + _TAG_BYTES:
        raise BundleError("bundle truncated")
    return BundleHeader(key_id, batch_id, serial, offset)


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(_KEY_ID_CONTEXT + key).digest()[:4]


class BundleKey:
    """A batch's AES-256-GCM bundle key (never in ``repr``)."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
            raise ValueError(f"a bundle key is {_KEY_BYTES} bytes")
        self._aead = AESGCM(key)
        self.key_id = _key_id(key)

    def __repr__(self) -> str:
        return f"BundleKey(key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls, random: Callable[[int], bytes] = secrets.token_bytes) -> tuple[BundleKey, bytes]:
        """A fresh key and its 32 raw bytes (to seal into the store and to write to the key file)."""
        raw = random(_KEY_BYTES)
        return cls(raw), raw

    def header(self, *, batch_id: str, serial: str) -> bytes:
        """The clear header (and associated data) of a bundle for ``serial`` in ``batch_id``."""
        b, s = batch_id.encode("utf-8"), serial.encode("utf-8")
        if not 0 < len(b) < 256 or not 0 < len(s) < 256:
            raise BundleError("batch id and serial must be 1-255 bytes")
        return MAGIC + bytes((_VERSION,)) + self.key_id + bytes((len(b),)) + b + bytes((len(s),)) + s

    def seal(self, bundle: DeviceBundle, *, batch_id: str, nonce: bytes | None = None) -> bytes:
        """The sealed bundle file's bytes. ``nonce`` is for tests; by default 12 fresh random bytes."""
        return self.seal_plaintext(
            bundle.to_cbor(), header=self.header(batch_id=batch_id, serial=bundle.serial), nonce=nonce
        )

    def seal_plaintext(self, plaintext: bytes, *, header: bytes, nonce: bytes | None = None) -> bytes:
        """Seal an encoded bundle under a header from :meth:`header` (the factory's fast path)."""
        nonce = secrets.token_bytes(_NONCE_BYTES) if nonce is None else nonce
        if len(nonce) != _NONCE_BYTES:
            raise ValueError(f"the nonce is {_NONCE_BYTES} bytes")
        return header + nonce + self._aead.encrypt(nonce, plaintext, header)

    def sealer(self, batch_id: str) -> Callable[[str, bytes], bytes]:
        """``seal(serial, plaintext)`` for many bundles of one batch: :meth:`seal_plaintext` with the header's
        constant part built once (the factory's fast path)."""
        prefix = self.header(batch_id=batch_id, serial="-")[:-2]
        encrypt, token = self._aead.encrypt, secrets.token_bytes

        def seal(serial: str, plaintext: bytes) -> bytes:
            raw = serial.encode("utf-8")
            if not 0 < len(raw) < 256:
                raise BundleError("a serial is 1-255 bytes")
            header = prefix + bytes((len(raw),)) + raw
            nonce = token(_NONCE_BYTES)
            return header + nonce + encrypt(nonce, plaintext, header)

        return seal

    def open(self, blob: bytes) -> DeviceBundle:
        """Verify and decrypt a sealed bundle.

        :raises BundleError: not a bundle, sealed under another key, altered, or its content is malformed.
        """
        head = peek_header(blob)
        if head.key_id != self.key_id:
            raise BundleError(f"the bundle was sealed under another bundle key (batch {head.batch_id})")
        nonce = bytes(blob[head.size : head.size + _NONCE_BYTES])
        try:
            plaintext = self._aead.decrypt(nonce, bytes(blob[head.size + _NONCE_BYTES :]), bytes(blob[: head.size]))
        except InvalidTag:
            raise BundleError("the bundle does not open: it was altered, or sealed under another key") from None
        bundle = DeviceBundle.from_cbor(plaintext)
        if bundle.serial != head.serial:
            raise BundleError("the bundle's header and content name different serial numbers")
        return bundle


def format_key_file(key: bytes, *, batch_id: str) -> str:
    """The text of a batch's key file: a comment line naming the batch, then the key in base64url."""
    return (
        f"# Ostiary factory bundle key (AES-256-GCM) of batch {batch_id}: opens every bundle of the batch.\n"
        "# Keep it apart from the bundles; destroy it with them once the batch is flashed.\n"
        f"{b64url_encode(key)}\n"
    )


def parse_key_file(text: str) -> bytes:
    """The 32-byte key in a key file (lines starting with ``#`` and blank lines are ignored).

    :raises BundleError: no key line, several, or not base64url of 32 bytes (the message never quotes it).
    """
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if len(keys) != 1:
        raise BundleError("a bundle key file holds exactly one key line (base64url of 32 bytes)")
    try:
        key = b64url_decode(keys[0])
    except WireFormatError:
        raise BundleError("the bundle key is not base64url") from None
    if len(key) != _KEY_BYTES:
        raise BundleError(f"a bundle key is {_KEY_BYTES} bytes")
    return key
