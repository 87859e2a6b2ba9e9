"""The token endpoint: RFC 9200 §5.8, with PoP keys of RFC 9201 §3 and the AS side of RFC 9203 §3 / RFC 9202 §3.

:meth:`TokenEndpoint.handle` takes a decoded :class:`~ace_core.messages.TokenRequest` and returns the
:class:`~ace_core.messages.AccessInformation` (2.01, RFC 9200 §5.8.2), or raises:

=============================  ======  ==========================================================================
error                          status  when
=============================  ======  ==========================================================================
``TooManyRequests``            4.29    too many failed authentications for the client id or the source address
``InvalidRequest``             4.00    secret both in the transport and the payload (RFC 6749 §2.3); audience
                                       missing, unknown, disabled or not allowed for the client; malformed,
                                       symmetric or private ``req_cnf``; a ``req_cnf`` key that is not the
                                       client's registered key; unknown ``kid`` in the OSCORE profile (RFC 9203
                                       §3.1); no ``req_cnf`` from a client that may not use AS-generated keys;
                                       the resource server's configuration cannot serve the request (logged)
``InvalidClient``              4.01    no credentials, unknown client, wrong secret, client disabled
``UnsupportedGrantType``       4.00    a grant type other than ``client_credentials`` (RFC 9200 §5.8.1 default)
                                       that has no handler (:meth:`TokenEndpoint.register_grant`); never
                                       ``password``
``UnauthorizedClient``         4.00    the client may not use ``client_credentials``
``InvalidScope``               4.00    scope missing without a default (RFC 6749 §3.3), malformed, of the wrong
                                       kind for the audience, empty, not granted by the policy, or no lifetime left
``ConsentPending``             4.00    ``invalid_scope`` with ``error_uri``: the policy asks for consent and an
                                       access request records it (:mod:`as_server.consent`)
``UnsupportedPopKey``          4.00    ``req_cnf`` key type other than Ed25519 / P-256, or not allowed for the
                                       client; RPK for an audience without ``coap_dtls``; unknown ``kid`` in the
                                       DTLS profile (RFC 9202 §4)
``IncompatibleAceProfiles``    4.00    client and audience share no ACE profile, or not the one asked for
=============================  ======  ==========================================================================

Checks run in this order: client authentication, grant type, audience, scope, policy, lifetime, ``req_cnf``,
profile, token protection. Nothing is generated or stored before every check has passed; the token is recorded
(:meth:`~as_server.storage.base.TokenStore.record`) before it is returned, with the policy rules that granted it
(:attr:`~as_server.models.IssuedToken.rules`: revoking a consent grant among them revokes the token) -- that record
is also the token's ``token.issued`` audit entry (:mod:`as_server.audit`), so issuing writes nothing more. Every
refusal is queued for the audit log as ``token.refused`` with its reason, without waiting for a write.

**Other grants** (issue #5, :mod:`as_server.oauth`): a :class:`GrantHandler` registered for a grant type
(:meth:`TokenEndpoint.register_grant`: ``authorization_code``, ``refresh_token``) authenticates the client its own
way (public clients by ``client_id``), settles the client, user (``subject``, the ``sub`` claim), audience and scope
as an :class:`IssueRequest`, and hands it to :meth:`TokenEndpoint.issue`, the issuance every grant shares: the steps
from the audience on, with the user and their groups in the policy's :class:`~policies.base.AccessRequest`. A refresh
keeps the PoP key of the earlier token (:class:`Rebind`, RFC 9200 §5.8.1) instead of reading ``req_cnf``.

Decisions where the RFCs leave a choice (each also noted where it is implemented):

* **Audience errors are ``invalid_request``**, the same one for "not registered", "disabled" and "not allowed for
  this client", so a client cannot probe which audiences exist. RFC 9200 defines no ``invalid_target`` (RFC 8693
  §2.2.2).
* **A missing scope without a default is ``invalid_scope``**: RFC 6749 §3.3 says the AS "MUST either process the
  request using a pre-defined default value or fail the request indicating an invalid scope".
* **Profile choice** (RFC 9200 §5.8.4.3): the client's named profile if it is shared, else the first shared one
  of ``coap_oscore``, ``coap_dtls``; raw public keys need ``coap_dtls`` (RFC 9202 §3.2). ``ace_profile`` is in the
  response whenever the request carried the parameter (empty: mandatory; named: as confirmation), whatever the
  token carries; in the token it follows the audience's claim options (next item).
* **Compact claims** (:attr:`~as_server.models.ResourceServer.compact_claims`, the default): the token leaves out
  ``iat``, which an RS never needs to decide on a request (``exp``/``exi`` carry the lifetime) and which the AS keeps
  in its :class:`~as_server.models.IssuedToken` record, and ``ace_profile`` when the audience supports exactly one
  profile: the only profile it can use cannot be ambiguous, so the RS knows it without being told (the choice of
  RFC 9200 §5.8.4.3 is made between the client's and the RS's profiles; a lock built on :mod:`resource_server`
  treats an absent ``ace_profile`` as its own OSCORE profile). Together with the 1-byte AS<->RS ``kid`` of
  ``ostiary as rs add`` this takes the typical OSCORE lock token from 143 to 126 bytes. ``compact_claims=False``
  (``as rs add --full-claims``) puts both in every token, for an RS that wants them.
* **``exi`` for resource servers without a clock** (:attr:`~as_server.models.ResourceServer.has_clock` false,
  ``as rs add --no-clock``; RFC 9200 §5.10.3): the token carries ``exi`` = the lifetime, counted from the RS's
  first receipt, instead of ``exp``, and the ``cti`` the RFC requires, "the RS identifier" concatenated with "a
  sequence number" counting this AS's ``exi`` tokens for the RS. The layout is the one
  :func:`resource_server.token_store.parse_exi_cti` parses: ``UTF-8(audience) || sequence number``, big-endian
  unsigned in as few bytes as it needs (1 to 8), see :func:`exi_cti`. The number comes from
  :meth:`~as_server.storage.base.ExiSequenceStore.next_exi_sequence` (one durable, atomic increment: the only extra
  database write of such a token; tokens with ``exp`` draw no number and make no extra round trip). The token is
  recorded with ``exi`` and, as ``exp``, the AS's bound on its end: issue time + ``exi`` + the
  ``exi_upload_window`` setting, because the AS cannot know when the RS first sees it. Introspection reports such
  a token ``active`` until that bound (unless revoked) and answers ``exi`` instead of an ``exp`` it does not know
  (RFC 9200 §5.9.2). ``expires_in`` in the response is the lifetime (RFC 9200 §5.10.4: how the client learns it).
* **``cti`` in issue order** (RFC 8392 §3.1.7 asks only that it be unique): a token with ``exp`` gets an 8-byte
  ``cti`` made of the issue time (4 bytes, big-endian seconds), a counter of this endpoint (2 bytes, from a random
  start) and 2 random bytes, see :func:`clocked_cti`. Every index keyed by ``cti`` (the unique one in SQL, and any
  an RS or a revocation list keeps) then grows at its end: each process's tokens of one second sit side by side,
  so a commit of many tokens writes a few index pages instead of one random page per token, on SQLite and
  PostgreSQL alike. Its time tells nothing the token does not (``exp`` and, unless compact, ``iat`` are in it);
  its counter tells an RS that gets two tokens of one AS process how many that process issued between them. Two
  processes draw the same ``cti`` only within one second, at the same counter value, with the same random bytes;
  the unique index refuses the second and the endpoint draws again, as for any identifier that is taken.
* **``token_type`` is sent** (PoP): RFC 9200 §5.8.2 makes it optional with PoP as the default, but OAuth clients
  on HTTP expect it (RFC 6749 §5.1), and it costs three bytes in CBOR.
* **Symmetric key values in ``req_cnf`` are refused with ``invalid_request``**: RFC 9201 §3.1 recommends
  refusing them, and ``unsupported_pop_key`` (RFC 9200 §5.8.3) is about keys the RS cannot process, which is not
  the case. A ``req_cnf`` COSE_Key with a private part (``d``) is refused the same way.
* **``req_cnf`` by ``kid``** (update of access rights, RFC 9203 §3.1, RFC 9202 §4): the ``kid`` must name the PoP
  key of an active, unexpired token of this client for this audience (the new token's ``cnf`` is ``{3: kid}``
  and the response has no ``cnf``), or the client's registered public key, which is then bound by value as if
  sent in ``req_cnf``: the RS may not know it yet. Tokens that are revoked or expired do not count: their keys
  are gone from the RS (RFC 9200 §5.10.1). When the earlier token's ``cnf`` holds the key, its key type is
  checked again against the client's allowed types; a chain of ``kid``-only tokens is accepted on the strength
  of the check made when the key was first bound (OSCORE material is always ``symmetric``).
* **Generated keys** (no ``req_cnf``): OSCORE material has a 6-byte ``id`` (it only needs to tell a client's
  contexts at one RS apart, RFC 9203 §4.1) and a 16-byte master secret; a DTLS PSK is 16 bytes (the tinydtls
  maximum) with an 8-byte ``kid``, which the RS looks keys up by across all clients (RFC 9202 §3.3.2). Both are
  new for this client at this audience: the token is recorded with ``pop_key_generated``, the storage refuses a
  second generated key with the same id (a unique index in SQL) and the endpoint then draws fresh material, as it
  does for a ``cti`` that is taken (random ids collide with probability 2**-48 per pair, so this costs nothing
  until it happens, instead of a lookup per token). They may only travel in an encrypted token (RFC 8747 §3.3,
  RFC 9203 §3.2); an audience whose token form is ``sign1`` or ``mac0`` is a configuration error: the request is
  refused with ``invalid_request`` and an error is logged.
* **A client's own public key** can only be bound when it is the client's registered ``public_key``: RFC 9202
  §3.2.1 says the AS MUST check that the key is associated with the client, and a client that authenticates with a
  secret proves nothing about a key it merely names. Anything else is ``invalid_request``. The token response then
  MUST carry ``rs_cnf`` (RFC 9202 §3.2.1, RFC 9201 §3.2): an audience without a registered public key cannot take
  raw-public-key clients and answers ``unsupported_pop_key``.
* **Scope in the response** (RFC 6749 §5.1): present when it differs from the request or the request had none.
  It takes the form the request used (text stays text, AIF JSON text stays text, AIF bytes stay bytes); a scope
  taken from the client's default is in CBOR form (bytes for AIF), which an HTTP transport converts with
  :func:`as_server.tokens.json_scope`.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Final, NoReturn, Protocol

from ace_core import cbor, cwt
from ace_core.errors import (
    IncompatibleAceProfiles,
    InvalidClient,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedPopKey,
    WireFormatError,
)
from ace_core.keys import CoseKey
from ace_core.messages import AccessInformation, TokenRequest
from ace_core.pop import Confirmation, OscoreMaterial
from ace_core.registry import AceProfile, CoseAlgorithm, CoseCurve, CoseKeyType, GrantType, TokenType
from ace_core.scope import AifScope, TextScope, decode_scope
from as_server.audit import AuditLog, clean_text, describe_scope
from as_server.auth import ClientCredentials, FailureRateLimiter, check_secret, select_credentials
from as_server.config import Settings
from as_server.errors import TooManyRequests
from as_server.models import (
    AuditEntry,
    Client,
    IssuedToken,
    PopKeyType,
    ResourceServer,
    ScopeFormat,
    TokenForm,
    TokenStatus,
)
from as_server.storage.base import DuplicateError, Storage
from as_server.tokens import token_hash
from policies.base import AccessPolicy, AccessRequest, Decision

if TYPE_CHECKING:
    from as_server.consent import ConsentService

__all__ = [
    "PROFILE_PREFERENCE",
    "GrantHandler",
    "IssueRequest",
    "Issued",
    "UNKNOWN_AUDIENCE",
    "QueuedRecord",
    "Rebind",
    "TokenEndpoint",
    "clocked_cti",
    "exi_cti",
]

logger = logging.getLogger(__name__)

Scope = TextScope | AifScope

#: Profiles in the order the AS picks them when the client does not name one (RFC 9200 §5.8.4.3).
PROFILE_PREFERENCE: Final = (AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS)

#: Length of a generated OSCORE_Input_Material ``id`` (RFC 9203 §3.2.1) and master secret (RFC 8613 §3.2: 16).
OSCORE_ID_LENGTH: Final = 6
OSCORE_MASTER_SECRET_LENGTH: Final = 16
#: Length of a generated DTLS pre-shared key (tinydtls accepts at most 16 bytes) and of its ``kid``.
PSK_LENGTH: Final = 16
PSK_KID_LENGTH: Final = 8
#: Layout of the ``cti`` of a token with ``exp`` (RFC 8392 §3.1.7; :func:`clocked_cti`): issue time, endpoint
#: counter, random bytes; and attempts at recording a token under unused identifiers (``cti``, generated PoP key id).
CTI_TIME_LENGTH: Final = 4
CTI_COUNTER_LENGTH: Final = 2
CTI_RANDOM_LENGTH: Final = 2
CTI_LENGTH: Final = CTI_TIME_LENGTH + CTI_COUNTER_LENGTH + CTI_RANDOM_LENGTH
MAX_ID_ATTEMPTS: Final = 8
#: The one answer for an audience that does not exist, is disabled, or is not among the client's audiences (no
#: probing of what exists); it says where to look, since a client that knows the lock exists will wonder.
UNKNOWN_AUDIENCE: Final = "unknown audience, or not one of this client's audiences"
#: Length of the kid derived from an RFC 9679 thumbprint when a client's key has none (as ace_core.keys does).
THUMBPRINT_KID_LENGTH: Final = 8
#: Longest sequence number in an ``exi`` token's ``cti`` (bytes): what resource_server.token_store parses (its
#: ``MAX_SEQUENCE_BYTES``; the packages may not import each other, STYLE §3.1).
EXI_SEQUENCE_MAX_BYTES: Final = 8

#: Random bytes of the PoP key material the AS generates, per profile: OSCORE ``id`` + master secret, PSK + kid.
_GENERATED_LENGTH: Final = {
    AceProfile.COAP_OSCORE: OSCORE_ID_LENGTH + OSCORE_MASTER_SECRET_LENGTH,
    AceProfile.COAP_DTLS: PSK_LENGTH + PSK_KID_LENGTH,
}

_ENCRYPTED_FORMS: Final = frozenset({TokenForm.ENCRYPT0, TokenForm.SIGN1_ENCRYPT0})
#: AEAD for an AS-RS key that names no algorithm, by key length (RFC 9203 §3.2 uses AES-CCM-16-64-128).
_DEFAULT_AEAD: Final = {16: CoseAlgorithm.AES_CCM_16_64_128, 32: CoseAlgorithm.AES_CCM_16_64_256}
_DEFAULT_MAC: Final = CoseAlgorithm.HMAC_256_256
#: Signature algorithm of each asymmetric PoP key type (RFC 9053 §2.1, §2.2).
_SIGNATURE_ALG: Final = {PopKeyType.ED25519: CoseAlgorithm.EDDSA, PopKeyType.P256: CoseAlgorithm.ES256}


class _Mode(Enum):
    """How the token is bound to a key (RFC 9201 §3.1)."""

    GENERATE = "generate"  # no req_cnf: the AS generates symmetric material (RFC 9200 §5.8.1)
    KEY = "key"  # the client's public key, by value or as its registered key
    KID = "kid"  # the key of an earlier token, by reference (RFC 9203 §3.1, RFC 9202 §4)
    REBIND = "rebind"  # the key of an earlier token, by value (refresh after that token is gone, RFC 9200 §5.8.1)
    UNKNOWN_KID = "unknown kid"  # a kid that names nothing; which error depends on the profile


@dataclass(frozen=True, slots=True)
class _Pop:
    mode: _Mode
    key_type: PopKeyType | None = None  # None: not known (kid-only chains, unknown kid)
    key: CoseKey | None = None  # _Mode.KEY: the public key to bind, with a kid
    kid: bytes | None = None  # _Mode.KID / UNKNOWN_KID
    previous: IssuedToken | None = None  # _Mode.KID / REBIND: the token whose key is re-bound
    cnf: Confirmation | None = None  # _Mode.REBIND: the key by value (a symmetric key or OSCORE material)


@dataclass(frozen=True, slots=True)
class Rebind:
    """Bind a new token to the PoP key of an earlier one (RFC 9200 §5.8.1: a refreshed token keeps the key).

    :param previous: the latest token bound to the key. While it is active and unexpired the RS still holds the key,
        so the new token names it by ``kid`` (as an update of access rights does, RFC 9203 §3.1, RFC 9202 §4).
    :param holder: a token whose ``cnf`` carries the key by value (OSCORE material, a symmetric or public COSE_Key);
        used when ``previous`` has expired or was revoked, since the RS has then dropped the key (RFC 9200 §5.10.1).
    """

    previous: IssuedToken
    holder: IssuedToken


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueRequest:
    """What a grant handler has settled before the shared issuance (:meth:`TokenEndpoint.issue`).

    :param client: the authenticated (or, for a public client, identified) client.
    :param audience: the audience; ``None``: the client's default.
    :param scope: the requested scope as carried in the request (text, or AIF bytes); ``None``: the client's default.
    :param subject: the signed-in user the token is for (its ``sub`` claim), if any.
    :param subject_groups: the user's groups, for the policy (:attr:`policies.base.AccessRequest.subject_groups`).
    :param rebind: keep the PoP key of an earlier token instead of reading ``req_cnf`` (refresh).
    :param ask_consent: record an access request when the policy asks for consent (``False`` for a refresh, which
        only keeps what was granted: refused with ``invalid_scope``, which the refresh grant reports as
        ``invalid_grant``).
    """

    client: Client
    audience: str | None
    scope: str | bytes | None
    subject: str | None = None
    subject_groups: frozenset[str] = frozenset()
    rebind: Rebind | None = None
    ask_consent: bool = True


@dataclass(frozen=True, slots=True)
class Issued:
    """The outcome of :meth:`TokenEndpoint.issue`: the response and the record stored for the token."""

    info: AccessInformation
    record: IssuedToken
    decision: Decision


@dataclass(frozen=True, slots=True)
class QueuedRecord:
    """A token issued by :meth:`TokenEndpoint.handle_queued` whose record is queued, not yet durable.

    The token must not leave before ``commit`` has succeeded (RFC 9200 §5.8.2: the AS records what it issues);
    then call ``announce`` (the endpoint's "issued token" log line). ``commit`` fails with
    :class:`~as_server.storage.base.DuplicateError` when a drawn identifier was taken (nothing was written): serve
    the request again with :meth:`TokenEndpoint.handle`, which draws new ones.
    """

    commit: Future[None]
    announce: Callable[[], None]


class _NeedsThread(Exception):  # noqa: N818 - a signal within this module, not an error
    """Raised inside :meth:`TokenEndpoint.handle_queued` before anything is written: see its ``None``."""


#: Set by :meth:`TokenEndpoint.handle_queued` for the duration of one request: where :meth:`TokenEndpoint._issue`
#: puts the token's queued record instead of waiting for the commit.
_QUEUED: ContextVar[list[QueuedRecord] | None] = ContextVar("ostiary_queued_records", default=None)


class GrantHandler(Protocol):
    """Handles one grant type at the token endpoint (:meth:`TokenEndpoint.register_grant`); it authenticates the
    client its own way, then calls :meth:`TokenEndpoint.issue`."""

    def handle(
        self, request: TokenRequest, credentials: ClientCredentials | None, *, peer: str, now: int
    ) -> AccessInformation: ...


def _key_type(key: CoseKey) -> PopKeyType | None:
    if key.kty == CoseKeyType.OKP and key.crv == CoseCurve.ED25519:
        return PopKeyType.ED25519
    if key.kty == CoseKeyType.EC2 and key.crv == CoseCurve.P_256:
        return PopKeyType.P256
    if key.kty == CoseKeyType.SYMMETRIC:
        return PopKeyType.SYMMETRIC
    return None


def _key_id(key: CoseKey) -> bytes:
    """A key's kid, or the start of its RFC 9679 thumbprint when it has none."""
    return key.kid if key.kid is not None else key.thumbprint()[:THUMBPRINT_KID_LENGTH]


def _intersection(a: Scope, b: Scope) -> Scope | None:
    """``a & b``, or ``None`` when one is AIF and the other text."""
    if isinstance(a, AifScope) and isinstance(b, AifScope):
        return a & b
    if isinstance(a, TextScope) and isinstance(b, TextScope):
        return a & b
    return None


def clocked_cti(now: int, counter: int, random: bytes) -> bytes:
    """The ``cti`` of a token with ``exp`` (module documentation): ``now`` (seconds, the low 32 bits), ``counter``
    (its low 16 bits), then ``random`` (:data:`CTI_RANDOM_LENGTH` bytes), big-endian, so ids sort in issue order.

    >>> clocked_cti(1_800_000_000, 0x1_0203, b"\\xab\\xcd").hex(" ")
    '6b 49 d2 00 02 03 ab cd'
    """
    if len(random) != CTI_RANDOM_LENGTH:
        raise ValueError(f"a cti takes {CTI_RANDOM_LENGTH} random bytes, not {len(random)}")
    return (
        (now & 0xFFFF_FFFF).to_bytes(CTI_TIME_LENGTH, "big")
        + (counter & 0xFFFF).to_bytes(CTI_COUNTER_LENGTH, "big")
        + random
    )


def exi_cti(audience: str, sequence: int) -> bytes:
    """The ``cti`` of an ``exi`` token (RFC 9200 §5.10.3): the RS identifier, then the sequence number.

    ``UTF-8(audience) || sequence`` as a big-endian unsigned integer in as few bytes as it needs (at least one, at
    most :data:`EXI_SEQUENCE_MAX_BYTES`), the layout :func:`resource_server.token_store.parse_exi_cti` reads.

    >>> exi_cti("front-door", 7).hex(" ")
    '66 72 6f 6e 74 2d 64 6f 6f 72 07'
    >>> exi_cti("front-door", 256)[-2:]
    b'\\x01\\x00'

    :raises ValueError: ``sequence`` below 1 or too large for 8 bytes.
    """
    if not 1 <= sequence < 1 << (8 * EXI_SEQUENCE_MAX_BYTES):
        raise ValueError(f"exi sequence number {sequence} out of range")
    return audience.encode("utf-8") + sequence.to_bytes((sequence.bit_length() + 7) // 8, "big")


def _misconfigured(rs: ResourceServer, reason: str) -> NoReturn:
    """Refuse a request the audience's registration cannot serve; the operator learns why from the log."""
    logger.error("resource server %r is misconfigured: %s", rs.audience, reason)
    raise InvalidRequest("audience cannot be served", detail=f"resource server misconfigured: {reason}")


class TokenEndpoint:
    """The token endpoint of RFC 9200 §5.8 for the ``client_credentials`` grant (see the module documentation).

    :param settings: ``issuer`` (``iss``), ``token_lifetime``, ``exi_upload_window`` and ``max_payload`` are used.
    :param storage: clients, resource servers, signing keys, and the record of issued tokens.
    :param policy: decides what each client may get (RFC 9200 §5.8.1).
    :param limiter: the failure rate limit, shared with the introspection endpoint.
    :param clock: seconds since the epoch; read once per request and passed down as ``now``.
    :param random_bytes: ``n`` -> ``n`` random bytes for identifiers and generated keys (``secrets.token_bytes``;
        injectable so that tests can force a collision).
    :param consent: records access requests when the policy asks for consent; without it such a decision is a
        plain ``invalid_scope``.
    :param audit: where refusals are queued for the audit log (none: not recorded).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        policy: AccessPolicy,
        limiter: FailureRateLimiter,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        consent: ConsentService | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self._settings = settings
        self._storage = storage
        self._policy = policy
        self._limiter = limiter
        self._clock = clock
        self._random = random_bytes
        # The cti counter (clocked_cti); next() on itertools.count is atomic, so threads need no lock.
        self._cti_counter = itertools.count(secrets.randbelow(1 << (8 * CTI_COUNTER_LENGTH)))
        self._consent = consent
        self._audit = audit
        self._grants: dict[GrantType | int, GrantHandler] = {}

    def handle(self, request: TokenRequest, *, credentials: ClientCredentials | None, peer: str) -> AccessInformation:
        """Process a token request (RFC 9200 §5.8.1) and return the Access Information (§5.8.2).

        :param request: the decoded request.
        :param credentials: client credentials the transport found (HTTP Basic), or ``None``.
        :param peer: the source address (without port), for the rate limit and logs.
        :raises OAuthError: one of the errors in the module table.
        :raises TooManyRequests: the rate limit for failed authentications is reached.
        """
        now = int(self._clock())
        client_id = credentials.client_id if credentials is not None else request.client_id
        try:
            return self._handle(request, credentials, peer, now)
        except OAuthError as exc:
            logger.info(
                "token request refused: %s (%s) client_id=%r peer=%r",
                exc.code.name.lower(),
                exc.detail or exc.description,
                client_id,
                peer,
            )
            reason = f"{exc.code.name.lower()}: {exc.detail or exc.description}"
            # Refused before the client authenticated: it failed, or the grant type was refused first.
            unauthenticated = isinstance(exc, InvalidClient | UnsupportedGrantType)
            self._audit_refusal(request, client_id, now, reason, authenticated=not unauthenticated)
            raise
        except TooManyRequests as exc:
            self._audit_refusal(request, client_id, now, f"rate limited: {exc.detail}", authenticated=False)
            raise

    def handle_queued(
        self, request: TokenRequest, *, credentials: ClientCredentials | None, peer: str
    ) -> tuple[AccessInformation, QueuedRecord] | None:
        """:meth:`handle` for event-loop transports: the token's record is queued for the group commit rather than
        awaited, so no thread blocks on the commit. The caller awaits :attr:`QueuedRecord.commit` before it sends
        the token.

        ``None`` (nothing written, nothing issued): serve the request with :meth:`handle` in a thread after all.
        That is the answer for grants other than ``client_credentials`` (they consume codes and refresh tokens,
        which a retry after a duplicate identifier could not repeat), for a resource server that counts ``exi``
        sequence numbers (RFC 9200 §5.10.3: a durable counter write comes before the token), and for a request the
        policy refers to consent (recording the access request is a write). Otherwise it raises what
        :meth:`handle` raises.
        """
        if request.effective_grant_type in self._grants:
            return None
        queued: list[QueuedRecord] = []
        reset = _QUEUED.set(queued)
        try:
            info = self.handle(request, credentials=credentials, peer=peer)
        except _NeedsThread:
            return None
        finally:
            _QUEUED.reset(reset)
        (record,) = queued
        return info, record

    def _audit_refusal(
        self, request: TokenRequest, client_id: str | None, now: int, reason: str, *, authenticated: bool
    ) -> None:
        """Queue a ``token.refused`` entry (never blocks; see :mod:`as_server.audit`). The actor is the client only
        when it ``authenticated``; a failed or missing authentication is ``anonymous``, with the client id it
        claimed in ``client_id``."""
        if self._audit is None:
            return
        scope = request.scope
        self._audit.submit(
            AuditEntry(
                at=now,
                action="token.refused",
                actor="client:" + (clean_text(client_id) or "") if authenticated and client_id else "anonymous",
                client_id=clean_text(client_id),
                audience=clean_text(request.audience),
                scope=describe_scope(scope) if isinstance(scope, str | bytes) else None,
                detail=clean_text(reason, 1000) or "",
            )
        )

    # -- the steps, in order -----------------------------------------------------------------------------------

    def _handle(
        self, request: TokenRequest, credentials: ClientCredentials | None, peer: str, now: int
    ) -> AccessInformation:
        grant = request.effective_grant_type
        handler = self._grants.get(grant)
        if handler is not None:
            return handler.handle(request, credentials, peer=peer, now=now)
        if grant != GrantType.CLIENT_CREDENTIALS:  # before authentication: grants_supported is public anyway
            name = grant.name.lower() if isinstance(grant, GrantType) else str(grant)
            raise UnsupportedGrantType("unsupported grant_type", detail=f"grant_type {name}")
        client = self._authenticate(request, credentials, peer, now)
        self._check_grant(client)
        access = IssueRequest(client=client, audience=request.audience, scope=request.scope)
        return self.issue(request, access, peer=peer, now=now).info

    # -- grant handlers (issue #5: authorization code and refresh tokens, as_server.oauth) ----------------------

    def register_grant(self, grant_type: GrantType, handler: GrantHandler) -> None:
        """Serve ``grant_type`` with ``handler`` (``authorization_code``, ``refresh_token``: :mod:`as_server.oauth`).

        Grant types without a handler other than ``client_credentials`` are ``unsupported_grant_type``.
        """
        self._grants[grant_type] = handler

    @property
    def grant_types(self) -> frozenset[GrantType]:
        """The grant types this endpoint serves (RFC 8414 ``grant_types_supported``)."""
        return frozenset({GrantType.CLIENT_CREDENTIALS, *(GrantType(g) for g in self._grants)})

    def authenticate_client(
        self, request: TokenRequest, credentials: ClientCredentials | None, *, peer: str, now: int
    ) -> Client:
        """Client authentication with the secret and the failure rate limit (for grant handlers).

        :raises InvalidClient: :raises TooManyRequests: :raises InvalidRequest:
        """
        return self._authenticate(request, credentials, peer, now)

    def issue(self, request: TokenRequest, access: IssueRequest, *, peer: str, now: int) -> Issued:
        """The shared issuance of every grant: audience, scope, policy, lifetime, PoP key, profile, protection.

        The grant handler has authenticated the client and settled who the token is for; ``request`` supplies what
        the client asks about the token itself (``req_cnf``, ``ace_profile``, ``cnonce``, the form of ``scope``).

        :raises OAuthError: one of the errors in the module table (from the audience on).
        """
        client = access.client
        rs = self._resource_server(access.audience, client)
        requested = self._requested_scope(access.scope, client, rs)
        decision = self._policy.decide(
            AccessRequest(
                client_id=client.client_id,
                audience=rs.audience,
                scope=requested,
                now=now,
                subject=access.subject,
                subject_groups=access.subject_groups,
            )
        )
        if decision.consent is not None and not decision.permits and self._consent is not None and access.ask_consent:
            if _QUEUED.get() is not None:
                raise _NeedsThread  # recording the access request is a write: handle_queued declines
            # Issue #5: record (or merge) an access request and refuse with its URI (as_server.consent).
            self._consent.request_consent(
                client_id=client.client_id, subject=access.subject, audience=rs.audience, decision=decision, now=now
            )
        granted = self._granted_scope(requested, decision, rs)
        lifetime = self._lifetime(rs, decision, now)
        if access.rebind is not None:
            pop = self._rebound_pop(access.rebind, client, now)
        else:
            pop = self._requested_pop(request, client, rs, now)
        profile = self._profile(request, client, rs, pop)
        protect = self._protector(rs, carries_secret=pop.mode in (_Mode.GENERATE, _Mode.REBIND))
        info, record = self._issue(
            request,
            client,
            rs,
            requested,
            granted,
            lifetime,
            pop,
            profile,
            protect,
            now,
            peer,
            decision.rules,
            subject=access.subject,
        )
        return Issued(info, record, decision)

    def _authenticate(
        self, request: TokenRequest, credentials: ClientCredentials | None, peer: str, now: int
    ) -> Client:
        """RFC 6749 §2.3.1 / RFC 9200 §5.8.1: the client authenticates with its secret."""
        creds = select_credentials(credentials, request.client_id, request.client_secret)
        # A request without credentials is not counted as a failure: HTTP clients may send one first and
        # authenticate after the 401 challenge (RFC 6749 §2.3.1).
        self._limiter.check(creds.client_id if creds is not None else None, peer, now)
        if creds is None:
            raise InvalidClient("client authentication required", detail="no client credentials")
        client = self._storage.get_client(creds.client_id)
        if not check_secret(creds, client.secret_hash if client is not None else None):
            self._limiter.record_failure(creds.client_id, peer, now)
            logger.warning(
                "client authentication failed: client_id=%r peer=%r method=%s", creds.client_id, peer, creds.method
            )
            raise InvalidClient("client authentication failed", detail="unknown client or wrong secret")
        assert client is not None
        if not client.enabled:
            logger.warning("disabled client tried to get a token: client_id=%r peer=%r", client.client_id, peer)
            raise InvalidClient("client authentication failed", detail="client disabled")
        return client

    @staticmethod
    def _check_grant(client: Client) -> None:
        """RFC 9200 §5.8.1: ``grant_type`` defaults to ``client_credentials``, served here (grant types with a handler,
        :meth:`register_grant`, were dispatched before, any other, ``password`` say, is unsupported): for clients
        registered for it (RFC 6749 §5.2 ``unauthorized_client``)."""
        if GrantType.CLIENT_CREDENTIALS not in client.grant_types:
            raise UnauthorizedClient("client may not use client_credentials")

    def _resource_server(self, requested: str | None, client: Client) -> ResourceServer:
        """The audience (RFC 9200 §5.8.1, RFC 8693 §2.1): requested, or the client's default."""
        audience = requested if requested is not None else client.default_audience
        if not audience:
            raise InvalidRequest("audience missing")
        rs = self._storage.get_resource_server(audience) if audience in client.audiences else None
        if rs is None or not rs.enabled:
            # One answer for unknown, disabled and not-allowed audiences: no probing of what exists.
            raise InvalidRequest(UNKNOWN_AUDIENCE, detail=f"audience {audience!r} unknown, disabled or not allowed")
        return rs

    def _requested_scope(self, requested: str | bytes | None, client: Client, rs: ResourceServer) -> Scope:
        """The scope (RFC 9200 §5.8.1), parsed in the audience's format: AIF (RFC 9237) or text (RFC 6749 §3.3).

        For an AIF audience a byte string is ``application/aif+cbor`` and a text string ``application/aif+json``
        (how JSON transports carry it, see :mod:`ace_core.scope`).
        """
        raw = requested if requested is not None else client.default_scope
        if raw is None:
            raise InvalidScope("scope missing")  # RFC 6749 §3.3: no default -> invalid scope
        try:
            scope = decode_scope(raw, aif=rs.scope_format == ScopeFormat.AIF, max_size=self._settings.max_payload)
        except WireFormatError as exc:
            raise InvalidScope("malformed scope", detail=f"scope for {rs.audience!r}: {exc.detail}") from exc
        if scope.is_empty:
            raise InvalidScope("empty scope")
        return scope

    @staticmethod
    def _resources(rs: ResourceServer) -> Scope | None:
        """What the RS serves (``ResourceServer.resources``), in its scope format; ``None`` if not limited."""
        value = rs.resources
        if value is None:
            return None
        try:
            if rs.scope_format == ScopeFormat.AIF:
                if isinstance(value, bytes):
                    return AifScope.from_cbor(value)
                return AifScope.parse_spec(value) if value.startswith("/") else AifScope.from_json_text(value)
            if isinstance(value, bytes):
                raise ValueError("a text-scope resource server lists its resources as text")
            return TextScope.parse(value)
        except (ValueError, TypeError) as exc:
            _misconfigured(rs, f"resources are malformed: {exc}")

    def _granted_scope(self, requested: Scope, decision: Decision, rs: ResourceServer) -> Scope:
        """requested ∩ policy grant ∩ what the RS serves (RFC 9200 §5.8.1)."""
        if decision.granted is None or decision.granted.is_empty:
            raise InvalidScope("scope not granted", detail=f"policy: {decision.reason}")
        granted = _intersection(requested, decision.granted)
        if granted is None:
            logger.error("policy returned a %s for a %s request", type(decision.granted).__name__, type(requested))
            raise InvalidScope("scope not granted", detail="policy granted a scope of another kind")
        resources = self._resources(rs)
        if resources is not None:
            served = _intersection(granted, resources)
            if served is None:  # pragma: no cover - _resources parses in the audience's format, like the request
                _misconfigured(rs, "resources are of another scope kind")
            granted = served
        if granted.is_empty:
            raise InvalidScope("scope not granted", detail="nothing requested is granted and served")
        return granted

    def _lifetime(self, rs: ResourceServer, decision: Decision, now: int) -> int:
        """min(AS default, RS maximum, policy maximum, policy end time - now)."""
        limits = [self._settings.token_lifetime, rs.max_lifetime]
        if decision.max_lifetime is not None:
            limits.append(decision.max_lifetime)
        if decision.not_after is not None:
            limits.append(decision.not_after - now)
        lifetime = min(limits)
        if lifetime <= 0:
            raise InvalidScope("scope not granted at this time", detail=f"lifetime {lifetime} from {limits}")
        return lifetime

    def _requested_pop(self, request: TokenRequest, client: Client, rs: ResourceServer, now: int) -> _Pop:
        """Which key the token will be bound to (RFC 9201 §3.1, RFC 9200 §5.8.1)."""
        if request.req_cnf is None:
            if PopKeyType.SYMMETRIC not in client.pop_key_types:
                raise InvalidRequest("req_cnf required", detail="client may not use keys generated by the AS")
            return _Pop(_Mode.GENERATE, key_type=PopKeyType.SYMMETRIC)
        try:
            cnf = Confirmation.from_cbor_map(dict(request.req_cnf))
        except WireFormatError as exc:
            raise InvalidRequest("malformed req_cnf", detail=exc.detail) from exc
        if cnf.kid is not None:
            return self._pop_by_kid(cnf.kid, client, rs, now)
        if cnf.cose_key is None:
            raise InvalidRequest("req_cnf must hold a COSE_Key or a kid", detail="Encrypted_COSE_Key or osc")
        key = cnf.cose_key
        if key.is_symmetric:
            raise InvalidRequest("symmetric keys are not accepted in req_cnf")  # RFC 9201 §3.1
        if key.d is not None:
            raise InvalidRequest("req_cnf must not hold a private key")
        key_type = _key_type(key)
        if key_type is None:
            raise UnsupportedPopKey("unsupported key type", detail=f"kty {key.kty!r} crv {key.crv!r}")
        if key.alg is not None and key.alg != _SIGNATURE_ALG[key_type]:
            raise UnsupportedPopKey("key algorithm not usable", detail=f"alg {key.alg!r} on a {key_type} key")
        if key_type not in client.pop_key_types:
            raise UnsupportedPopKey("key type not allowed for this client", detail=str(key_type))
        registered = client.public_key
        if registered is None or registered.is_symmetric or registered.thumbprint() != key.thumbprint():
            # RFC 9202 §3.2.1: the AS MUST check that the client is associated with the key.
            raise InvalidRequest("req_cnf is not the registered key of the client")
        key = registered.public()
        if key.kid is None:
            key = dataclasses.replace(key, kid=_key_id(key))
        return _Pop(_Mode.KEY, key_type=key_type, key=key)

    def _pop_by_kid(self, kid: bytes, client: Client, rs: ResourceServer, now: int) -> _Pop:
        """``req_cnf: {3: kid}``: the key of an earlier token (update of access rights) or the registered key."""
        previous = self._storage.find_by_pop_kid(client.client_id, rs.audience, kid)
        if previous is not None and previous.status == TokenStatus.ACTIVE and previous.exp > now:
            key_type = self._previous_key_type(previous)
            if key_type is not None and key_type not in client.pop_key_types:
                raise UnsupportedPopKey("key type not allowed for this client", detail=str(key_type))
            return _Pop(_Mode.KID, key_type=key_type, kid=kid, previous=previous)
        registered = client.public_key
        if registered is not None and not registered.is_symmetric and kid == _key_id(registered):
            key_type = _key_type(registered)
            if key_type is None or key_type not in client.pop_key_types:
                raise UnsupportedPopKey("key type not allowed for this client", detail=str(key_type))
            key = registered.public()
            if key.kid is None:
                key = dataclasses.replace(key, kid=kid)
            return _Pop(_Mode.KEY, key_type=key_type, key=key)
        return _Pop(_Mode.UNKNOWN_KID, kid=kid)

    def _rebound_pop(self, rebind: Rebind, client: Client, now: int) -> _Pop:
        """The PoP key of an earlier token, for a refreshed token (RFC 9200 §5.8.1: "the same PoP key").

        By ``kid`` while the earlier token is active and unexpired (the RS holds the key: RFC 9203 §3.1 update of
        access rights); by value from ``rebind.holder`` otherwise: OSCORE material or a symmetric key as generated
        (``cnf`` in the token and in the response), a public key as the client's registered key (with ``rs_cnf``).

        :raises InvalidGrant: no token carries the key by value (a family that began with ``req_cnf`` by ``kid``).
        """
        previous, holder = rebind.previous, rebind.holder
        if previous.pop_kid is None:
            raise InvalidGrant("the PoP key cannot be kept", detail=f"cti {previous.cti.hex()} has no pop_kid")
        if previous.status == TokenStatus.ACTIVE and previous.exp > now:
            key_type = self._previous_key_type(previous)
            if key_type is not None and key_type not in client.pop_key_types:
                raise UnsupportedPopKey("key type not allowed for this client", detail=str(key_type))
            return _Pop(_Mode.KID, key_type=key_type, kid=previous.pop_kid, previous=previous)
        try:
            cnf = Confirmation.from_cbor_map(cbor.loads(holder.cnf))
        except WireFormatError as exc:
            raise InvalidGrant("the PoP key cannot be kept", detail=f"stored cnf: {exc.detail}") from exc
        if cnf.cose_key is not None and not cnf.cose_key.is_symmetric:
            key_type = _key_type(cnf.cose_key)
            if key_type is None or key_type not in client.pop_key_types:
                raise UnsupportedPopKey("key type not allowed for this client", detail=str(key_type))
            return _Pop(_Mode.KEY, key_type=key_type, key=cnf.cose_key)
        if cnf.osc is None and cnf.cose_key is None:
            raise InvalidGrant("the PoP key cannot be kept", detail="the holder's cnf has no key by value")
        if PopKeyType.SYMMETRIC not in client.pop_key_types:
            raise UnsupportedPopKey("key type not allowed for this client", detail="symmetric")
        return _Pop(_Mode.REBIND, key_type=PopKeyType.SYMMETRIC, kid=previous.pop_kid, previous=holder, cnf=cnf)

    @staticmethod
    def _previous_key_type(previous: IssuedToken) -> PopKeyType | None:
        try:
            cnf = Confirmation.from_cbor_map(cbor.loads(previous.cnf))
        except WireFormatError:
            return None
        if cnf.osc is not None:
            return PopKeyType.SYMMETRIC
        if cnf.cose_key is not None:
            return _key_type(cnf.cose_key)
        if previous.profile == AceProfile.COAP_OSCORE:
            return PopKeyType.SYMMETRIC  # a kid-only chain in the OSCORE profile started with AS material
        return None

    @staticmethod
    def _profile(request: TokenRequest, client: Client, rs: ResourceServer, pop: _Pop) -> AceProfile:
        """RFC 9200 §5.8.4.3: the profile the client must use with the RS."""
        shared = client.profiles & rs.profiles
        named = request.ace_profile if isinstance(request.ace_profile, int) else None
        if not shared or (named is not None and named not in shared):
            raise IncompatibleAceProfiles(
                "no common ACE profile",
                detail=f"client {sorted(client.profiles)} rs {sorted(rs.profiles)} asked {named!r}",
            )
        candidates = [AceProfile(named)] if named is not None else [p for p in PROFILE_PREFERENCE if p in shared]
        if pop.mode is _Mode.KEY:
            usable = {AceProfile.COAP_DTLS}  # raw public keys: RFC 9202 §3.2
        elif pop.mode in (_Mode.KID, _Mode.REBIND):
            assert pop.previous is not None
            usable = {pop.previous.profile} if pop.previous.profile is not None else set()
        else:
            usable = set(PROFILE_PREFERENCE)
        for profile in candidates:
            if profile in usable:
                break
        else:
            if pop.mode is _Mode.KEY:
                raise UnsupportedPopKey("audience does not accept raw public keys", detail=f"profiles {candidates}")
            raise IncompatibleAceProfiles(
                "no common ACE profile", detail=f"earlier token's profile is not among {candidates}"
            )
        if pop.mode is _Mode.UNKNOWN_KID:
            if profile == AceProfile.COAP_DTLS:
                raise UnsupportedPopKey("unknown kid")  # RFC 9202 §4
            raise InvalidRequest("unknown kid")  # RFC 9203 §3.1
        return profile

    def _protector(self, rs: ResourceServer, *, carries_secret: bool) -> Callable[[cwt.Claims], bytes]:
        """How tokens for ``rs`` are protected (RFC 8392 §7.1), checked before anything is generated.

        Tokens are tagged 61 with an empty unprotected header, so their RFC 9770 §4 hash identifies them.
        """
        form = rs.token_form
        if carries_secret and form not in _ENCRYPTED_FORMS:
            _misconfigured(rs, f"token form {form} cannot carry the symmetric PoP key the AS generates")
        shared = rs.shared_key
        if form != TokenForm.SIGN1 and (shared is None or not shared.is_symmetric):
            _misconfigured(rs, f"token form {form} needs a symmetric shared_key")
        sign_key: CoseKey | None = None
        sign_alg: CoseAlgorithm | None = None
        if form in (TokenForm.SIGN1, TokenForm.SIGN1_ENCRYPT0):
            signing = self._storage.signing_key()
            if signing is None:
                _misconfigured(rs, f"token form {form} needs an AS signing key, and there is none")
            sign_key, sign_alg = signing.key, signing.alg
        aead: CoseAlgorithm | None = None
        if shared is not None and shared.alg is None and form in _ENCRYPTED_FORMS:
            aead = _DEFAULT_AEAD.get(len(shared.secret()))
            if aead is None:
                _misconfigured(rs, "shared_key names no algorithm and has no default AEAD for its length")

        def protect(claims: cwt.Claims) -> bytes:
            try:
                if form == TokenForm.ENCRYPT0:
                    return cwt.issue(claims, encrypt_key=shared, alg=aead, cwt_tag=True)
                if form == TokenForm.SIGN1_ENCRYPT0:
                    return cwt.issue(
                        claims, sign_key=sign_key, alg=sign_alg, encrypt_key=shared, encrypt_alg=aead, cwt_tag=True
                    )
                if form == TokenForm.MAC0:
                    assert shared is not None
                    alg = None if shared.alg is not None else _DEFAULT_MAC
                    return cwt.issue(claims, mac_key=shared, alg=alg, cwt_tag=True)
                return cwt.issue(claims, sign_key=sign_key, alg=sign_alg, cwt_tag=True)
            except ValueError as exc:  # a key that does not fit its algorithm or form
                _misconfigured(rs, f"cannot protect a {form} token: {exc}")

        return protect

    # -- issuing ---------------------------------------------------------------------------------------------

    def _issue(
        self,
        request: TokenRequest,
        client: Client,
        rs: ResourceServer,
        requested: Scope,
        granted: Scope,
        lifetime: int,
        pop: _Pop,
        profile: AceProfile,
        protect: Callable[[cwt.Claims], bytes],
        now: int,
        peer: str,
        rules: tuple[str, ...] = (),
        *,
        subject: str | None = None,
    ) -> tuple[AccessInformation, IssuedToken]:
        scope_claim = granted.encode_cbor_value()
        generated = pop.mode is _Mode.GENERATE
        material_length = _GENERATED_LENGTH[profile] if generated else 0
        # The audience's claim options (module documentation: compact claims, exi).
        compact = rs.compact_claims
        iat_claim = None if compact else now
        profile_claim = None if compact and len(rs.profiles) == 1 else int(profile)
        clocked = rs.has_clock
        if clocked:
            exp_claim: int | None = now + lifetime
            exi_claim: int | None = None
            record_exp = now + lifetime
            cti_length = CTI_RANDOM_LENGTH
        else:  # RFC 9200 §5.10.3: exi instead of exp, and a cti with the RS's sequence number
            if _QUEUED.get() is not None:
                raise _NeedsThread  # before the counter is incremented (handle_queued)
            exp_claim, exi_claim = None, lifetime
            record_exp = now + lifetime + self._settings.exi_upload_window
            cti_length = 0
        for _ in range(MAX_ID_ATTEMPTS):
            # Fresh identifiers and key material on every attempt (the duplicate may be the generated PoP key id,
            # not the cti), in one draw: each read of the OS random source lets other threads take the GIL.
            fresh = self._random(cti_length + material_length)
            if clocked:
                cti = clocked_cti(now, next(self._cti_counter), fresh[:CTI_RANDOM_LENGTH])
            else:
                cti = exi_cti(rs.audience, self._storage.next_exi_sequence(rs.audience))
            cnf, response_cnf, rs_cnf, pop_kid = self._bind(rs, pop, profile, fresh[cti_length:])
            claims = cwt.Claims(
                iss=self._settings.issuer,
                sub=subject,  # the signed-in user (authorization code and refresh grants, as_server.oauth)
                aud=rs.audience,
                exp=exp_claim,
                iat=iat_claim,
                cti=cti,
                cnf=cnf,
                scope=scope_claim,
                ace_profile=profile_claim,
                cnonce=request.cnonce,  # RFC 9200 §5.8.4.4: copied into the token
                exi=exi_claim,
            )
            token = protect(claims)
            record = IssuedToken(
                cti=cti,
                client_id=client.client_id,
                audience=rs.audience,
                scope=scope_claim,
                profile=profile,
                iat=now,
                exp=record_exp,
                token_hash=token_hash(token),
                cnf=cbor.dumps(cnf.to_cbor_map()),
                pop_kid=pop_kid,
                subject=subject,
                pop_key_generated=generated,
                exi=exi_claim,
                rules=rules,
            )
            announce = functools.partial(
                logger.info,
                "issued token cti=%s client_id=%r audience=%r profile=%s pop=%s lifetime=%d%s peer=%r",
                cti.hex(),
                client.client_id,
                rs.audience,
                profile.name.lower(),
                pop.mode.value,
                lifetime,
                "" if clocked else " (exi)",
                peer,
            )
            queue = _QUEUED.get()
            if queue is not None:
                # handle_queued: the caller awaits the commit (and serves the request again on a duplicate).
                queue.append(QueuedRecord(self._storage.submit_record(record), announce))
                break
            try:
                self._storage.record(record)
            except DuplicateError:
                logger.info("cti or generated PoP key id already recorded; drawing new ones")
                continue
            announce()
            break
        else:
            raise RuntimeError("could not record the token under unused identifiers")
        unchanged = granted == requested and request.scope is not None
        info = AccessInformation(
            access_token=token,
            token_type=TokenType.POP,
            expires_in=lifetime,
            scope=None if unchanged else self._response_scope(request, granted),
            ace_profile=profile if request.ace_profile is not None else None,
            cnf=response_cnf,
            rs_cnf=rs_cnf,
        )
        return info, record

    @staticmethod
    def _bind(
        rs: ResourceServer, pop: _Pop, profile: AceProfile, fresh: bytes
    ) -> tuple[Confirmation, dict[int, object] | None, dict[int, object] | None, bytes]:
        """The token's ``cnf``, the response's ``cnf`` and ``rs_cnf``, and the PoP key id to record.

        :param fresh: random bytes for generated material (:data:`_GENERATED_LENGTH` of the profile).
        """
        if pop.mode is _Mode.GENERATE:
            if profile == AceProfile.COAP_OSCORE:
                # RFC 9203 §3.2: the same OSCORE_Input_Material in the response and in the token.
                material = OscoreMaterial(id=fresh[:OSCORE_ID_LENGTH], ms=fresh[OSCORE_ID_LENGTH:])
                cnf = Confirmation(osc=material)
                assert material.id is not None
                return cnf, dict(cnf.to_cbor_map()), None, material.id
            # RFC 9202 §3.3.1: a symmetric COSE_Key (kty 4) in both.
            psk = CoseKey.symmetric(fresh[:PSK_LENGTH], kid=fresh[PSK_LENGTH:])
            cnf = Confirmation(cose_key=psk)
            assert psk.kid is not None
            return cnf, dict(cnf.to_cbor_map()), None, psk.kid
        if pop.mode is _Mode.KEY:
            assert pop.key is not None and pop.key.kid is not None
            # RFC 9202 §3.2.1: rs_cnf MUST be returned (the AS cannot know that the client has the RS's key).
            if rs.public_key is None:
                raise UnsupportedPopKey(
                    "audience does not accept raw public keys", detail=f"{rs.audience} has no public key"
                )
            if rs.public_key.is_symmetric:
                _misconfigured(rs, "public_key is a symmetric key")
            rs_cnf = dict(Confirmation(cose_key=rs.public_key.public()).to_cbor_map())
            return Confirmation(cose_key=pop.key), None, rs_cnf, pop.key.kid
        if pop.mode is _Mode.REBIND:
            assert pop.cnf is not None and pop.kid is not None
            # A refresh after the RS dropped the key: the same material by value, in the token and the response, as
            # when it was generated (RFC 9203 §3.2), so the client knows the RS derives a new security context.
            return pop.cnf, dict(pop.cnf.to_cbor_map()), None, pop.kid
        assert pop.mode is _Mode.KID and pop.kid is not None
        # RFC 9203 §3.1 / RFC 9202 §4: the token names the key the RS already holds; the response has no cnf.
        return Confirmation(kid=pop.kid), None, None, pop.kid

    @staticmethod
    def _response_scope(request: TokenRequest, granted: Scope) -> str | bytes:
        """The granted scope in the form the request used (RFC 6749 §5.1); CBOR form when it had none."""
        if isinstance(request.scope, str):
            return granted.encode_json_value()
        return granted.encode_cbor_value()
