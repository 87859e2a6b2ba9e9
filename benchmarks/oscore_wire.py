"""Hand-written OSCORE (RFC 8613) for the raw-UDP load generator: protect requests, unprotect their responses.

The load generator (:mod:`benchmarks.coap_load`) must send OSCORE requests faster than a CoAP library can protect
them, so it protects them ahead of time with this module (a few microseconds each: one AES-CCM call and some byte
concatenation) and patches only the outer Message ID and Token per send -- neither is covered by OSCORE. It
implements exactly what the load needs, and ``tests/test_bench_rs_helpers.py`` checks it byte for byte against
aiocoap's ``oscore`` module:

* the client role of a security context with AES-CCM-16-64-128 (the RFC 8613 §3.2 default, and what RFC 9203
  derives unless the token names another ``alg``);
* requests (RFC 8613 §8.1): inner code and Class E options encrypted, outer code POST, OSCORE option
  ``flags | Partial IV | [s | kid context] | kid`` (§6.1);
* responses (§8.4): decrypted with the Recipient Key and either the request's nonce (no Partial IV in the
  response, the usual case) or a nonce from the response's own Partial IV.

External AAD (§5.4): ``[oscore_version=1, [alg_aead], request_kid, request_piv, options=h'']`` wrapped in the
COSE ``Enc_structure`` ``["Encrypt0", h'', external_aad]``; nonce (§5.2): ``(len(ID_PIV) || pad(ID_PIV) ||
pad(PIV)) XOR Common IV``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESCCM

__all__ = [
    "AES_CCM_16_64_128",
    "ClientContext",
    "OscoreError",
    "ProtectedRequest",
    "option_value",
    "partial_iv",
]

#: COSE algorithm value of AES-CCM-16-64-128 (RFC 9053 §4.2): 16-byte key, 13-byte nonce, 8-byte tag.
AES_CCM_16_64_128 = 10
NONCE_LENGTH = 13
TAG_LENGTH = 8
KEY_LENGTH = 16
#: RFC 8613 §6.1 flag bits of the first byte of the OSCORE option.
FLAG_KID = 0x08
FLAG_KID_CONTEXT = 0x10
PIV_LENGTH_MASK = 0x07
#: Outer code of every non-Observe OSCORE request (RFC 8613 §4.2): POST (0.02).
OUTER_CODE_POST = 0x02
PAYLOAD_MARKER = 0xFF


class OscoreError(ValueError):
    """A response that does not unprotect (bad option, wrong key, tampered ciphertext)."""


def _head(major: int, n: int) -> bytes:
    """A CBOR head (RFC 8949 §3) for lengths below 2**16 (enough for ids, nonces and AADs)."""
    if n < 24:
        return bytes([major << 5 | n])
    if n < 256:
        return bytes([major << 5 | 24, n])
    return bytes([major << 5 | 25]) + n.to_bytes(2, "big")


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


def partial_iv(sequence_number: int) -> bytes:
    """The Partial IV of a Sender Sequence Number: big-endian, no leading zeros, one byte for 0 (RFC 8613 §6.1)."""
    if not 0 <= sequence_number < 1 << 40:
        raise ValueError("sequence number out of range (RFC 8613 §7.2.1: at most 2**40 - 1)")
    return sequence_number.to_bytes(5, "big").lstrip(b"\0") or b"\0"


def option_value(piv: bytes, kid: bytes, kid_context: bytes | None) -> bytes:
    """The OSCORE option value of a request (RFC 8613 §6.1)."""
    flags = len(piv) | FLAG_KID
    context = b""
    if kid_context is not None:
        if len(kid_context) > 255:
            raise ValueError("kid context longer than 255 bytes")
        flags |= FLAG_KID_CONTEXT
        context = bytes([len(kid_context)]) + kid_context
    return bytes([flags]) + piv + context + kid


@dataclass(frozen=True, slots=True)
class ProtectedRequest:
    """One protected request: the OSCORE option value and payload to send, and what its response needs."""

    sequence_number: int
    option: bytes
    ciphertext: bytes
    nonce: bytes = field(repr=False)
    aad: bytes = field(repr=False)


@dataclass(slots=True)
class ClientContext:
    """The client side of an OSCORE security context (RFC 8613 §3), keys already derived.

    :param sender_id: the client's Sender ID (the ``kid`` of its requests; ID2 in RFC 9203 terms).
    :param recipient_id: the client's Recipient ID (the server's Sender ID; ID1).
    :param id_context: the ID Context, sent as ``kid context`` in every request when not ``None``.
    """

    sender_id: bytes
    recipient_id: bytes
    sender_key: bytes = field(repr=False)
    recipient_key: bytes = field(repr=False)
    common_iv: bytes = field(repr=False)
    id_context: bytes | None = None
    alg: int = AES_CCM_16_64_128
    _seal: Any = field(init=False, repr=False, compare=False, default=None)
    _open: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.alg != AES_CCM_16_64_128:
            raise ValueError(f"only AES-CCM-16-64-128 (10) is implemented, not {self.alg}")
        if len(self.sender_key) != KEY_LENGTH or len(self.recipient_key) != KEY_LENGTH:
            raise ValueError("AES-CCM-16-64-128 keys are 16 bytes")
        if len(self.common_iv) != NONCE_LENGTH:
            raise ValueError("the Common IV of AES-CCM-16-64-128 is 13 bytes")
        for ident in (self.sender_id, self.recipient_id):
            if len(ident) > NONCE_LENGTH - 6:
                raise ValueError("Sender/Recipient IDs are at most 7 bytes with a 13-byte nonce (RFC 8613 §3.3)")
        self._seal = AESCCM(self.sender_key, tag_length=TAG_LENGTH)
        self._open = AESCCM(self.recipient_key, tag_length=TAG_LENGTH)

    @classmethod
    def from_params(cls, params: Any) -> ClientContext:
        """From :class:`ace_core.oscore.OscoreContextParameters` of the client role (keys derived there)."""
        return cls(
            sender_id=params.sender_id,
            recipient_id=params.recipient_id,
            sender_key=params.sender_key(),
            recipient_key=params.recipient_key(),
            common_iv=params.common_iv(),
            id_context=params.id_context,
            alg=int(params.aead_alg),
        )

    def to_json(self) -> dict[str, Any]:
        """Hex fields, for handing the context to a load-generator process."""
        return {
            "sender_id": self.sender_id.hex(),
            "recipient_id": self.recipient_id.hex(),
            "sender_key": self.sender_key.hex(),
            "recipient_key": self.recipient_key.hex(),
            "common_iv": self.common_iv.hex(),
            "id_context": None if self.id_context is None else self.id_context.hex(),
            "alg": self.alg,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ClientContext:
        """The inverse of :meth:`to_json`."""
        context = doc.get("id_context")
        return cls(
            sender_id=bytes.fromhex(doc["sender_id"]),
            recipient_id=bytes.fromhex(doc["recipient_id"]),
            sender_key=bytes.fromhex(doc["sender_key"]),
            recipient_key=bytes.fromhex(doc["recipient_key"]),
            common_iv=bytes.fromhex(doc["common_iv"]),
            id_context=None if context is None else bytes.fromhex(context),
            alg=int(doc.get("alg", AES_CCM_16_64_128)),
        )

    def nonce(self, id_piv: bytes, piv: bytes) -> bytes:
        """The AEAD nonce (RFC 8613 §5.2)."""
        components = bytes([len(id_piv)]) + bytes(NONCE_LENGTH - 6 - len(id_piv)) + id_piv + bytes(5 - len(piv)) + piv
        return bytes(a ^ b for a, b in zip(components, self.common_iv, strict=True))

    def aad(self, request_kid: bytes, request_piv: bytes) -> bytes:
        """``Enc_structure`` with the external AAD of a request and of its responses (RFC 8613 §5.4)."""
        external = b"\x85\x01" + bytes([0x81, self.alg]) + _bstr(request_kid) + _bstr(request_piv) + b"\x40"
        return b"\x83\x68Encrypt0\x40" + _bstr(external)

    def protect_request(
        self, sequence_number: int, code: int, inner_options: bytes, payload: bytes = b""
    ) -> ProtectedRequest:
        """Protect a request with this Sender Sequence Number.

        :param code: the inner (real) request code, e.g. 3 for PUT.
        :param inner_options: the encoded Class E options (RFC 7252 §3.1 encoding, e.g. Uri-Path).
        """
        piv = partial_iv(sequence_number)
        nonce = self.nonce(self.sender_id, piv)
        aad = self.aad(self.sender_id, piv)
        plaintext = bytes([code]) + inner_options
        if payload:
            plaintext += bytes([PAYLOAD_MARKER]) + payload
        ciphertext = self._seal.encrypt(nonce, plaintext, aad)
        return ProtectedRequest(
            sequence_number, option_value(piv, self.sender_id, self.id_context), ciphertext, nonce, aad
        )

    def unprotect_response(self, request: ProtectedRequest, option: bytes | None, ciphertext: bytes) -> bytes:
        """The plaintext of a protected response to ``request``: inner code, options and payload (§8.4).

        :param option: the response's OSCORE option value (``b""`` when it carries nothing), ``None`` if absent.
        :raises OscoreError: not a protected response, or it does not decrypt.
        """
        if option is None:
            raise OscoreError("no OSCORE option: the response is not protected")
        nonce = request.nonce
        if option:
            flags = option[0]
            n = flags & PIV_LENGTH_MASK
            if n:
                nonce = self.nonce(self.recipient_id, option[1 : 1 + n])
        try:
            return bytes(self._open.decrypt(nonce, ciphertext, request.aad))
        except Exception as exc:  # cryptography's InvalidTag, or a ciphertext shorter than the tag
            raise OscoreError("response does not decrypt") from exc
