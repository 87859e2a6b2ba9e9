"""The SQL backend of :class:`~as_server.storage.base.AuthorizationCodeStore` and
:class:`~as_server.storage.base.RefreshTokenStore` (issue #5, :mod:`as_server.oauth`).

A mixin of :class:`~as_server.storage.sqlalchemy.store.SqlStorage`, using its write transactions (the
:class:`~.engine.WriteLock` on SQLite), its token revocation and its audit log. Each operation that must not happen
twice is one conditional ``UPDATE`` inside its transaction:

* redeeming a code: ``SET used_at ... WHERE used_at IS NULL AND expires_at > now`` -- of two concurrent exchanges
  one updates the row, the other finds it used;
* rotating a refresh token: ``SET status = 'used' ... WHERE status = 'active'``, and the successor is inserted in
  the same transaction, so a family revocation that runs after it also finds the successor;
* completing an exchange: ``SET access_cti ... WHERE reused_at IS NULL`` against a replay's ``SET reused_at``:
  both write the same row, so PostgreSQL orders them with its row lock (at READ COMMITTED each later statement of
  the second transaction sees what the first committed) and SQLite with its single writer.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from as_server.models import AuditEntry, AuthorizationCode, RefreshToken, RefreshTokenStatus
from as_server.storage.base import DuplicateError
from as_server.storage.memory_oauth import CODE_RETENTION, family_entry
from as_server.storage.sqlalchemy.tables import authorization_codes, issued_tokens, refresh_tokens
from as_server.storage.sqlalchemy.token_writer import is_unique_violation

__all__ = ["OAuthSqlStore", "code_from_row", "code_to_row", "refresh_from_row", "refresh_to_row"]

Row = Any  # a RowMapping

_codes = authorization_codes.c
_refresh = refresh_tokens.c
_ACTIVE: Final = RefreshTokenStatus.ACTIVE.value


def code_to_row(code: AuthorizationCode) -> dict[str, Any]:
    """The ``authorization_codes`` row of ``code``."""
    return {
        "code_hash": code.code_hash,
        "client_id": code.client_id,
        "redirect_uri": code.redirect_uri,
        "subject": code.subject,
        "audience": code.audience,
        "scope": code.scope,
        "code_challenge": code.code_challenge,
        "code_challenge_method": code.code_challenge_method,
        "created_at": code.created_at,
        "expires_at": code.expires_at,
        "used_at": code.used_at,
        "family_id": code.family_id,
        "access_cti": code.access_cti,
        "reused_at": code.reused_at,
    }


def code_from_row(row: Row) -> AuthorizationCode:
    """Inverse of :func:`code_to_row`."""
    access_cti = row["access_cti"]
    return AuthorizationCode(
        code_hash=bytes(row["code_hash"]),
        client_id=row["client_id"],
        redirect_uri=row["redirect_uri"],
        subject=row["subject"],
        audience=row["audience"],
        scope=row["scope"],
        code_challenge=row["code_challenge"],
        code_challenge_method=row["code_challenge_method"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used_at=row["used_at"],
        family_id=row["family_id"],
        access_cti=None if access_cti is None else bytes(access_cti),
        reused_at=row["reused_at"],
    )


def refresh_to_row(token: RefreshToken) -> dict[str, Any]:
    """The ``refresh_tokens`` row of ``token``."""
    scope = token.scope
    return {
        "token_hash": token.token_hash,
        "family_id": token.family_id,
        "client_id": token.client_id,
        "subject": token.subject,
        "audience": token.audience,
        "scope_text": scope if isinstance(scope, str) else None,
        "scope_bin": scope if isinstance(scope, bytes) else None,
        "pop_kid": token.pop_kid,
        "key_cti": token.key_cti,
        "access_cti": token.access_cti,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "family_expires_at": token.family_expires_at,
        "status": token.status.value,
        "used_at": token.used_at,
    }


def refresh_from_row(row: Row) -> RefreshToken:
    """Inverse of :func:`refresh_to_row`."""
    scope_bin = row["scope_bin"]
    return RefreshToken(
        token_hash=bytes(row["token_hash"]),
        family_id=row["family_id"],
        client_id=row["client_id"],
        subject=row["subject"],
        audience=row["audience"],
        scope=row["scope_text"] if scope_bin is None else bytes(scope_bin),
        pop_kid=bytes(row["pop_kid"]),
        key_cti=bytes(row["key_cti"]),
        access_cti=bytes(row["access_cti"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        family_expires_at=row["family_expires_at"],
        status=RefreshTokenStatus(row["status"]),
        used_at=row["used_at"],
    )


class OAuthSqlStore:
    """Authorization codes and refresh tokens in SQL (mixed into ``SqlStorage``)."""

    if TYPE_CHECKING:

        def _write(self) -> AbstractContextManager[Connection]: ...

        def _read(self) -> AbstractContextManager[Connection]: ...

        def _audited(self) -> AbstractContextManager[Connection]: ...

        @staticmethod
        def _log(conn: Connection, *entries: AuditEntry) -> None: ...

        @staticmethod
        def _revoke_tokens(conn: Connection, condition: sa.ColumnElement[bool], now: int) -> int: ...

    def _select_one(self, statement: sa.Select[Any]) -> Row | None:
        with self._read() as conn:
            return conn.execute(statement).mappings().first()

    # -- authorization codes -----------------------------------------------------------------------------------

    def add_authorization_code(self, code: AuthorizationCode) -> None:
        """Store a new code; forget codes that expired more than a day ago. :raises DuplicateError:"""
        try:
            with self._write() as conn:
                conn.execute(sa.delete(authorization_codes).where(_codes.expires_at < code.created_at - CODE_RETENTION))
                conn.execute(sa.insert(authorization_codes), code_to_row(code))
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError("authorization code exists") from exc
            raise

    def get_authorization_code(self, code_hash: bytes) -> AuthorizationCode | None:
        """The code with this hash, or ``None``."""
        row = self._select_one(sa.select(authorization_codes).where(_codes.code_hash == code_hash))
        return None if row is None else code_from_row(row)

    def redeem_authorization_code(self, code_hash: bytes, *, family_id: str, now: int) -> AuthorizationCode | None:
        """Mark an unused, unexpired code used by ``family_id``: one conditional UPDATE (see the module)."""
        with self._write() as conn:
            row = (
                conn.execute(
                    sa.update(authorization_codes)
                    .where((_codes.code_hash == code_hash) & _codes.used_at.is_(None) & (_codes.expires_at > now))
                    .values(used_at=now, family_id=family_id)
                    .returning(*authorization_codes.c)
                )
                .mappings()
                .first()
            )
        return None if row is None else code_from_row(row)

    def complete_code_exchange(self, code_hash: bytes, *, access_cti: bytes, refresh: RefreshToken | None) -> bool:
        """Record the exchange's tokens unless the code was replayed meanwhile (see the module)."""
        with self._write() as conn:
            result = conn.execute(
                sa.update(authorization_codes)
                .where((_codes.code_hash == code_hash) & _codes.reused_at.is_(None))
                .values(access_cti=access_cti)
            )
            if result.rowcount == 0:
                return False
            if refresh is not None:
                conn.execute(sa.insert(refresh_tokens), refresh_to_row(refresh))
        return True

    def authorization_code_reused(self, code_hash: bytes, *, actor: str, now: int) -> int:
        """Mark the replay and revoke the code's family, audited (see the Protocol)."""
        with self._audited() as conn:
            row = (
                conn.execute(
                    sa.update(authorization_codes)
                    .where(_codes.code_hash == code_hash)
                    .values(reused_at=now)
                    .returning(*authorization_codes.c)
                )
                .mappings()
                .first()
            )
            if row is None:
                return 0
            code = code_from_row(row)
            count = 0 if code.family_id is None else self._revoke_family(conn, code.family_id, now)
            self._log(
                conn,
                family_entry(
                    at=now,
                    actor=actor,
                    action="authorization_code.reused",
                    family=code,
                    family_id=code.family_id or "-",
                    detail=f"{count} tokens revoked",
                ),
            )
        return count

    # -- refresh tokens ----------------------------------------------------------------------------------------

    def get_refresh_token(self, token_hash: bytes) -> RefreshToken | None:
        """The refresh token with this hash, or ``None``."""
        row = self._select_one(sa.select(refresh_tokens).where(_refresh.token_hash == token_hash))
        return None if row is None else refresh_from_row(row)

    def rotate_refresh_token(self, token_hash: bytes, new: RefreshToken, *, now: int) -> bool:
        """Mark ``token_hash`` used and insert ``new`` in one transaction, if ``token_hash`` is still active."""
        try:
            with self._write() as conn:
                result = conn.execute(
                    sa.update(refresh_tokens)
                    .where((_refresh.token_hash == token_hash) & (_refresh.status == _ACTIVE))
                    .values(status=RefreshTokenStatus.USED.value, used_at=now)
                )
                if result.rowcount == 0:
                    return False
                conn.execute(sa.insert(refresh_tokens), refresh_to_row(new))
        except sa.exc.IntegrityError as exc:
            if is_unique_violation(exc):
                raise DuplicateError("refresh token exists") from exc
            raise
        return True

    def revoke_refresh_family(self, family_id: str, *, actor: str, now: int, reason: str) -> int:
        """Revoke the family's refresh and access tokens, audited (see the Protocol)."""
        with self._audited() as conn:
            first = (
                conn.execute(
                    sa.select(refresh_tokens)
                    .where(_refresh.family_id == family_id)
                    .order_by(_refresh.created_at)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            count = self._revoke_family(conn, family_id, now)
            self._log(
                conn,
                family_entry(
                    at=now,
                    actor=actor,
                    action="refresh_token.family_revoked",
                    family=None if first is None else refresh_from_row(first),
                    family_id=family_id,
                    detail=f"{reason}; {count} tokens revoked",
                ),
            )
        return count

    def _revoke_family(self, conn: Connection, family_id: str, now: int) -> int:
        """Revoke the family's refresh tokens, and the access tokens issued with them or from its code."""
        refreshed = conn.execute(
            sa.update(refresh_tokens)
            .where((_refresh.family_id == family_id) & (_refresh.status != RefreshTokenStatus.REVOKED.value))
            .values(status=RefreshTokenStatus.REVOKED.value)
        ).rowcount
        with_refresh = sa.select(_refresh.access_cti).where(_refresh.family_id == family_id)
        from_code = sa.select(_codes.access_cti).where((_codes.family_id == family_id) & _codes.access_cti.is_not(None))
        cti = issued_tokens.c.cti
        return int(refreshed) + self._revoke_tokens(conn, cti.in_(with_refresh) | cti.in_(from_code), now)
