"""Group commit: many threads' single-row writes share one transaction and one durable commit.

:meth:`~as_server.storage.base.TokenStore.record` must not return before the token's record is durable (the token
endpoint hands the token out only afterwards), so each call costs one commit, i.e. one ``fsync``, unless commits
are shared. Callers put their row on a queue and wait. The thread that writes next (see below: a caller, or one
writer thread per storage) takes everything queued (up to ``max_batch`` rows), writes it in one transaction,
commits once, and then wakes each caller with its own outcome. While it commits, new callers queue up and form
the next batch, so batches grow with the load by themselves; there is no timer.

Threads blocked in :meth:`GroupCommitter.write` are woken one after the other: the writer wakes the first of the
batch and each wakes the next as it resumes. Woken all at once, a batch's threads would all come back for the GIL
together and hand it around: measured with 16 threads per HTTP worker, about 12.5 context switches per token
request against 10.5 with the chain, and 2-7% more tokens per second (4 of 5 interleaved runs). Callers of
:meth:`GroupCommitter.submit` (the event loop) get a future, completed by the writer.

A caller of :meth:`GroupCommitter.write` that finds nothing queued and no write in progress writes its row itself,
in its own thread, while later callers queue behind it. So a lone caller pays the commit and nothing else: no
thread hand-off, which on a busy machine costs two scheduler wake-ups (tens to hundreds of microseconds). At most
one transaction writes at any time either way (SQLite has one writer anyway, and batching needs the queue to
build up behind a write in progress).

When such a caller (or a thread writing the queue) is done, it hands the queue on to the first thread waiting in
it, which writes the whole queue, its own row included, wakes the others and hands on in turn; only with no thread
in the queue (futures only) does the writer thread take over. A thread that queues behind a write in progress does
not wake the writer thread. So under HTTP load the request threads commit among themselves and the writer thread
sleeps: on a standalone ``ostiary as serve`` (wrk -t2 -c32, 6 s, six ABBA pairs) voluntary context switches per
token request fell from 9.6-11.0 to 6.9-8.5, and tokens per second rose in every pair (median 1,352 -> 1,488/s).

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


class _Waiter:
    """A thread blocked in :meth:`GroupCommitter.write` until its row's batch is committed.

    The writer wakes only the first waiter of a batch (:meth:`GroupCommitter._process`); each waiter wakes the next
    as it resumes (:meth:`GroupCommitter._wait_queued`). Woken all at once, a batch's threads would all compete for
    the GIL.
    """

    __slots__ = ("_lock", "leader", "next", "outcome", "written")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()  # held until woken
        self.outcome: BaseException | None = None
        self.next: _Waiter | None = None
        #: Woken to write the queue itself (GroupCommitter._hand_on), not because its row was written.
        self.leader = False
        self.written = False

    def wake(self) -> None:
        """Let the waiting thread go on (idempotent)."""
        try:
            self._lock.release()
        except RuntimeError:  # already woken
            pass

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout`` seconds have passed; returns whether it was woken."""
        return self._lock.acquire(timeout=timeout)


#: Where a queued row's outcome goes: a future (:meth:`GroupCommitter.submit`) or a blocked thread (``write``).
_Sink = Future[None] | _Waiter


class GroupCommitter(Generic[T]):
    """A queue of rows and the single thread that writes them in batches (see the module docstring)."""

    def __init__(self, write_batch: WriteBatch[T], *, max_batch: int = DEFAULT_MAX_BATCH, name: str) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._write_batch = write_batch
        self._max_batch = max_batch
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[tuple[T, _Sink]] = []
        self._inflight: list[tuple[T, _Sink]] = []
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

    def _enqueue(self, row: T, sink: _Sink) -> None:
        """Queue ``row`` (the lock is held). The writer thread is woken for a future, or when nobody is writing; a
        thread queued behind a write in progress is handed the queue by that writer (:meth:`_hand_on`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.append((row, sink))
        if not self._busy or not isinstance(sink, _Waiter):
            self._cond.notify_all()

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
        future: Future[None] = Future()
        with self._cond:
            self._check_accepting()
            self._enqueue(row, future)
        return future

    def write(self, row: T) -> None:
        """Write ``row`` and return once it is committed; raises what writing it raised.

        Written in the calling thread when nothing else is being written or queued, else queued.
        """
        with self._cond:
            self._check_accepting()
            waiter: _Waiter | None = None
            if self._busy or self._queue:
                waiter = _Waiter()
                self._enqueue(row, waiter)
            else:
                self._busy = True
        if waiter is not None:
            self._wait_queued(waiter)
            return
        try:
            outcomes = self._write_batch([row])
        finally:
            with self._cond:
                self._count(1)
            self._hand_on()
        (outcome,) = outcomes
        if outcome is not None:
            raise outcome

    def _wait_queued(self, waiter: _Waiter) -> None:
        """Block until ``waiter``'s row is written (or it is handed the queue: then it writes it, its own row
        included), wake the next waiter of its batch, raise the row's outcome."""
        while not waiter.wait(LIVENESS_CHECK_INTERVAL):
            thread = self._thread
            if thread is None or not thread.is_alive():
                if waiter.wait(0):
                    break
                raise WriterStopped("the token writer thread stopped")
        if waiter.leader:
            self._lead(waiter)
        if waiter.next is not None:
            waiter.next.wake()
        if waiter.outcome is not None:
            raise waiter.outcome

    def _hand_on(self) -> None:
        """After a caller's own write: hand the queue to the first thread waiting in it, which writes it next
        (the write stays busy), or, with no thread queued, leave it to the writer thread (futures) and go idle.

        A thread in :meth:`write` that finds a write in progress queues without waking the writer thread, so a
        busy HTTP worker commits in its request threads only: the writer thread's wake-ups cost as much as the
        commit they serve.
        """
        with self._cond:
            leader = next((sink for _, sink in self._queue if isinstance(sink, _Waiter)), None)
            if leader is None:
                self._busy = False
                if self._queue or self._closing:  # futures for the writer thread; or close() waiting
                    self._cond.notify_all()
                return
            leader.leader = True
        leader.wake()

    def _lead(self, own: _Waiter) -> None:
        """Write the queue in the calling thread, batch by batch, until ``own``'s row is written; then hand on."""
        try:
            while not own.written:
                with self._cond:
                    batch = self._queue[: self._max_batch]
                    del self._queue[: self._max_batch]
                    self._inflight = batch
                try:
                    self._process(batch, own)
                except BaseException:  # _process handles every Exception: this thread is being torn down
                    self._abandon(batch)
                    raise
                finally:
                    with self._cond:
                        self._inflight = []
        finally:
            self._hand_on()

    @staticmethod
    def _abandon(batch: list[tuple[T, _Sink]]) -> None:
        """Fail every unresolved row of ``batch`` with :class:`WriterStopped` and wake its thread."""
        stopped = WriterStopped("the token writer stopped")
        for _, sink in batch:
            if isinstance(sink, _Waiter):
                if not sink.written:
                    sink.outcome, sink.written = stopped, True
                    sink.wake()
            elif not sink.done():
                sink.set_exception(stopped)

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
            stopped = WriterStopped("the token writer thread stopped")
            for _, sink in orphans:
                if isinstance(sink, _Waiter):
                    sink.outcome = sink.outcome or stopped
                    sink.written = True
                    sink.wake()
                elif not sink.done():
                    sink.set_exception(stopped)
            raise

    def _process(self, batch: list[tuple[T, _Sink]], own: _Waiter | None = None) -> None:
        """Write ``batch``, give each row its outcome and wake its caller; ``own`` is the calling thread's waiter
        (a leader's), which is not woken."""
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
        first: _Waiter | None = None
        last: _Waiter | None = None
        for (_, sink), outcome in zip(batch, outcomes, strict=True):
            if isinstance(sink, _Waiter):
                sink.outcome = outcome
                sink.written = True
                if sink is own:
                    continue
                if last is None:
                    first = sink
                else:
                    last.next = sink
                last = sink
            elif outcome is None:
                sink.set_result(None)
            else:
                sink.set_exception(outcome)
        if first is not None:
            first.wake()  # which wakes the next: one thread at a time comes back for the GIL
