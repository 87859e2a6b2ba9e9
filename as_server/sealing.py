"""Key material at rest and client secrets.

* :class:`MasterKey` seals key material with AES-256-GCM (an envelope: version byte, master-key id, nonce,
  ciphertext) before a storage backend writes it; the associated data binds each blob to its record, so a blob
  copied into another row does not open. The master key lives in ``$OSTIARY_HOME/master.key`` (mode 0600) or in
  ``OSTIARY_MASTER_KEY`` (base64url of 32 bytes).
* Client secrets are generated with 256 bits of entropy and stored only as a hash (:func:`hash_secret`); they are
  compared in constant time (:func:`secret_matches`). A salted slow hash would add nothing for 256-bit random
  secrets and would cap the token endpoint's throughput.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ace_core.keys import b64url_decode, b64url_encode

__all__ = ["MasterKey", "SealingError", "generate_secret", "hash_secret", "secret_matches"]

_VERSION = b"\x01"
_SECRET_CONTEXT = b"ostiary client secret v1\x00"


class SealingError(Exception):
    """A sealed blob could not be opened (wrong master key, tampering, or wrong record)."""


class MasterKey:
    """The AES-256-GCM key that encrypts every stored key (never logged, never in ``repr``)."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(b"ostiary master key id\x00" + key).digest()[:4]

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id.hex()})"

    @classmethod
    def generate(cls) -> tuple[MasterKey, bytes]:
        """A fresh key and its 32 raw bytes."""
        raw = secrets.token_bytes(32)
        return cls(raw), raw

    @classmethod
    def load(cls, path: Path, *, env: dict[str, str] | None = None) -> MasterKey:
        """From ``OSTIARY_MASTER_KEY`` (base64url) if set, else from the key file.

        :raises FileNotFoundError: neither is available (run ``ostiary as init``).
        :raises PermissionError: the key file is readable by group or others.
        """
        env = dict(os.environ) if env is None else env
        if env.get("OSTIARY_MASTER_KEY"):
            return cls(b64url_decode(env["OSTIARY_MASTER_KEY"].strip()))
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(f"{path} must not be accessible by group or others (chmod 600)")
        return cls(b64url_decode(path.read_text().strip()))

    @classmethod
    def create_file(cls, path: Path) -> MasterKey:
        """Create a new key file with mode 0600 (refuses to overwrite an existing one)."""
        key, raw = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(b64url_encode(raw) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return key

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``aad`` (e.g. the record's table and primary key)."""
        nonce = secrets.token_bytes(12)
        return _VERSION + self.key_id + nonce + self._aead.encrypt(nonce, plaintext, _VERSION + aad)

    def open(self, blob: bytes, *, aad: bytes) -> bytes:
        """Inverse of :meth:`seal`. :raises SealingError:"""
        if len(blob) < 1 + 4 + 12 + 16 or blob[:1] != _VERSION:
            raise SealingError("not a sealed blob")
        if blob[1:5] != self.key_id:
            raise SealingError("sealed under another master key")
        try:
            return self._aead.decrypt(blob[5:17], blob[17:], _VERSION + aad)
        except InvalidTag as exc:
            raise SealingError("sealed blob does not open") from exc


def generate_secret() -> str:
    """A new client secret: 256 random bits as base64url text (what the client sends, as text or UTF-8 bytes)."""
    return b64url_encode(secrets.token_bytes(32))


def hash_secret(secret: bytes | str) -> bytes:
    """The stored form of a client secret: SHA-256 over a context string and the secret's bytes."""
    data = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(_SECRET_CONTEXT + data).digest()


def secret_matches(secret: bytes | str, stored_hash: bytes) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), stored_hash)
