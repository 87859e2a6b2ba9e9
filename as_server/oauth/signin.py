"""The sign-in page's logic, without the page: CSRF tokens and password sign-in with a failure limit (sans-IO).

**CSRF** (RFC 6749 §10.12 asks the AS to protect its authorization endpoint; OWASP "signed double-submit cookie").
When the page is shown, the browser gets a random cookie (:meth:`CsrfTokens.new_cookie`, ``HttpOnly``,
``SameSite=Strict``) and the form a token that seals, with the deployment's master key (AES-256-GCM,
:class:`~as_server.sealing.MasterKey`, associated data :data:`CSRF_AAD` so no other sealed blob opens as one): the
time it was issued, that cookie, and a hash of the authorization request the page is for. A POST is accepted only
if the token opens, names the cookie the browser sent, is at most ``signin_page_lifetime`` old, and was made for
the same authorization request. Another site can make the browser send the cookie (not with ``SameSite=Strict``,
but older browsers ignore it) but can read neither the cookie nor the token, and cannot mint a token without the
key. Sealing with the master key rather than a per-process key is what lets every gunicorn worker check a token
another worker issued.

**Sign-in** goes through the :class:`~as_server.identity.IdentityProvider` (Argon2id for local users). Every
failure -- unknown user, wrong password, disabled account, no password -- gives the same message
(:data:`SIGNIN_FAILED`), so the page does not tell which user names exist (the provider also takes as long for an
unknown name). Failed sign-ins count per user name and per source address, as client authentications do
(:class:`~as_server.auth.FailureRateLimiter`, ``signin_failure_limit`` within ``auth_failure_window``); beyond the
limit the page refuses before checking the password. Each failure is queued for the audit log
(``authorization.signin_failed``); the password is never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import struct
from collections.abc import Iterable
from typing import Final, Protocol

from ace_core.errors import WireFormatError
from ace_core.keys import b64url_decode, b64url_encode
from as_server.audit import AuditLog, clean_text
from as_server.auth import FailureRateLimiter
from as_server.identity import MAX_PASSWORD_LENGTH, AuthenticationFailed, IdentityProvider
from as_server.models import AuditEntry, User
from as_server.sealing import SealingError

__all__ = [
    "CSRF_AAD",
    "SIGNIN_FAILED",
    "CsrfTokens",
    "Sealer",
    "SignIn",
    "SignInFailed",
    "request_binding",
]

log = logging.getLogger("ostiary.as.signin")

#: What the page says for every failed sign-in (no user enumeration).
SIGNIN_FAILED: Final = "Wrong user name or password."
#: Associated data of sealed CSRF tokens.
CSRF_AAD: Final = b"ostiary/signin-csrf\x00"
#: Bytes of randomness in the CSRF cookie.
CSRF_COOKIE_BYTES: Final = 16
#: Longest user name accepted on the page (characters).
MAX_USER_NAME_LENGTH: Final = 256
_TOKEN_LAYOUT: Final = struct.Struct(">Q16s32s")  # issued at, cookie, request binding


class Sealer(Protocol):
    """Authenticated encryption with associated data (:class:`~as_server.sealing.MasterKey` is one)."""

    def seal(self, plaintext: bytes, *, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, *, aad: bytes) -> bytes: ...


def request_binding(params: Iterable[tuple[str, str]]) -> bytes:
    """A hash of the authorization request's parameters, in the order sent: what a CSRF token is bound to."""
    digest = hashlib.sha256(b"ostiary authorization request\x00")
    for name, value in params:
        for part in (name, value):
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(4, "big") + data)
    return digest.digest()


class CsrfTokens:
    """Issues and checks the sign-in form's CSRF tokens (see the module documentation).

    :param sealer: the deployment's master key.
    :param lifetime: seconds a token stays valid (``signin_page_lifetime``).
    """

    def __init__(self, sealer: Sealer, *, lifetime: int) -> None:
        self._sealer = sealer
        self._lifetime = lifetime

    @staticmethod
    def new_cookie() -> str:
        """A new value for the CSRF cookie."""
        return b64url_encode(secrets.token_bytes(CSRF_COOKIE_BYTES))

    @staticmethod
    def valid_cookie(cookie: str | None) -> bool:
        """Whether ``cookie`` is a value :meth:`new_cookie` could have made (else the page sets a new one)."""
        if not cookie or len(cookie) > 64:
            return False
        try:
            return len(b64url_decode(cookie)) == CSRF_COOKIE_BYTES
        except (WireFormatError, ValueError):
            return False

    def issue(self, cookie: str, binding: bytes, *, now: int) -> str:
        """The form token for ``cookie`` (:meth:`valid_cookie`) and the request ``binding`` (:func:`request_binding`).

        :raises ValueError: ``cookie`` is not valid.
        """
        if not self.valid_cookie(cookie):
            raise ValueError("not a CSRF cookie value")
        plaintext = _TOKEN_LAYOUT.pack(now, b64url_decode(cookie), binding)
        return b64url_encode(self._sealer.seal(plaintext, aad=CSRF_AAD))

    def check(self, cookie: str | None, token: str | None, binding: bytes, *, now: int) -> bool:
        """Whether ``token`` is valid for the browser's ``cookie``, this request and the time ``now``."""
        if not self.valid_cookie(cookie) or not token or len(token) > 512:
            return False
        assert cookie is not None
        try:
            plaintext = self._sealer.open(b64url_decode(token), aad=CSRF_AAD)
            issued_at, sealed_cookie, sealed_binding = _TOKEN_LAYOUT.unpack(plaintext)
            presented = b64url_decode(cookie)
        except (SealingError, WireFormatError, ValueError, struct.error):
            return False
        same = hmac.compare_digest(sealed_cookie, presented) & hmac.compare_digest(sealed_binding, binding)
        return same and 0 <= now - issued_at <= self._lifetime


class SignInFailed(Exception):
    """The sign-in did not succeed; ``str(exc)`` is what the page shows (:data:`SIGNIN_FAILED`)."""


class SignIn:
    """Password sign-in for the authorization endpoint (see the module documentation).

    :param identity: checks passwords and knows accounts.
    :param limiter: failed sign-ins per user name and source address.
    :param audit: where failures are queued (``None``: not recorded).
    """

    def __init__(self, identity: IdentityProvider, limiter: FailureRateLimiter, audit: AuditLog | None) -> None:
        self._identity = identity
        self._limiter = limiter
        self._audit = audit

    def authenticate(self, name: str, password: str, *, client_id: str, peer: str, now: int) -> User:
        """The enabled user ``name`` whose password this is.

        :raises SignInFailed: with :data:`SIGNIN_FAILED`, whatever the reason.
        :raises TooManyRequests: too many failures for this user name or address.
        """
        name = name.strip()
        self._limiter.check(name or None, peer, now)
        try:
            if not name or len(name) > MAX_USER_NAME_LENGTH or len(password) > MAX_PASSWORD_LENGTH:
                raise AuthenticationFailed("user name or password of an impossible length")
            return self._identity.authenticate(name, password)
        except AuthenticationFailed as exc:
            self._limiter.record_failure(name or None, peer, now)
            log.info("sign-in failed: user=%r client_id=%r peer=%r (%s)", clean_text(name), client_id, peer, exc)
            if self._audit is not None:
                self._audit.submit(
                    AuditEntry(
                        at=now,
                        action="authorization.signin_failed",
                        actor=f"client:{clean_text(client_id)}",
                        client_id=clean_text(client_id),
                        subject=clean_text(name),
                        detail=clean_text(f"{exc}; peer {peer}", 1000) or "",
                    )
                )
            raise SignInFailed(SIGNIN_FAILED) from None
