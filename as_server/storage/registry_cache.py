"""A per-process cache of registry records, kept correct across processes by a registry version number.

The token endpoint reads the client, the resource server (with its shared key unsealed) and, for signed token
forms, the signing key on every request (RFC 9200 §5.8.1-§5.8.2); from a database that is three queries plus an
AES-GCM open, most of the cost of a request. These records change rarely (``ostiary as client ...``, ``as rs ...``,
``as keys rotate``), so a storage keeps them in memory and must only learn when they change:

* Every registry write (add or update a client or resource server, add or retire a signing key) also bumps a
  **registry version** in the same transaction (``registry_version`` table; :meth:`Storage.registry_version`).
* A read served from the cache first makes sure the version was read no longer than :data:`REGISTRY_MAX_AGE`
  seconds ago; if it is older, one thread re-reads it (one indexed single-row query) and, if it changed, drops
  every cached record.

**The bound.** A registry change committed by *another* process (another gunicorn worker, the CoAP process of
``ostiary as serve``, an ``ostiary as client disable`` run) is seen by every read that starts more than
:data:`REGISTRY_MAX_AGE` (100 ms) after its commit: such a read either re-reads the version itself, or finds
that it was re-read after the commit. A change made through the *same* storage object takes effect at once: the
storage calls :meth:`RegistryCache.invalidate` right after its commit. Reads that were already running when a
change committed may return the record as it was, exactly as without a cache.

Only records that exist are cached (an unknown client id costs a query each time, so a stream of made-up ids
cannot fill memory), at most ``max_entries`` of them (oldest dropped first). The records are frozen dataclasses,
returned as they are: callers share them but cannot change them.

Writes that bypass the storage (SQL typed into a database shell) do not bump the version; bump it by hand
(``UPDATE registry_version SET version = version + 1``) or restart the servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Final, TypeVar

__all__ = ["DEFAULT_MAX_ENTRIES", "REGISTRY_MAX_AGE", "RegistryCache"]

T = TypeVar("T")

#: Seconds a process may serve cached registry records without re-reading the registry version: the longest a
#: change made by another process can go unnoticed.
REGISTRY_MAX_AGE: Final = 0.1
#: Cached records per storage at most.
DEFAULT_MAX_ENTRIES: Final = 10_000

_NEVER = float("-inf")
_UNKNOWN = object()  # the version before the first read


class RegistryCache:
    """Records by key, valid while the registry version is unchanged (see the module documentation).

    Thread-safe. :meth:`get` takes the version read cheaply by ``read_version`` at most every ``max_age`` seconds.

    :param read_version: the current registry version (``None``: no registry write yet).
    :param max_age: :data:`REGISTRY_MAX_AGE` by default.
    :param clock: a monotonic clock in seconds (injectable for tests).
    :param max_entries: records kept at most; the oldest is dropped to make room.
    """

    def __init__(
        self,
        read_version: Callable[[], int | None],
        *,
        max_age: float = REGISTRY_MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        if max_age < 0 or max_entries < 1:
            raise ValueError("max_age must be >= 0 and max_entries >= 1")
        self._read_version = read_version
        self._max_age = max_age
        self._clock = clock
        self._max_entries = max_entries
        self._lock = threading.Lock()  # guards the fields below
        self._check_lock = threading.Lock()  # one thread re-reads the version at a time
        self._entries: dict[Hashable, object] = {}
        self._version: object = _UNKNOWN
        self._checked_at = _NEVER  # clock time just before the version last read was queried
        self._generation = 0  # bumped whenever entries are dropped

    def get(self, key: Hashable, load: Callable[[], T | None]) -> T | None:
        """The record cached under ``key``, else ``load()`` (cached unless it is ``None``)."""
        generation = self._current_generation()
        try:
            return self._entries[key]  # type: ignore[return-value]  # stored by this method for this key
        except KeyError:
            pass
        value = load()
        if value is not None:
            with self._lock:
                # Not if entries were dropped since the version check: load() may have read what they dropped.
                if self._generation == generation:
                    if len(self._entries) >= self._max_entries:
                        del self._entries[next(iter(self._entries))]
                    self._entries[key] = value
        return value

    def invalidate(self) -> None:
        """Drop every record; the next read re-reads the version. Call it after committing a registry write."""
        with self._lock:
            self._drop()
            self._version = _UNKNOWN
            self._checked_at = _NEVER

    def _drop(self) -> None:
        self._entries.clear()
        self._generation += 1

    def _current_generation(self) -> int:
        """Re-read the version if it is older than ``max_age``; the generation the entries belong to."""
        if self._clock() - self._checked_at < self._max_age:
            return self._generation
        with self._check_lock:
            started = self._clock()
            if started - self._checked_at < self._max_age:  # another thread checked while this one waited
                return self._generation
            version = self._read_version()
            with self._lock:
                if version != self._version:
                    self._drop()
                    self._version = version
                self._checked_at = started
                return self._generation
