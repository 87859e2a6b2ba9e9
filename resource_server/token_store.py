"""The tokens a resource server holds: one per proof-of-possession key, bounded, expiring, optionally persisted.

RFC 9200 §5.10.1: the RS MUST verify a token before storing it, MUST be able to store at least one, and it is
RECOMMENDED to keep one token per PoP key, a new token for the same key *superseding* the old one. In the OSCORE
profile (RFC 9203) the PoP key is the OSCORE_Input_Material, identified by its ``id``; a token whose ``cnf`` is
``{3: kid}`` (update of access rights, RFC 9203 §4.1) names the same ``id`` as its ``kid``. :class:`TokenStore`
indexes tokens by that identifier (O(1) lookups), and also by the Recipient ID the RS chose for the security
context (``ID2``), so a transport can find the token of an incoming OSCORE request in O(1).

**Bound and eviction.** At most ``max_tokens`` tokens are held. To admit a token for a new key into a full store,
the store first purges expired tokens; if it is still full it evicts the token *received longest ago* (the order
of uploads: a superseding or updated token counts as received when it was uploaded). Every removal (expired,
superseded, updated, evicted, dropped) is reported to the listeners as a :class:`Removal`, so a transport drops the
security context that belonged to the token (RFC 9203 §4.3: "the RS MUST NOT use a security context after its
token expired") -- except after an update of access rights, which keeps the context (:attr:`Removal.keeps_context`).

**Expiry** (RFC 9200 §5.10.3). A token expires at ``exp`` (plus leeway) on the wall clock, if the lock has one,
and at *first receipt* + ``exi`` on the monotonic counter the caller passes (uptime: a clockless lock has no wall
clock but does count seconds). :meth:`purge` removes expired tokens in O(log n) each (two heaps of deadlines).

**exi sequence numbers.** An AS issuing ``exi`` tokens MUST give them a ``cti`` that is "the binary representation
of the concatenation of the RS identifier with a sequence number" (§5.10.3); the byte layout is not specified, so
Ostiary defines it as::

    cti = UTF-8(audience) || sequence number (big-endian unsigned, 1 to 8 bytes)

where ``audience`` is one of the lock's audiences (the longest matching one wins) -- see :func:`parse_exi_cti`.
The store keeps, per audience, the highest sequence number of an ``exi`` token it no longer holds; a token whose
number is not above it is refused as expired (§5.10.3 "treat tokens with lower sequence numbers as expired").
"No longer holds" is deliberately wider than "expired": an ``exi`` token that was evicted, superseded or dropped at
a restart cannot be accepted again either, because its ``exi`` clock started at first receipt and the RS would
otherwise restart it. (Re-posting a token the store *still holds* is fine and keeps the original receipt time.)

**Persistence** (optional, ``path``). :meth:`save` writes a CBOR snapshot atomically (temporary file, ``fsync``,
``rename``, ``fsync`` of the directory: a crash leaves the old or the new file, never a torn one), mode 0600. It
holds the tokens *as received* (the OSCORE master secret stays encrypted under the AS<->RS key), the nonces and
Recipient IDs of each security context, the OSCORE sender sequence numbers reserved so far, the exi high-water
marks and the Recipient-ID counter. :meth:`load` returns that snapshot; the caller re-verifies every token
(:meth:`resource_server.authz_info.AuthzInfo.restore`).

**Memory per token.** A held token is a :class:`StoredToken` (the few claims the lock uses, not the claims set),
an :class:`OscoreAssociation` (derived keys, not the Master Secret) and index entries: about 1.3 KiB with the
transport's security context (``make bench BENCH=rs``, goal (c)). The token bytes (about 150 B for a typical lock
token) and the two 8-byte nonces a restart needs are kept only when the store persists (:attr:`TokenStore.persistent`);
they are the input of the snapshot, and without a state file nothing could use them.

**OSCORE replay safety across restarts** (RFC 8613 Appendix B.1), the rule Ostiary implements:

* *Sender Sequence Number* (B.1.1): numbers are reserved in chunks of ``sequence_chunk``; the reservation is
  written (and fsynced) *before* a number from a new chunk is used, and a restored context continues at the
  reserved bound, so no (key, nonce) pair is ever used twice.
* *Replay window* (B.1.2): not persisted. A restored context starts with an *uninitialised* window and an Echo
  value; its first request is answered with a protected 4.01 carrying Echo, and the window is initialised from the
  request that returns the Echo. A request recorded before the restart and replayed afterwards carries no Echo, so
  it is never executed. (aiocoap clients answer the Echo challenge automatically.)
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import logging
import operator
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ace_core import cbor
from ace_core.cwt import Claims
from ace_core.errors import WireFormatError
from ace_core.oscore import DEFAULT_AEAD, DEFAULT_HKDF, OscoreContextParameters
from ace_core.registry import NI_SUITE_SHA_256
from ace_core.scope import AifScope
from resource_server.oscore_keys import derive_keys

__all__ = [
    "MAX_SEQUENCE_BYTES",
    "OscoreAssociation",
    "PersistedState",
    "PersistedToken",
    "Removal",
    "RemovalReason",
    "StoredToken",
    "TokenStore",
    "parse_exi_cti",
    "token_hash",
]

log = logging.getLogger("ostiary.rs.store")

#: The sequence number in an ``exi`` token's ``cti`` is 1 to 8 bytes long (module docstring).
MAX_SEQUENCE_BYTES = 8
_STATE_VERSION = 1
#: RFC 6920 §6 binary format: 2 reserved bits (zero) and the 6-bit Suite ID (RFC 9770 §4).
_SHA_256_PREFIX = bytes((NI_SUITE_SHA_256,))
_EXPIRES_AT = operator.attrgetter("expires_at")
_EXPIRES_AFTER = operator.attrgetter("expires_after")


def parse_exi_cti(cti: bytes | None, audiences: Sequence[str]) -> tuple[str, int] | None:
    """Split an ``exi`` token's ``cti`` into ``(audience, sequence number)``, or ``None`` if it has another form.

    Layout (RFC 9200 §5.10.3 leaves it open): ``UTF-8(audience) || big-endian unsigned integer of 1-8 bytes``.

    >>> parse_exi_cti(b"front-door" + bytes([0, 7]), ["front-door"])
    ('front-door', 7)
    >>> parse_exi_cti(b"front-door", ["front-door"]) is None
    True
    """
    if cti is None:
        return None
    for audience in sorted(audiences, key=len, reverse=True):
        prefix = audience.encode("utf-8")
        rest = cti[len(prefix) :]
        if cti.startswith(prefix) and 1 <= len(rest) <= MAX_SEQUENCE_BYTES:
            return audience, int.from_bytes(rest, "big")
    return None


@dataclass(slots=True, eq=False, kw_only=True)
class OscoreAssociation:
    """The OSCORE security association derived for a token (RFC 9203 §4.1-§4.3), as the RS keeps it: the derived
    keys and identifiers (RFC 8613 §3.2.1), not the Master Secret and Master Salt they came from.

    :attr:`nonce1` and :attr:`nonce2` are what a restart needs to derive the keys again from the persisted token
    (RFC 9203 §4.3); they are kept only by a store that persists (``None`` otherwise). :attr:`sender_sequence_reserved`
    is the bound below which sender sequence numbers may have been used (RFC 8613 B.1.1); :attr:`restored` marks a
    context rebuilt after a restart (its replay window needs Echo recovery).
    """

    client_recipient_id: bytes  # ID1: the RS's Sender ID
    server_recipient_id: bytes  # ID2: the RS's Recipient ID
    sender_key: bytes = field(repr=False)
    recipient_key: bytes = field(repr=False)
    common_iv: bytes = field(repr=False)
    id_context: bytes | None = None
    aead_alg: int = DEFAULT_AEAD
    hkdf_alg: int = DEFAULT_HKDF
    nonce1: bytes | None = None
    nonce2: bytes | None = None
    sender_sequence_reserved: int = 0
    restored: bool = False

    @classmethod
    def derive(
        cls,
        params: OscoreContextParameters,
        *,
        nonce1: bytes | None = None,
        nonce2: bytes | None = None,
        sender_sequence_reserved: int = 0,
        restored: bool = False,
    ) -> OscoreAssociation:
        """The association of the RS's context ``params`` (role SERVER): its keys are derived here, once.

        :param nonce1: pass with ``nonce2`` when the store persists (see the class docstring).
        :raises ValueError: algorithms OSCORE cannot use.
        """
        keys = derive_keys(params)
        return cls(
            client_recipient_id=params.sender_id,
            server_recipient_id=params.recipient_id,
            sender_key=keys.sender_key,
            recipient_key=keys.recipient_key,
            common_iv=keys.common_iv,
            id_context=params.id_context,
            aead_alg=int(params.aead_alg),
            hkdf_alg=int(params.hkdf_alg),
            nonce1=nonce1,
            nonce2=nonce2,
            sender_sequence_reserved=sender_sequence_reserved,
            restored=restored,
        )

    @property
    def lookup_key(self) -> tuple[bytes, bytes | None]:
        """``(kid, kid context)`` of requests protected with this context: the RS's Recipient ID and ID Context."""
        return self.server_recipient_id, self.id_context


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class StoredToken:
    """A verified token the RS holds: what the lock needs of it after verification, not the token itself.

    Thousands of these may be held (the bench's lock holds 10,000), so the claims set is not kept: of the claims,
    the lock needs only ``cti`` (supersession, the ``exi`` rule, logs), ``aud`` (the matching audience), the
    rights from ``scope`` and the deadlines from ``exp``/``exi``; ``cnf`` went into the :attr:`association`.
    Equal audiences and rights are shared objects between tokens.

    :param pop_id: the PoP key identifier: OSCORE_Input_Material ``id`` (or the ``kid`` of an update).
    :param cti: the token's ``cti`` claim.
    :param token_hash: the RFC 9770 §4 token hash (:func:`token_hash`, 33 bytes), what a token revocation list
        names; ``None`` if not computed.
    :param token: the token bytes as received, kept only by a store that persists (they are what
        :meth:`TokenStore.save` writes: the OSCORE master secret stays encrypted); else ``None``.
    :param rights: the access rights the token grants here, as AIF (text scopes mapped through the config).
    :param received: monotonic time of this upload; ``received_wall`` the wall time, if the lock has a clock.
    :param exi_started: monotonic time this ``cti`` was first received (``exi`` tokens only).
    :param expires_at: wall-clock deadline (``exp`` + leeway), or ``None``.
    :param expires_after: monotonic deadline (first receipt + ``exi``), or ``None``.
    :param exi_sequence: the sequence number from the ``cti`` of an ``exi`` token.
    :param association: the OSCORE security association (``None`` only while being built).
    :param claims: (constructor only) take ``cti`` from this claims set when ``cti`` is not given; the claims
        set itself is not kept.
    """

    pop_id: bytes
    audience: str
    rights: AifScope
    received: float
    cti: bytes | None = None
    token_hash: bytes | None = field(default=None, repr=False)
    token: bytes | None = field(default=None, repr=False)
    received_wall: float | None = None
    exi_started: float | None = None
    exi_started_wall: float | None = None
    expires_at: float | None = None
    expires_after: float | None = None
    exi_sequence: int | None = None
    association: OscoreAssociation | None = None
    claims: InitVar[Claims | None] = None

    def __post_init__(self, claims: Claims | None) -> None:
        if claims is not None and self.cti is None:
            object.__setattr__(self, "cti", claims.cti)

    def is_expired(self, *, now: float | None, monotonic: float) -> bool:
        """Whether the token has expired at ``now`` (wall clock, ``None`` if there is none) / ``monotonic``."""
        if self.expires_at is not None and now is not None and now >= self.expires_at:
            return True
        return self.expires_after is not None and monotonic >= self.expires_after

    def describe(self) -> str:
        """A short identification for logs (no key material): PoP id and cti."""
        cti = self.cti.hex() if self.cti is not None else "-"
        return f"pop_id={self.pop_id.hex()} cti={cti}"


# The InitVar's default stays behind as a class attribute; without it, ``token.claims`` is an AttributeError
# rather than a silent ``None`` (the claims are not kept).
del StoredToken.claims  # type: ignore[attr-defined]


def token_hash(token: bytes) -> bytes:
    """The RFC 9770 §4 token hash of an access token as the RS received it: ``0x01 || SHA-256(HASH_INPUT)``, the
    RFC 6920 §6 binary form (Suite ID 1, sha-256), where ``HASH_INPUT`` is the UTF-8 text of base64url(token)
    without padding (RFC 9770 §4.2.1). The AS computes the same value for the token it issued
    (``as_server.tokens.token_hash``; a test checks they agree), and a token revocation list names tokens by it.
    """
    return _SHA_256_PREFIX + hashlib.sha256(base64.urlsafe_b64encode(token).rstrip(b"=")).digest()


class RemovalReason(StrEnum):
    """Why a token left the store."""

    EXPIRED = "expired"  # exp / exi passed (RFC 9200 §5.10.3)
    SUPERSEDED = "superseded"  # a new token for the same PoP key (RFC 9200 §5.10.1)
    UPDATED = "updated"  # access rights updated over the same OSCORE context (RFC 9203 §4.1)
    EVICTED = "evicted"  # the store was full
    DROPPED = "dropped"  # removed by the application, or not restorable after a restart


@dataclass(frozen=True, slots=True)
class Removal:
    """A token that left the store and why."""

    token: StoredToken
    reason: RemovalReason

    @property
    def keeps_context(self) -> bool:
        """True when the token's security context lives on (update of access rights, RFC 9203 §4.1)."""
        return self.reason is RemovalReason.UPDATED


@dataclass(frozen=True, slots=True)
class PersistedToken:
    """One token as :meth:`TokenStore.save` wrote it."""

    token: bytes = field(repr=False)
    received_wall: float | None
    exi_started_wall: float | None
    nonce1: bytes
    nonce2: bytes
    client_recipient_id: bytes
    server_recipient_id: bytes
    sender_sequence_reserved: int


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What :meth:`TokenStore.load` read: tokens in receipt order, exi high-water marks, the Recipient-ID counter."""

    tokens: tuple[PersistedToken, ...]
    highest_gone_sequence: Mapping[str, int]
    next_recipient_id: int


Listener = Callable[[Removal], None]


class TokenStore:
    """Tokens by PoP key, bounded, with expiry and optional persistence (see the module docstring).

    :param max_tokens: tokens held at most (>= 1).
    :param path: the state file, or ``None`` to keep everything in memory.
    :param sequence_chunk: OSCORE sender sequence numbers reserved per write (RFC 8613 B.1.1).
    """

    def __init__(self, *, max_tokens: int, path: Path | None = None, sequence_chunk: int = 64) -> None:
        if max_tokens < 1 or sequence_chunk < 1:
            raise ValueError("max_tokens and sequence_chunk must be at least 1")
        self.max_tokens = max_tokens
        self.path = path
        self.sequence_chunk = sequence_chunk
        self._tokens: OrderedDict[bytes, StoredToken] = OrderedDict()  # receipt order, oldest first
        self._by_recipient_id: dict[bytes, bytes] = {}  # ID2 -> pop_id
        # (deadline, pop_id) per held token, with lazy deletion: an entry whose PoP key no longer holds a token with
        # that deadline is stale. Entries name the key, not the token, so that stale ones keep no token alive.
        self._wall_deadlines: list[tuple[float, bytes]] = []
        self._mono_deadlines: list[tuple[float, bytes]] = []
        self._highest_gone: dict[str, int] = {}
        self._next_recipient_id = 0
        self._listeners: list[Listener] = []

    # -- queries ---------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._tokens)

    def __iter__(self) -> Iterator[StoredToken]:
        return iter(list(self._tokens.values()))

    def __contains__(self, pop_id: object) -> bool:
        return pop_id in self._tokens

    @property
    def persistent(self) -> bool:
        """Whether the store writes a state file (its tokens then keep what a restart needs: the token bytes and
        the OSCORE nonces)."""
        return self.path is not None

    def get(self, pop_id: bytes) -> StoredToken | None:
        """The token held for a PoP key identifier, O(1)."""
        return self._tokens.get(pop_id)

    def by_recipient_id(self, recipient_id: bytes) -> StoredToken | None:
        """The token whose security context has this RS Recipient ID (``ID2``), O(1)."""
        pop_id = self._by_recipient_id.get(recipient_id)
        return None if pop_id is None else self._tokens.get(pop_id)

    def highest_gone_sequence(self, audience: str) -> int | None:
        """The highest sequence number of an ``exi`` token for ``audience`` that is no longer held (or ``None``)."""
        return self._highest_gone.get(audience)

    def is_sequence_gone(self, audience: str, sequence: int) -> bool:
        """Whether an ``exi`` token with this sequence number must be treated as expired (RFC 9200 §5.10.3)."""
        highest = self._highest_gone.get(audience)
        return highest is not None and sequence <= highest

    # -- listeners -------------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` for every token that leaves the store (after it has left)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def _notify(self, removals: list[Removal]) -> None:
        # DEBUG: a full store evicts a token on every upload (the upload is the audit event, see authz_info).
        debug = log.isEnabledFor(logging.DEBUG)
        for removal in removals:
            if debug:
                log.debug("token %s removed: %s", removal.token.describe(), removal.reason)
            for listener in list(self._listeners):
                listener(removal)

    # -- changes ---------------------------------------------------------------------------------------------

    def put(
        self,
        token: StoredToken,
        *,
        now: float | None,
        monotonic: float,
        reason: RemovalReason = RemovalReason.SUPERSEDED,
    ) -> list[Removal]:
        """Store ``token``, superseding the token held for the same PoP key; evict if the store is full.

        :param reason: how to report the token replaced for the same key (``UPDATED`` keeps its context).
        :returns: every removal this caused (also reported to the listeners).
        """
        removals: list[Removal] = []
        previous = self._detach(token.pop_id)
        if previous is not None:
            removals.append(Removal(previous, reason))
            if previous.cti != token.cti:
                self._note_gone(previous)
        if len(self._tokens) >= self.max_tokens:
            removals += self._purge(now, monotonic)
        while len(self._tokens) >= self.max_tokens:
            oldest = next(iter(self._tokens))
            evicted = self._detach(oldest)
            assert evicted is not None
            self._note_gone(evicted)
            removals.append(Removal(evicted, RemovalReason.EVICTED))
        self._attach(token)
        self._notify(removals)
        return removals

    def remove(self, pop_id: bytes, reason: RemovalReason = RemovalReason.DROPPED) -> Removal | None:
        """Remove the token held for ``pop_id`` (if any) and report it."""
        token = self._detach(pop_id)
        if token is None:
            return None
        self._note_gone(token)
        removal = Removal(token, reason)
        self._notify([removal])
        return removal

    def purge(self, *, now: float | None, monotonic: float) -> list[Removal]:
        """Remove every expired token; report them (their security contexts must be dropped)."""
        removals = self._purge(now, monotonic)
        self._notify(removals)
        return removals

    def check(self, pop_id: bytes, *, now: float | None, monotonic: float) -> StoredToken | None:
        """The token for ``pop_id`` if it is held and unexpired; an expired one is removed (and reported)."""
        token = self._tokens.get(pop_id)
        if token is None:
            return None
        if token.is_expired(now=now, monotonic=monotonic):
            self.remove(pop_id, RemovalReason.EXPIRED)
            return None
        return token

    def allocate_recipient_id(self, *, exclude: bytes, max_length: int) -> bytes:
        """A new RS Recipient ID (``ID2``, RFC 9203 §4.1): unique among held contexts and different from ``exclude``
        (``ID1``).

        IDs come from a counter encoded in as few bytes as possible (``00``, ``01``, ..., ``ff``, ``0100``, ...), so
        they stay short on the wire and are not reused soon after a context is dropped (a stale client then gets
        "context not found", not a decryption failure under someone else's context).

        :raises RuntimeError: no free ID of at most ``max_length`` bytes (cannot happen with sane limits).
        """
        space = 1 << (8 * max_length)
        for _ in range(self.max_tokens + 2):
            value = self._next_recipient_id % space
            self._next_recipient_id = value + 1
            length = max(1, (value.bit_length() + 7) // 8)
            candidate = value.to_bytes(length, "big")
            if candidate != exclude and candidate not in self._by_recipient_id:
                return candidate
        raise RuntimeError("no free OSCORE Recipient ID")

    def reserve_sequence_numbers(self, association: OscoreAssociation, next_to_send: int) -> None:
        """Make sure ``next_to_send`` is below the persisted reservation (RFC 8613 B.1.1); write the state file
        before the caller uses a number from a new chunk."""
        if next_to_send <= association.sender_sequence_reserved:
            return
        association.sender_sequence_reserved = next_to_send + self.sequence_chunk
        self.save()

    # -- internals -------------------------------------------------------------------------------------------

    def _attach(self, token: StoredToken) -> None:
        self._tokens[token.pop_id] = token
        if token.association is not None:
            self._by_recipient_id[token.association.server_recipient_id] = token.pop_id
        if token.expires_at is not None:
            heapq.heappush(self._wall_deadlines, (token.expires_at, token.pop_id))
        if token.expires_after is not None:
            heapq.heappush(self._mono_deadlines, (token.expires_after, token.pop_id))
        self._compact_heaps()

    def _detach(self, pop_id: bytes) -> StoredToken | None:
        token = self._tokens.pop(pop_id, None)
        if token is None:
            return None
        if token.association is not None:
            rid = token.association.server_recipient_id
            if self._by_recipient_id.get(rid) == pop_id:
                del self._by_recipient_id[rid]
        return token

    def _note_gone(self, token: StoredToken) -> None:
        if token.exi_sequence is not None:
            current = self._highest_gone.get(token.audience)
            if current is None or token.exi_sequence > current:
                self._highest_gone[token.audience] = token.exi_sequence

    def _purge(self, now: float | None, monotonic: float) -> list[Removal]:
        removals: list[Removal] = []
        for heap, limit, deadline_of in (
            (self._wall_deadlines, now, _EXPIRES_AT),
            (self._mono_deadlines, monotonic, _EXPIRES_AFTER),
        ):
            if limit is None:
                continue
            while heap and heap[0][0] <= limit:
                deadline, pop_id = heapq.heappop(heap)
                token = self._tokens.get(pop_id)
                if token is None or deadline_of(token) != deadline:
                    continue  # a stale entry: the token it was pushed for was replaced or removed already
                # (A token pushed twice with the same deadline, e.g. re-posted, is removed at the first entry;
                # the second is stale by then. Either way a token goes only once its own deadline has passed.)
                self._detach(pop_id)
                self._note_gone(token)
                removals.append(Removal(token, RemovalReason.EXPIRED))
        return removals

    def _compact_heaps(self) -> None:
        # Lazy deletion leaves stale entries behind. Those at the top go at once: a full store evicts the token
        # received longest ago, which (tokens being issued with equal lifetimes) is usually the earliest deadline.
        # The rest are dropped by a rebuild when they outnumber the held tokens, so memory stays O(max_tokens).
        tokens = self._tokens
        bound = 2 * len(tokens) + 16
        for name, deadline_of in (("_wall_deadlines", _EXPIRES_AT), ("_mono_deadlines", _EXPIRES_AFTER)):
            heap: list[tuple[float, bytes]] = getattr(self, name)
            while heap:
                deadline, pop_id = heap[0]
                token = tokens.get(pop_id)
                if token is not None and deadline_of(token) == deadline:
                    break
                heapq.heappop(heap)
            if len(heap) > bound:
                live: dict[bytes, tuple[float, bytes]] = {}  # one entry per held token, even if pushed twice
                for deadline, pop_id in heap:
                    token = tokens.get(pop_id)
                    if token is not None and deadline_of(token) == deadline:
                        live[pop_id] = (deadline, pop_id)
                entries = list(live.values())
                heapq.heapify(entries)
                setattr(self, name, entries)

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state file atomically (no-op without ``path``); see the module docstring for the content."""
        if self.path is None:
            return
        records: list[dict[str, Any]] = []
        for token in self._tokens.values():
            assoc = token.association
            if assoc is None or token.token is None or assoc.nonce1 is None or assoc.nonce2 is None:
                # Built for a store that does not persist (AuthzInfo keeps these only when it does).
                log.warning("not persisting token %s: its bytes or OSCORE nonces were not kept", token.describe())
                continue
            records.append(
                {
                    "token": token.token,
                    "received_wall": token.received_wall,
                    "exi_started_wall": token.exi_started_wall,
                    "nonce1": assoc.nonce1,
                    "nonce2": assoc.nonce2,
                    "id1": assoc.client_recipient_id,
                    "id2": assoc.server_recipient_id,
                    "seq": assoc.sender_sequence_reserved,
                }
            )
        state = {
            "version": _STATE_VERSION,
            "tokens": records,
            "gone": dict(self._highest_gone),
            "next_rid": self._next_recipient_id,
        }
        _atomic_write(self.path, cbor.dumps(state))

    def load(self) -> PersistedState | None:
        """Read the state file (``None`` if there is none) and restore the exi marks and the ID counter.

        Tokens are returned, not stored: the caller verifies each again and :meth:`put` s it.

        :raises ValueError: the file exists but is not a state file of this version.
        """
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            state = cbor.loads(data, max_size=max(len(data), 1))
        except WireFormatError as exc:
            raise ValueError(f"{self.path} is not a token-store state file") from exc
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            raise ValueError(f"{self.path} is not a version {_STATE_VERSION} token-store state file")
        try:
            tokens = tuple(
                PersistedToken(
                    token=_typed(r["token"], bytes),
                    received_wall=_optional_number(r.get("received_wall")),
                    exi_started_wall=_optional_number(r.get("exi_started_wall")),
                    nonce1=_typed(r["nonce1"], bytes),
                    nonce2=_typed(r["nonce2"], bytes),
                    client_recipient_id=_typed(r["id1"], bytes),
                    server_recipient_id=_typed(r["id2"], bytes),
                    sender_sequence_reserved=_typed(r["seq"], int),
                )
                for r in state["tokens"]
            )
            gone = {_typed(k, str): _typed(v, int) for k, v in state["gone"].items()}
            next_rid = _typed(state["next_rid"], int)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{self.path} has a malformed record") from exc
        for audience, sequence in gone.items():
            if sequence > self._highest_gone.get(audience, -1):
                self._highest_gone[audience] = sequence
        self._next_recipient_id = max(self._next_recipient_id, next_rid)
        return PersistedState(tokens, gone, next_rid)

    def note_sequence_gone(self, audience: str, sequence: int) -> None:
        """Record that the ``exi`` token with this sequence number is gone (e.g. not restorable after a restart)."""
        if sequence > self._highest_gone.get(audience, -1):
            self._highest_gone[audience] = sequence


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"expected {kind.__name__}")
    return value


def _optional_number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError("expected a number")
    return float(value)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new content: a temporary file in
    the same directory, fsync, rename over the target, fsync of the directory. Mode 0600."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fp:
            fp.write(data)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
