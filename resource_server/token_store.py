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

import heapq
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ace_core import cbor
from ace_core.cwt import Claims
from ace_core.errors import WireFormatError
from ace_core.oscore import OscoreContextParameters
from ace_core.scope import AifScope

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
]

log = logging.getLogger("ostiary.rs.store")

#: The sequence number in an ``exi`` token's ``cti`` is 1 to 8 bytes long (module docstring).
MAX_SEQUENCE_BYTES = 8
_STATE_VERSION = 1


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


@dataclass(slots=True, eq=False)
class OscoreAssociation:
    """The OSCORE security association derived for a token (RFC 9203 §4.1-§4.3), as the RS keeps it.

    The derived :attr:`params` are not persisted; they are derived again from the token and the nonces.
    :attr:`sender_sequence_reserved` is the bound below which sender sequence numbers may have been used (RFC 8613
    B.1.1); :attr:`restored` marks a context rebuilt after a restart (its replay window needs Echo recovery).
    """

    nonce1: bytes
    nonce2: bytes
    client_recipient_id: bytes  # ID1: the RS's Sender ID
    server_recipient_id: bytes  # ID2: the RS's Recipient ID
    params: OscoreContextParameters = field(repr=False)
    sender_sequence_reserved: int = 0
    restored: bool = False

    @property
    def lookup_key(self) -> tuple[bytes, bytes | None]:
        """``(kid, kid context)`` of requests protected with this context: the RS's Recipient ID and ID Context."""
        return self.server_recipient_id, self.params.id_context


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class StoredToken:
    """A verified token the RS holds, with what the RS derived from it.

    :param token: the token bytes as received (persisted as is; its secrets stay encrypted).
    :param pop_id: the PoP key identifier: OSCORE_Input_Material ``id`` (or the ``kid`` of an update).
    :param rights: the access rights the token grants here, as AIF (text scopes mapped through the config).
    :param received: monotonic time of this upload; ``received_wall`` the wall time, if the lock has a clock.
    :param exi_started: monotonic time this ``cti`` was first received (``exi`` tokens only).
    :param expires_at: wall-clock deadline (``exp`` + leeway), or ``None``.
    :param expires_after: monotonic deadline (first receipt + ``exi``), or ``None``.
    :param exi_sequence: the sequence number from the ``cti`` of an ``exi`` token.
    :param association: the OSCORE security association (``None`` only while being built).
    """

    token: bytes = field(repr=False)
    claims: Claims = field(repr=False)
    pop_id: bytes
    audience: str
    rights: AifScope
    received: float
    received_wall: float | None = None
    exi_started: float | None = None
    exi_started_wall: float | None = None
    expires_at: float | None = None
    expires_after: float | None = None
    exi_sequence: int | None = None
    association: OscoreAssociation | None = None

    @property
    def cti(self) -> bytes | None:
        """The token's ``cti`` claim."""
        return self.claims.cti

    def is_expired(self, *, now: float | None, monotonic: float) -> bool:
        """Whether the token has expired at ``now`` (wall clock, ``None`` if there is none) / ``monotonic``."""
        if self.expires_at is not None and now is not None and now >= self.expires_at:
            return True
        return self.expires_after is not None and monotonic >= self.expires_after

    def describe(self) -> str:
        """A short identification for logs (no key material): PoP id and cti."""
        cti = self.cti.hex() if self.cti is not None else "-"
        return f"pop_id={self.pop_id.hex()} cti={cti}"


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
        self._wall_deadlines: list[tuple[float, int, bytes]] = []
        self._mono_deadlines: list[tuple[float, int, bytes]] = []
        self._serial_of: dict[bytes, int] = {}
        self._serial = 0
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
        for removal in removals:
            log.info("token %s removed: %s", removal.token.describe(), removal.reason)
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
        self._serial += 1
        self._tokens[token.pop_id] = token
        self._serial_of[token.pop_id] = self._serial
        if token.association is not None:
            self._by_recipient_id[token.association.server_recipient_id] = token.pop_id
        if token.expires_at is not None:
            heapq.heappush(self._wall_deadlines, (token.expires_at, self._serial, token.pop_id))
        if token.expires_after is not None:
            heapq.heappush(self._mono_deadlines, (token.expires_after, self._serial, token.pop_id))
        self._compact_heaps()

    def _detach(self, pop_id: bytes) -> StoredToken | None:
        token = self._tokens.pop(pop_id, None)
        if token is None:
            return None
        del self._serial_of[pop_id]
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
        for heap, limit in ((self._wall_deadlines, now), (self._mono_deadlines, monotonic)):
            if limit is None:
                continue
            while heap and heap[0][0] <= limit:
                _, serial, pop_id = heapq.heappop(heap)
                if self._serial_of.get(pop_id) != serial:
                    continue  # a stale entry: that token was replaced or removed already
                token = self._detach(pop_id)
                assert token is not None
                self._note_gone(token)
                removals.append(Removal(token, RemovalReason.EXPIRED))
        return removals

    def _compact_heaps(self) -> None:
        # Lazy deletion leaves stale entries behind; rebuild when they dominate so memory stays O(max_tokens).
        bound = 4 * len(self._tokens) + 16
        for name in ("_wall_deadlines", "_mono_deadlines"):
            heap: list[tuple[float, int, bytes]] = getattr(self, name)
            if len(heap) > bound:
                live = [e for e in heap if self._serial_of.get(e[2]) == e[1]]
                heapq.heapify(live)
                setattr(self, name, live)

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state file atomically (no-op without ``path``); see the module docstring for the content."""
        if self.path is None:
            return
        records: list[dict[str, Any]] = []
        for token in self._tokens.values():
            assoc = token.association
            if assoc is None:
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
