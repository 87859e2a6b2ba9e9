"""Group commit: many threads' single-row writes share one transaction and one durable commit.

:meth:`~as_server.storage.base.TokenStore.record` must not return before the token's record is durable (the token
endpoint hands the token out only afterwards), so each call costs one commit, i.e. one ``fsync``, unless commits
are shared. Callers put their row on a queue and wait; one writer thread per storage takes everything queued (up to
``max_batch`` rows), writes it in one transaction, commits once, and then wakes each caller with its own outcome.
While the writer commits, new callers queue up and form the next batch, so batches grow with the load by
themselves. There is no timer: a lone caller is written as soon as the writer sees it, so it pays the commit and
a thread hand-off, nothing more.

The writer thread is started on the first submission. It is a daemon thread (a forgotten storage cannot keep the
process alive), but :meth:`GroupCommitter.close` writes what is queued and joins it. Every submission's future is
resolved: with the writer's per-row outcome, with the exception that made the whole batch fail, or, should the
writer thread die, with :class:`WriterStopped`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_BATCH", "CommitStats", "GroupCommitter", "StorageClosedError", "WriterStopped"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per transaction at most; larger batches gain little once the commit is amortised.
DEFAULT_MAX_BATCH = 256
#: How often a waiting caller checks that the writer thread is still alive (seconds); only matters if it died.
LIVENESS_CHECK_INTERVAL = 1.0

#: Writes ``rows`` durably; returns one outcome per row (``None``: written, else the row's exception), or raises
#: when the whole batch failed.
WriteBatch = Callable[[Sequence[T]], Sequence[BaseException | None]]


class StorageClosedError(RuntimeError):
    """The storage was closed; nothing more can be written."""


class WriterStopped(RuntimeError):
    """The writer thread died; the row may or may not have been written."""


@dataclass(frozen=True, slots=True)
class CommitStats:
    """What the writer has done so far: rows written or failed, transactions, and the largest batch."""

    rows: int
    batches: int
    largest_batch: int


class GroupCommitter(Generic[T]):
    """A queue of rows and the single thread that writes them in batches (see the module docstring)."""

    def __init__(self, write_batch: WriteBatch[T], *, max_batch: int = DEFAULT_MAX_BATCH, name: str) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[tuple[T, Future[None]]] = []
        self._inflight: list[tuple[T, Future[None]]] = []
        self._closing = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._rows = 0
        self._batches = 0
        self._largest = 0

    @property
    def stats(self) -> CommitStats:
        """Counters for tests and benchmarks."""
        return CommitStats(self._rows, self._batches, self._largest)

    def submit(self, row: T) -> Future[None]:
        """Queue ``row``; the future completes once it is committed (or fails with the row's exception).

        :raises StorageClosedError: after :meth:`close`.
        :raises WriterStopped: the writer thread died earlier.
        """
        future: Future[None] = Future()
        with self._cond:
            if self._closing:
                raise StorageClosedError("the storage is closed")
            if self._failure is not None:
                raise WriterStopped("the token writer thread stopped") from self._failure
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append((row, future))
            self._cond.notify()
        return future

    def write(self, row: T) -> None:
        """:meth:`submit` ``row`` and wait until it is committed; raises what writing it raised."""
        self.wait(self.submit(row))

    def wait(self, future: Future[None]) -> None:
        """Wait for a future from :meth:`submit`, re-checking that the writer is alive while waiting."""
        while True:
            done, _ = futures.wait([future], timeout=LIVENESS_CHECK_INTERVAL)
            if done:
                return future.result()
            thread = self._thread
            if (thread is None or not thread.is_alive()) and not future.done():
                raise WriterStopped("the token writer thread stopped")

    def close(self) -> None:
        """Write everything queued, then stop and join the writer thread. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closing:
                        self._cond.wait()
                    if not self._queue:  # closing, and everything is written
                        return
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                    self._inflight = batch
                self._process(batch)
                self._inflight = []
        except BaseException as exc:  # _process handles every Exception; this is the last resort
            log.exception("token writer thread died")
            with self._cond:
                self._failure = exc
                orphans = self._inflight + self._queue
                self._queue = []
            for _, future in orphans:
                if not future.done():
                    future.set_exception(WriterStopped("the token writer thread stopped"))
            raise

    def _process(self, batch: list[tuple[T, Future[None]]]) -> None:
        rows = [row for row, _ in batch]
        outcomes: Sequence[BaseException | None]
        try:
            outcomes = self._write_batch(rows)
            if len(outcomes) != len(rows):
                raise RuntimeError(f"writer returned {len(outcomes)} outcomes for {len(rows)} rows")
        except Exception as exc:  # the whole batch failed: every caller gets the error
            log.debug("batch of %d rows failed", len(rows), exc_info=True)
            outcomes = [exc] * len(rows)
        self._rows += len(rows)
        self._batches += 1
        self._largest = max(self._largest, len(rows))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
