"""gunicorn ``gthread`` workers that share new connections evenly: ``-k as_server.transport.gunicorn_balance.
BalancedThreadWorker``.

A gunicorn worker keeps every connection it accepts for as long as the client keeps it alive, and with ``gthread``
the workers race for each new connection: whichever poller reaches ``accept`` first wins, which is often the busier
worker, whose poller is awake anyway. A few long-lived clients (a gateway, a load generator) then end up mostly on
one worker, which saturates its core while the other idles: ``bench_as`` measured 660 tokens/s with all 32 of wrk's
connections on one of two workers against 1,370/s with 16 on each (issue #3).

Here each worker publishes how many connections it holds in a table shared by the workers of one gunicorn master
(created when the master imports this module, inherited by the workers it forks). A worker that finds another live
worker holding fewer leaves a new connection to it, for at most :data:`YIELD_SECONDS`: every worker stays
registered for the listening socket, so the one holding fewer is woken by the same connection and normally takes
it within a fraction of a millisecond. New connections are so spread to within about one of even; connections
already open are not moved.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any, Final

from gunicorn.workers.gthread import ThreadWorker

__all__ = ["MAX_WORKERS", "YIELD_PAUSE", "YIELD_SECONDS", "BalancedThreadWorker", "connection_counts"]

#: Workers of one master that take part (more are served, unbalanced).
MAX_WORKERS: Final = 64
#: How long a worker leaves a new connection to a worker holding fewer before it takes it itself (seconds).
YIELD_SECONDS: Final = 0.005
#: Pause between two looks at a connection being left to another worker (seconds).
YIELD_PAUSE: Final = 0.0002

#: Per slot: the pid of the worker that holds it (0: free) and the connections it holds. Plain shared integers:
#: a reader may see a count one step old, which only delays the balance by one connection.
_pids = multiprocessing.RawArray("i", MAX_WORKERS)
_counts = multiprocessing.RawArray("i", MAX_WORKERS)
_slots_lock = multiprocessing.Lock()


def connection_counts() -> dict[int, int]:
    """Connections held per worker pid (for tests and diagnostics)."""
    return {_pids[i]: _counts[i] for i in range(MAX_WORKERS) if _pids[i]}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process took the pid
        return False
    return True


def _claim_slot(pid: int) -> int | None:
    """A free slot (or one whose worker died) for ``pid``; ``None`` when all are taken."""
    with _slots_lock:
        for i in range(MAX_WORKERS):
            if _pids[i] == 0 or not _alive(_pids[i]):
                _pids[i], _counts[i] = pid, 0
                return i
    return None


def _release_slot(slot: int, pid: int) -> None:
    with _slots_lock:
        if _pids[slot] == pid:
            _pids[slot], _counts[slot] = 0, 0


class BalancedThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn ships no type information
    """gunicorn's ``gthread`` worker, leaving new connections to workers that hold fewer (module docstring)."""

    _slot: int | None = None
    _yielding_since: float | None = None

    def run(self) -> None:
        self._slot = _claim_slot(os.getpid())
        try:
            super().run()
        finally:
            if self._slot is not None:
                _release_slot(self._slot, os.getpid())

    def wait_for_and_dispatch_events(self, timeout: float) -> Any:
        """Publish the count once per turn of the worker's loop (connections also close between accepts)."""
        self._publish()
        return super().wait_for_and_dispatch_events(timeout)

    def accept(self, listener: Any) -> None:
        """Accept, unless another live worker holds fewer connections: then leave the connection to it for up to
        :data:`YIELD_SECONDS`. The listener stays registered with every worker, so the one holding fewer is woken
        by the same connection; should it not take it in time (busy, or not taking part), this one does."""
        if not self._fewest():
            now = time.monotonic()
            if self._yielding_since is None:
                self._yielding_since = now
            if now - self._yielding_since < YIELD_SECONDS:
                # The listener is still readable, so gunicorn's loop comes straight back here; pause a little
                # each time, so that the other worker gets the CPU rather than this one spinning.
                time.sleep(YIELD_PAUSE)
                return
        self._yielding_since = None
        super().accept(listener)
        self._publish()

    def _publish(self) -> None:
        if self._slot is not None:
            _counts[self._slot] = self.nr_conns

    def _fewest(self) -> bool:
        """No other live worker of this master holds fewer connections than this one."""
        if self._slot is None:
            return True
        mine = self.nr_conns
        for i in range(MAX_WORKERS):
            pid = _pids[i]
            if pid and i != self._slot and _counts[i] < mine:
                if _alive(pid):
                    return False
                with _slots_lock:  # a worker that died without releasing its slot
                    if _pids[i] == pid:
                        _pids[i], _counts[i] = 0, 0
        return True
