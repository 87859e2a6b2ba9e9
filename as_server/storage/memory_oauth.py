"""The memory backend of :class:`~as_server.storage.base.AuthorizationCodeStore` and
:class:`~as_server.storage.base.RefreshTokenStore` (issue #5, :mod:`as_server.oauth`).

A mixin of :class:`~as_server.storage.memory.MemoryStorage`: it shares that class's lock (every method below holds
it, so each is one "transaction"), its token records (family revocation revokes access tokens) and its audit log.
Nothing here is secret: codes and refresh tokens are kept as hashes, and the PoP key stays in the ``cnf`` of the
family's first token.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from as_server.models import (
    AuditEntry,
    AuthorizationCode,
    IssuedToken,
    RefreshToken,
    RefreshTokenStatus,
)
from as_server.storage.base import DuplicateError

__all__ = ["CODE_RETENTION", "OAuthMemoryState", "OAuthMemoryStore", "family_entry"]

#: How long a code is remembered after it expired (seconds), so that a late replay can still revoke its tokens.
CODE_RETENTION: Final = 86400


@dataclass
class OAuthMemoryState:
    """The dictionaries behind :class:`OAuthMemoryStore` (one per storage object)."""

    codes: dict[bytes, AuthorizationCode] = field(default_factory=dict)
    refresh: dict[bytes, RefreshToken] = field(default_factory=dict)
    families: dict[str, list[bytes]] = field(default_factory=dict)  # family id -> refresh token hashes


def family_entry(
    *, at: int, actor: str, action: str, family: RefreshToken | AuthorizationCode | None, family_id: str, detail: str
) -> AuditEntry:
    """The audit entry of a family revocation or a code replay (both backends build it here, so they read alike)."""
    return AuditEntry(
        at=at,
        action=action,
        actor=actor,
        client_id=family.client_id if family is not None else None,
        subject=family.subject if family is not None else None,
        audience=family.audience if family is not None else None,
        detail=f"family {family_id}: {detail}",
    )


class OAuthMemoryStore:
    """Authorization codes and refresh tokens in memory (mixed into ``MemoryStorage``)."""

    _oauth: OAuthMemoryState

    if TYPE_CHECKING:
        _lock: threading.RLock

        def _check_open(self) -> None: ...

        def _log(self, *entries: AuditEntry) -> None: ...

        def _revoke_where(self, matches: Callable[[IssuedToken], bool], now: int) -> int: ...

    # -- authorization codes -----------------------------------------------------------------------------------

    def add_authorization_code(self, code: AuthorizationCode) -> None:
        """Store a new code; forget codes that expired more than :data:`CODE_RETENTION` ago.

        :raises DuplicateError:"""
        with self._lock:
            self._check_open()
            codes = self._oauth.codes
            if code.code_hash in codes:
                raise DuplicateError("authorization code exists")
            for old in [h for h, c in codes.items() if c.expires_at < code.created_at - CODE_RETENTION]:
                del codes[old]
            codes[code.code_hash] = code

    def get_authorization_code(self, code_hash: bytes) -> AuthorizationCode | None:
        """The code with this hash, or ``None``."""
        with self._lock:
            self._check_open()
            return self._oauth.codes.get(code_hash)

    def redeem_authorization_code(self, code_hash: bytes, *, family_id: str, now: int) -> AuthorizationCode | None:
        """Mark an unused, unexpired code used by ``family_id`` (see the Protocol)."""
        with self._lock:
            self._check_open()
            code = self._oauth.codes.get(code_hash)
            if code is None or code.used_at is not None or code.expires_at <= now:
                return None
            code = dataclasses.replace(code, used_at=now, family_id=family_id)
            self._oauth.codes[code_hash] = code
            return code

    def complete_code_exchange(self, code_hash: bytes, *, access_cti: bytes, refresh: RefreshToken | None) -> bool:
        """Record the exchange's access token and first refresh token, unless the code was replayed meanwhile."""
        with self._lock:
            self._check_open()
            code = self._oauth.codes.get(code_hash)
            if code is None or code.reused_at is not None:
                return False
            self._oauth.codes[code_hash] = dataclasses.replace(code, access_cti=access_cti)
            if refresh is not None:
                self._store_refresh(refresh)
            return True

    def authorization_code_reused(self, code_hash: bytes, *, actor: str, now: int) -> int:
        """Mark the replay and revoke the code's family (see the Protocol)."""
        with self._lock:
            self._check_open()
            code = self._oauth.codes.get(code_hash)
            if code is None:
                return 0
            code = dataclasses.replace(code, reused_at=now)
            self._oauth.codes[code_hash] = code
            count = 0 if code.family_id is None else self._revoke_family(code.family_id, now)
            self._log(
                family_entry(
                    at=now,
                    actor=actor,
                    action="authorization_code.reused",
                    family=code,
                    family_id=code.family_id or "-",
                    detail=f"{count} tokens revoked",
                )
            )
            return count

    # -- refresh tokens ----------------------------------------------------------------------------------------

    def _store_refresh(self, token: RefreshToken) -> None:
        if token.token_hash in self._oauth.refresh:
            raise DuplicateError("refresh token exists")
        self._oauth.refresh[token.token_hash] = token
        self._oauth.families.setdefault(token.family_id, []).append(token.token_hash)

    def get_refresh_token(self, token_hash: bytes) -> RefreshToken | None:
        """The refresh token with this hash, or ``None``."""
        with self._lock:
            self._check_open()
            return self._oauth.refresh.get(token_hash)

    def rotate_refresh_token(self, token_hash: bytes, new: RefreshToken, *, now: int) -> bool:
        """Mark ``token_hash`` used and store ``new``, if ``token_hash`` is still active (see the Protocol)."""
        with self._lock:
            self._check_open()
            old = self._oauth.refresh.get(token_hash)
            if old is None or old.status != RefreshTokenStatus.ACTIVE:
                return False
            self._store_refresh(new)
            self._oauth.refresh[token_hash] = dataclasses.replace(old, status=RefreshTokenStatus.USED, used_at=now)
            return True

    def revoke_refresh_family(self, family_id: str, *, actor: str, now: int, reason: str) -> int:
        """Revoke the family's refresh and access tokens, audited (see the Protocol)."""
        with self._lock:
            self._check_open()
            hashes = self._oauth.families.get(family_id, [])
            first = self._oauth.refresh.get(hashes[0]) if hashes else None
            count = self._revoke_family(family_id, now)
            self._log(
                family_entry(
                    at=now,
                    actor=actor,
                    action="refresh_token.family_revoked",
                    family=first,
                    family_id=family_id,
                    detail=f"{reason}; {count} tokens revoked",
                )
            )
            return count

    def _revoke_family(self, family_id: str, now: int) -> int:
        """Revoke the family's refresh tokens and the access tokens issued with them or from its code (lock held)."""
        count = 0
        ctis: set[bytes] = set()
        for token_hash in self._oauth.families.get(family_id, []):
            token = self._oauth.refresh[token_hash]
            ctis.add(token.access_cti)
            if token.status != RefreshTokenStatus.REVOKED:
                self._oauth.refresh[token_hash] = dataclasses.replace(token, status=RefreshTokenStatus.REVOKED)
                count += 1
        ctis.update(
            c.access_cti for c in self._oauth.codes.values() if c.family_id == family_id and c.access_cti is not None
        )
        return count + self._revoke_where(lambda t: t.cti in ctis, now)
