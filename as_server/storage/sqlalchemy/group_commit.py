"""Group commit: many threads' single-row writes share one transaction and one durable commit.

:meth:`~as_server.storage.base.TokenStore.record` must not return before the token's record is durable (the token
endpoint hands the token out only afterwards), so each call costs one commit, i.e. one ``fsync``, unless commits
are shared. Callers put their row on a queue and wait. One writer thread per storage takes everything queued (up
to ``max_batch`` rows), writes it in one transaction, commits once, and then wakes each caller with its own
outcome. While it commits, new callers queue up and form the next batch, so batches grow with the load by
themselves; there is no timer.

A caller of :meth:`GroupCommitter.write` that finds nothing queued and no write in progress writes its row itself,
in its own thread, while later callers queue behind it. So a lone caller pays the commit and nothing else: no
thread hand-off, which on a busy machine costs two scheduler wake-ups (tens to hundreds of microseconds). At most
one transaction writes at any time either way (SQLite has one writer anyway, and batching needs the queue to
build up behind a write in progress).

The writer thread starts when a row is first queued. It is a daemon thread (a forgotten storage cannot keep the
process alive), but :meth:`GroupCommitter.close` writes what is queued and joins it. Every queued row's future is
resolved: with the writer's per-row outcome, with the exception that made the whole batch fail, or, should the
writer thread die, with :class:`WriterStopped`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
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
    """What has been written so far: rows (written or failed), transactions, and the largest batch."""

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
        self._busy = False  # a transaction is writing (the writer thread's, or a lone caller's own)
        self._closing = False
        self._failure: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._rows = 0
        self._batches = 0
        self._largest = 0

    @property
    def stats(self) -> CommitStats:
        """Counters for tests and benchmarks."""
        with self._cond:
            return CommitStats(self._rows, self._batches, self._largest)

    def _check_accepting(self) -> None:
        if self._closing:
            raise StorageClosedError("the storage is closed")
        if self._failure is not None:
            raise WriterStopped("the token writer thread stopped") from self._failure

    def _enqueue(self, row: T) -> Future[None]:
        """Queue ``row`` (the lock is held)."""
        future: Future[None] = Future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.append((row, future))
        self._cond.notify_all()
        return future

    def _count(self, rows: int) -> None:
        """Account for one transaction of ``rows`` rows (the lock is held)."""
        self._rows += rows
        self._batches += 1
        self._largest = max(self._largest, rows)

    def submit(self, row: T) -> Future[None]:
        """Queue ``row`` for the writer thread; the future completes once it is committed (or fails with the row's
        exception). Never blocks, so an event loop may call it.

        :raises StorageClosedError: after :meth:`close`.
        :raises WriterStopped: the writer thread died earlier.
        """
        with self._cond:
            self._check_accepting()
            return self._enqueue(row)

    def write(self, row: T) -> None:
        """Write ``row`` and return once it is committed; raises what writing it raised.

        Written in the calling thread when nothing else is being written or queued, else queued.
        """
        with self._cond:
            self._check_accepting()
            if self._busy or self._queue:
                future = self._enqueue(row)
            else:
                self._busy = True
                future = None
        if future is not None:
            self.wait(future)
            return
        try:
            outcomes = self._write_batch([row])
        finally:
            with self._cond:
                self._count(1)
                self._busy = False
                self._cond.notify_all()  # the writer thread, if rows queued meanwhile; or close()
        (outcome,) = outcomes
        if outcome is not None:
            raise outcome

    def wait(self, future: Future[None]) -> None:
        """Wait for a future from :meth:`submit`, re-checking that the writer is alive while waiting."""
        while True:
            try:
                return future.result(timeout=LIVENESS_CHECK_INTERVAL)
            except TimeoutError:
                if future.done():
                    raise  # the write itself raised TimeoutError
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
        with self._cond:
            while self._busy and self._failure is None:  # a caller writing its own row
                self._cond.wait()

    # -- the writer thread -------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._queue or self._busy:
                        if self._closing and not self._queue:
                            return
                        self._cond.wait()
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                    self._inflight = batch
                    self._busy = True
                self._process(batch)
                with self._cond:
                    self._inflight = []
                    self._busy = False
                    self._cond.notify_all()
        except BaseException as exc:  # _process handles every Exception; this is the last resort
            log.exception("token writer thread died")
            with self._cond:
                self._failure = exc
                orphans = self._inflight + self._queue
                self._queue = []
                self._inflight = []
                self._busy = False
                self._cond.notify_all()
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
        with self._cond:
            self._count(len(rows))
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)
