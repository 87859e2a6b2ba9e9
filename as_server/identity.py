"""Who a person is: local users with Argon2id password hashes, behind an interface an external identity provider
can implement later (issue #5, "Users" item 1).

* :class:`PasswordHasher` hashes passwords with **Argon2id** (RFC 9106) through argon2-cffi, with RFC 9106 §4's
  second recommended option as default parameters (t=3 passes, m=64 MiB, p=4 lanes, 16-byte salt, 32-byte tag),
  as argon2-cffi's own defaults. The stored form is the PHC string (``$argon2id$v=19$m=65536,t=3,p=4$salt$tag``),
  which names its parameters, so hashes made with other parameters keep verifying and :meth:`needs_rehash` tells
  when to upgrade one. The password itself is never stored or logged.
* :class:`IdentityProvider` is what the rest of the AS asks: "is this the user's password?" and "which groups is
  the user in?". :class:`LocalIdentityProvider` answers from the AS's own database; an LDAP or OpenID Connect
  provider would implement the same two questions (plus :meth:`~IdentityProvider.user` for the account record),
  and nothing else would change: approvers are checked by name and group, and policies see names and groups only
  (:attr:`policies.base.AccessRequest.subject_groups`).

Client secrets are not passwords: they are 256-bit random values, hashed with SHA-256 (:mod:`as_server.sealing`);
a slow hash would add nothing to them and would cap the token endpoint's throughput. Passwords are chosen by
people, so they get the slow, memory-hard hash. A failed password check takes as long for an unknown user as for a
known one (the provider verifies against a dummy hash), so the time taken does not tell which names exist.

>>> hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)   # cheap parameters, for the example only
>>> stored = hasher.hash("correct horse")
>>> stored.startswith("$argon2id$v=19$m=8,t=1,p=1$"), "correct horse" in stored
(True, False)
>>> hasher.verify(stored, "correct horse"), hasher.verify(stored, "wrong")
(True, False)
"""

from __future__ import annotations

import logging
from typing import Final, Protocol

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from as_server.models import User
from as_server.storage.base import UserStore

__all__ = [
    "AuthenticationFailed",
    "IdentityProvider",
    "LocalIdentityProvider",
    "PasswordHasher",
]

log = logging.getLogger("ostiary.as.identity")

#: Longest password accepted (characters): Argon2 takes any length, but a request with megabytes of "password"
#: should cost nothing.
MAX_PASSWORD_LENGTH: Final = 1024


class AuthenticationFailed(Exception):
    """A user could not be authenticated. The message (the reason) is for logs only; callers answer the same
    for every reason (unknown user, wrong password, disabled account)."""


class PasswordHasher:
    """Argon2id password hashes in the PHC string format (RFC 9106; see the module documentation).

    :param time_cost: passes over memory (RFC 9106 ``t``).
    :param memory_cost: memory in KiB (``m``).
    :param parallelism: lanes (``p``).
    """

    def __init__(self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )

    def hash(self, password: str) -> str:
        """The PHC string of a new salted Argon2id hash of ``password``.

        :raises ValueError: an empty password, or one longer than :data:`MAX_PASSWORD_LENGTH`.
        """
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            raise ValueError(f"a password must have 1 to {MAX_PASSWORD_LENGTH} characters")
        return self._hasher.hash(password)

    def verify(self, stored: str, password: str) -> bool:
        """Whether ``password`` matches the stored hash (any Argon2 variant and parameters it names)."""
        if not password or len(password) > MAX_PASSWORD_LENGTH:
            return False
        try:
            return bool(self._hasher.verify(stored, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.error("a stored password hash is not a valid Argon2 hash")
            return False

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters than this hasher's."""
        try:
            return bool(self._hasher.check_needs_rehash(stored))
        except InvalidHashError:
            return True


class IdentityProvider(Protocol):
    """Authenticates people and knows their groups. Local accounts (:class:`LocalIdentityProvider`) today; an
    external provider (LDAP, OpenID Connect) can implement the same interface."""

    def authenticate(self, name: str, password: str) -> User:
        """The enabled user ``name`` whose password this is.

        :raises AuthenticationFailed: unknown user, wrong password, or disabled account (the same to callers).
        """
        ...

    def user(self, name: str) -> User | None:
        """The account record of ``name`` (also for a disabled account), or ``None``."""
        ...

    def groups_of(self, name: str) -> frozenset[str]:
        """The groups the user is a member of."""
        ...


class LocalIdentityProvider:
    """:class:`IdentityProvider` over the AS's own users and groups (:class:`~as_server.storage.base.UserStore`).

    :param store: where users and groups live.
    :param hasher: verifies password hashes (the default parameters of :class:`PasswordHasher`).
    """

    def __init__(self, store: UserStore, hasher: PasswordHasher | None = None) -> None:
        self._store = store
        self._hasher = hasher if hasher is not None else PasswordHasher()
        self._dummy: str | None = None

    def _dummy_hash(self) -> str:
        """A hash no password matches, made with this hasher's parameters (for unknown users, see module docs)."""
        if self._dummy is None:
            self._dummy = self._hasher.hash("ostiary: no such user\x00")
        return self._dummy

    def authenticate(self, name: str, password: str) -> User:
        """See :meth:`IdentityProvider.authenticate`."""
        user = self._store.get_user(name)
        stored = user.password_hash if user is not None else None
        matches = self._hasher.verify(stored if stored is not None else self._dummy_hash(), password)
        if user is None:
            raise AuthenticationFailed("unknown user")
        if stored is None:
            raise AuthenticationFailed("the account has no password")
        if not matches:
            raise AuthenticationFailed("wrong password")
        if not user.enabled:
            raise AuthenticationFailed("the account is disabled")
        return user

    def user(self, name: str) -> User | None:
        """See :meth:`IdentityProvider.user`."""
        return self._store.get_user(name)

    def groups_of(self, name: str) -> frozenset[str]:
        """See :meth:`IdentityProvider.groups_of`."""
        return self._store.groups_of(name)
