"""The registry cache (:mod:`as_server.storage.registry_cache`) and the SQLite write lock, without a storage around
them: when the version is re-read, what is kept, and what a racing write does."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from as_server.storage.registry_cache import REGISTRY_MAX_AGE, RegistryCache
from as_server.storage.sqlalchemy.engine import WriteLock

#: Upper bound of every wait on a thread in this file (seconds); reached only when a test fails.
WAIT = 10.0
#: How long a thread is given to (wrongly) get past a lock before the test looks (seconds).
BLOCKED_FOR = 0.2


class Versions:
    """A registry version source that counts its reads."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.reads = 0

    def __call__(self) -> int | None:
        self.reads += 1
        return self.version


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Loader:
    """``load`` callables that count their calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: object) -> object:
        self.calls += 1
        return value


@pytest.fixture
def versions() -> Versions:
    return Versions()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(versions: Versions, clock: Clock) -> RegistryCache:
    return RegistryCache(versions, clock=clock)


def test_a_record_is_loaded_once_and_then_served(cache: RegistryCache, versions: Versions) -> None:
    load = Loader()
    record = object()
    assert cache.get("a", lambda: load(record)) is record
    assert cache.get("a", lambda: load(object())) is record
    assert load.calls == 1
    assert versions.reads == 1
    assert cache.get("b", lambda: load("other")) == "other"  # keys are separate


def test_misses_are_not_cached(cache: RegistryCache) -> None:
    load = Loader()
    assert cache.get("a", lambda: load(None)) is None
    assert cache.get("a", lambda: load(None)) is None
    assert load.calls == 2


def test_the_version_is_reread_after_the_bound_and_a_change_drops_everything(
    cache: RegistryCache, versions: Versions, clock: Clock
) -> None:
    versions.version = 1
    cache.get("a", lambda: "a@1")
    clock.now += REGISTRY_MAX_AGE / 2
    versions.version = 2  # another process wrote
    assert cache.get("a", lambda: "a@2") == "a@1"  # within the bound: the cached record
    assert versions.reads == 1
    clock.now += REGISTRY_MAX_AGE / 2
    assert cache.get("a", lambda: "a@2") == "a@2"
    assert versions.reads == 2
    clock.now += REGISTRY_MAX_AGE
    assert cache.get("a", lambda: "a@3") == "a@2"  # re-read, unchanged: kept
    assert versions.reads == 3


def test_invalidate_drops_everything_and_rereads_the_version(cache: RegistryCache, versions: Versions) -> None:
    cache.get("a", lambda: "old")
    cache.invalidate()  # this process committed a registry write
    assert cache.get("a", lambda: "new") == "new"
    assert versions.reads == 2


def test_a_load_that_raced_a_write_is_not_kept(cache: RegistryCache) -> None:
    """A record read before a write committed must not outlive the write's invalidation."""

    def load_then_a_write_commits() -> str:
        cache.invalidate()  # what the writing thread does right after its commit
        return "read before the commit"

    assert cache.get("a", load_then_a_write_commits) == "read before the commit"
    assert cache.get("a", lambda: "after") == "after"


def test_the_oldest_record_makes_room(versions: Versions, clock: Clock) -> None:
    cache = RegistryCache(versions, clock=clock, max_entries=2)
    for key in "abc":
        cache.get(key, key.upper)
    load = Loader()
    assert cache.get("a", lambda: load("A again")) == "A again"  # "a" was dropped for "c"
    assert cache.get("c", lambda: load("C again")) == "C"
    assert load.calls == 1


def test_max_age_zero_checks_every_time(versions: Versions, clock: Clock) -> None:
    cache = RegistryCache(versions, max_age=0, clock=clock)
    for _ in range(3):
        cache.get("a", lambda: "a")
    assert versions.reads == 3


def test_bad_parameters(versions: Versions) -> None:
    with pytest.raises(ValueError):
        RegistryCache(versions, max_age=-1)
    with pytest.raises(ValueError):
        RegistryCache(versions, max_entries=0)


# --- the SQLite write lock ------------------------------------------------------------------------------------


def test_write_locks_on_one_file_exclude_each_other(tmp_path: Path) -> None:
    """Two locks on one database (two processes, or two storages) take turns; the second wakes at the release."""
    database = tmp_path / "ostiary.db"
    first, second = WriteLock(database), WriteLock(database)
    entered = threading.Event()

    def take_second() -> None:
        with second:
            entered.set()

    with first:
        waiter = threading.Thread(target=take_second)
        waiter.start()
        assert not entered.wait(BLOCKED_FOR)
    assert entered.wait(WAIT)
    waiter.join(WAIT)
    lock_file = tmp_path / "ostiary.db-writelock"
    assert stat.S_IMODE(lock_file.stat().st_mode) == 0o600
    for lock in (first, second):
        lock.close()
        lock.close()  # idempotent


def test_threads_of_one_storage_take_turns(tmp_path: Path) -> None:
    lock = WriteLock(tmp_path / "ostiary.db")
    entered = threading.Event()

    def take() -> None:
        with lock:
            entered.set()

    with lock:
        waiter = threading.Thread(target=take)
        waiter.start()
        assert not entered.wait(BLOCKED_FOR)
    assert entered.wait(WAIT)
    waiter.join(WAIT)
    lock.close()


def test_other_databases_need_no_write_lock() -> None:
    lock = WriteLock(None)  # PostgreSQL
    with lock, lock:  # not even re-entrancy matters: nothing is taken
        pass
    lock.close()
