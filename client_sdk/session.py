"""Sans-IO bookkeeping of the client: the token cache (RFC 9200 §5.8.2 ``expires_in``, §5.10.4) and the OSCORE
sessions with resource servers (RFC 9203 §4). No sockets and no wall clock: time comes from an injected
:data:`Clock`, randomness from an injected ``random_bytes``.

**Token cache.** One token per audience (RFC 9200 §5.10.1 recommends that an RS keeps one token per PoP key and
lets a newer one supersede the older, so one per audience is also what a lock keeps). A token is reused while more
than a margin of its lifetime remains (:class:`RefreshPolicy`). Its lifetime starts when the request was *sent*,
so the client never believes in a token longer than the AS does. A token without ``expires_in`` is refused unless
the app configures a default lifetime: RFC 9200 §5.10.4 says a client that cannot learn how long its key is valid
MUST NOT use it. The cache is in memory only; it holds the OSCORE master secret, which the SDK never writes
to disk.

**Sessions.** One per resource-server origin (``coap://host:port``): the token, the nonces and recipient ids of
the ``/authz-info`` exchange and the derived context parameters (RFC 9203 §4.1-§4.3). ``ID1`` (the client's
recipient id) is unique among the client's contexts, as RFC 9203 §4.1 requires: a counter that never hands out
the same value twice in one :class:`SessionBook`. A session is only valid while its token is (RFC 9203 §4.3).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from ace_core import cbor
from ace_core.errors import WireFormatError
from ace_core.messages import AccessInformation, AuthzInfoRequest, AuthzInfoResponse
from ace_core.oscore import OscoreContextParameters, Role, context_parameters
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile
from client_sdk.errors import TokenUnusable

__all__ = [
    "NONCE1_SIZE",
    "CachedToken",
    "Clock",
    "OscoreSession",
    "PendingUpload",
    "RefreshPolicy",
    "SessionBook",
    "TokenCache",
    "origin_of",
    "oscore_material",
]

#: A source of seconds on a monotonic scale (``time.monotonic`` in production, a fake in tests).
Clock = Callable[[], float]

#: RFC 9203 §4.1: nonce1 SHOULD be a 64-bit random value.
NONCE1_SIZE = 8
#: Longest recipient id the client hands out: the Sender ID of the RS must fit the AEAD nonce (RFC 8613 §3.3:
#: nonce length - 6, so 7 bytes for AES-CCM-16-64-128, the smallest nonce of the algorithms we derive for).
MAX_RECIPIENT_ID = 7
_COAP_DEFAULT_PORTS = {"coap": 5683, "coap+tcp": 5683}


def origin_of(uri: str) -> str:
    """``scheme://host:port`` of a CoAP URI, with the default port made explicit and the host lower-cased.

    >>> origin_of("coap://Lock.Example/lock?x=1")
    'coap://lock.example:5683'
    >>> origin_of("coap://[::1]:5690")
    'coap://[::1]:5690'

    :raises ValueError: not a ``coap://`` or ``coap+tcp://`` URI with a host.
    """
    parts = urlsplit(uri)
    if parts.scheme not in _COAP_DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"a resource server URI must be coap://host[:port]/...: {uri!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or _COAP_DEFAULT_PORTS[parts.scheme]}"


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    """When a cached token is too close to its expiry to be used for a new upload or request.

    The margin is ``min(fraction * lifetime, max_margin)``: 6 s of a 60 s token, 60 s of a one-hour token. It
    covers the round trips to the lock and clock drift between AS and lock.
    """

    fraction: float = 0.1
    max_margin: float = 60.0

    def margin(self, lifetime: float) -> float:
        """Seconds before expiry at which the token counts as used up."""
        return min(self.fraction * lifetime, self.max_margin)


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedToken:
    """An access token with what the client needs to use it (RFC 9200 §5.8.2; RFC 9203 §3.2).

    ``material`` holds the OSCORE master secret and is excluded from ``repr``.
    """

    audience: str
    scope: str | bytes
    info: AccessInformation = field(repr=False)
    material: OscoreMaterial = field(repr=False)
    obtained_at: float
    lifetime: float

    @property
    def expires_at(self) -> float:
        """Clock time at which the AS's ``expires_in`` runs out."""
        return self.obtained_at + self.lifetime

    def usable(self, now: float, policy: RefreshPolicy) -> bool:
        """True while more than the policy's margin of the lifetime remains."""
        return now < self.expires_at - policy.margin(self.lifetime)


def oscore_material(info: AccessInformation) -> OscoreMaterial:
    """The OSCORE_Input_Material of a token response (RFC 9203 §3.2: ``cnf`` ``{4: {...}}`` with ``id`` and ``ms``).

    :raises TokenUnusable: another profile, or no (complete) OSCORE material.
    """
    if info.ace_profile is not None and info.ace_profile != AceProfile.COAP_OSCORE:
        raise TokenUnusable(f"the AS issued a token for ACE profile {info.ace_profile}, not coap_oscore (2)")
    if info.cnf is None:
        raise TokenUnusable("the token response has no cnf: no OSCORE input material (RFC 9203 §3.2)")
    try:
        confirmation = Confirmation.from_cbor_map(dict(info.cnf))
    except WireFormatError as exc:
        raise TokenUnusable(f"the token response's cnf is malformed: {exc}") from None
    material = confirmation.osc
    if material is None or not material.ms or material.id is None:
        raise TokenUnusable("the token response's cnf carries no OSCORE_Input_Material with id and ms (RFC 9203 §3.2)")
    return material


class TokenCache:
    """Access tokens per audience, valid until the :class:`RefreshPolicy` margin before expiry.

    :param clock: monotonic seconds.
    :param default_lifetime: lifetime assumed when the AS sends no ``expires_in``; ``None`` refuses such tokens
        (RFC 9200 §5.10.4).
    """

    def __init__(
        self, *, clock: Clock, policy: RefreshPolicy | None = None, default_lifetime: float | None = None
    ) -> None:
        self._clock = clock
        self.policy = policy or RefreshPolicy()
        self._default_lifetime = default_lifetime
        self._tokens: dict[str, CachedToken] = {}

    def get(self, audience: str, scope: str | bytes) -> CachedToken | None:
        """The cached token for ``audience`` if it was issued for ``scope`` and is still usable; a used-up one is
        evicted."""
        token = self._tokens.get(audience)
        if token is None or token.scope != scope:
            return None
        if not token.usable(self._clock(), self.policy):
            del self._tokens[audience]
            return None
        return token

    def usable(self, token: CachedToken) -> bool:
        """Whether ``token`` may still be used now."""
        return token.usable(self._clock(), self.policy)

    def put(self, audience: str, scope: str | bytes, info: AccessInformation, *, requested_at: float) -> CachedToken:
        """Cache the answer to a token request sent at clock time ``requested_at``; it replaces the audience's
        previous token.

        :raises TokenUnusable: not an OSCORE-profile token, or no way to know its lifetime.
        """
        material = oscore_material(info)
        lifetime = info.expires_in if info.expires_in is not None else self._default_lifetime
        if lifetime is None:
            raise TokenUnusable(
                "the AS sent no expires_in and no default lifetime is configured; RFC 9200 §5.10.4 forbids using "
                "a token whose validity the client cannot learn"
            )
        token = CachedToken(
            audience=audience,
            scope=scope,
            info=info,
            material=material,
            obtained_at=requested_at,
            lifetime=float(lifetime),
        )
        self._tokens[audience] = token
        return token

    def discard(self, audience: str, token: CachedToken | None = None) -> None:
        """Forget the audience's token (only if it is still ``token``, when given)."""
        if token is None or self._tokens.get(audience) is token:
            self._tokens.pop(audience, None)

    def clear(self) -> None:
        """Forget every token."""
        self._tokens.clear()

    def __len__(self) -> int:
        return len(self._tokens)


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingUpload:
    """A token upload in flight: what the client sent to ``/authz-info`` (RFC 9203 §4.1)."""

    origin: str
    token: CachedToken
    nonce1: bytes
    client_recipient_id: bytes

    def request(self) -> AuthzInfoRequest:
        """``{1: access_token, 40: nonce1, 43: ID1}``."""
        return AuthzInfoRequest(
            access_token=self.token.info.access_token,
            nonce1=self.nonce1,
            ace_client_recipientid=self.client_recipient_id,
        )


@dataclass(slots=True, kw_only=True)
class OscoreSession:
    """An established OSCORE association with one resource-server origin (RFC 9203 §4.3).

    ``confirmed`` becomes true once the lock has answered a request protected with this context: from then on a
    4.01 means the lock dropped the context (restart, superseded or expired token), not that the two ends derived
    different keys.
    """

    origin: str
    token: CachedToken
    nonce1: bytes
    nonce2: bytes
    client_recipient_id: bytes
    server_recipient_id: bytes
    params: OscoreContextParameters = field(repr=False)
    established_at: float
    confirmed: bool = False


class SessionBook:
    """Sessions per origin and the recipient ids in use (RFC 9203 §4.1, §4.2).

    :param clock: monotonic seconds.
    :param random_bytes: source of nonce1 (cryptographically random in production).
    :param omit_absent_salt: **interop testing only.** Build the Master Salt without the ``salt`` item when the
        token carries none, instead of Ostiary's documented empty-byte-string convention
        (:mod:`ace_core.oscore`). A lock using the other convention then fails to decrypt, which is what the
        interop tests need to provoke. Never set it in an app.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        omit_absent_salt: bool = False,
    ) -> None:
        self._clock = clock
        self._random_bytes = random_bytes
        self._omit_absent_salt = omit_absent_salt
        self._sessions: dict[str, OscoreSession] = {}
        self._pending: dict[str, PendingUpload] = {}
        self._ids = itertools.count(1)

    def _new_recipient_id(self) -> bytes:
        in_use = {s.client_recipient_id for s in self._sessions.values()}
        in_use |= {p.client_recipient_id for p in self._pending.values()}
        for n in self._ids:
            rid = n.to_bytes((n.bit_length() + 7) // 8, "big")
            if len(rid) > MAX_RECIPIENT_ID:
                raise RuntimeError("recipient ids exhausted")
            if rid not in in_use:
                return rid
        raise AssertionError("unreachable")  # pragma: no cover

    def begin(self, origin: str, token: CachedToken) -> PendingUpload:
        """Start an upload: a fresh ``nonce1`` and a recipient id no other context of this client uses."""
        pending = PendingUpload(
            origin=origin,
            token=token,
            nonce1=self._random_bytes(NONCE1_SIZE),
            client_recipient_id=self._new_recipient_id(),
        )
        self._pending[origin] = pending
        return pending

    def abandon(self, pending: PendingUpload) -> None:
        """The upload failed: release its recipient id."""
        if self._pending.get(pending.origin) is pending:
            del self._pending[pending.origin]

    def complete(self, pending: PendingUpload, response: AuthzInfoResponse) -> OscoreSession:
        """Derive the client's context from the RS's 2.01 answer (RFC 9203 §4.2, §4.3) and record the session.

        :raises ValueError: ID2 equals ID1 (RFC 9203 §4.2: the client MUST NOT derive a context then), or the
            material cannot be used (see :func:`ace_core.oscore.context_parameters`).
        """
        self.abandon(pending)
        if response.ace_server_recipientid == pending.client_recipient_id:
            raise ValueError(
                "the resource server chose ace_server_recipientid equal to our ace_client_recipientid; "
                "RFC 9203 §4.2 forbids deriving a context from that"
            )
        material = pending.token.material
        params = context_parameters(
            material,
            nonce1=pending.nonce1,
            nonce2=response.nonce2,
            client_recipient_id=pending.client_recipient_id,
            server_recipient_id=response.ace_server_recipientid,
            role=Role.CLIENT,
        )
        if self._omit_absent_salt and material.salt is None:
            params = replace(params, master_salt=cbor.bstr(pending.nonce1) + cbor.bstr(response.nonce2))
        session = OscoreSession(
            origin=pending.origin,
            token=pending.token,
            nonce1=pending.nonce1,
            nonce2=response.nonce2,
            client_recipient_id=pending.client_recipient_id,
            server_recipient_id=response.ace_server_recipientid,
            params=params,
            established_at=self._clock(),
        )
        self._sessions[pending.origin] = session
        return session

    def get(self, origin: str) -> OscoreSession | None:
        """The origin's session, if any (whether its token is still usable is the caller's question)."""
        return self._sessions.get(origin)

    def drop(self, origin: str, session: OscoreSession | None = None) -> OscoreSession | None:
        """Forget the origin's session (only if it is still ``session``, when given); returns what was dropped."""
        current = self._sessions.get(origin)
        if current is None or (session is not None and current is not session):
            return None
        del self._sessions[origin]
        return current

    def origins(self) -> list[str]:
        """Origins with a session."""
        return list(self._sessions)
