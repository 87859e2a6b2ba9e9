"""The servers' log handler: lines to a stream (stderr), informational ones written in batches.

``ostiary as serve`` logs one INFO line per issued token (RFC 9200 §5.8.2 responses, with the ``cti``), so a busy
AS writes a line per request. Written one by one, each line is a ``write`` system call made while the handler's
lock is held, by one of many request threads that then has to win the GIL back: with 8 request threads that was
about a sixth of the CPU time of a token request (issue #3). :class:`BatchingStreamHandler` instead appends INFO
and DEBUG lines to a list and writes them together at most :data:`FLUSH_INTERVAL` seconds later, from one
background thread. A line of level WARNING or above is written at once, after the lines queued before it, so
problems are never delayed and the order of lines is kept. :func:`logging.shutdown` (run at interpreter exit,
including a gunicorn worker's normal exit) writes what is queued; a process killed outright (SIGKILL) loses at most
the last :data:`FLUSH_INTERVAL` seconds of informational lines.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Final, TextIO

__all__ = ["FLUSH_INTERVAL", "MAX_QUEUED_LINES", "BatchingStreamHandler"]

#: Longest time an informational line waits before it is written (seconds).
FLUSH_INTERVAL: Final = 0.1
#: Queued lines that trigger a write at once (bounds the memory a burst can take).
MAX_QUEUED_LINES: Final = 1024


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]  # generic only in typeshed
    """A :class:`logging.StreamHandler` that writes lines below ``urgent_level`` in batches (module docstring).

    :param stream: where lines go (default ``sys.stderr``, as for :class:`logging.StreamHandler`).
    :param interval: how long an informational line may wait (seconds).
    :param urgent_level: lines of this level and above are written at once, with everything queued before them.
    :param max_queued: this many queued lines are written at once.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        interval: float = FLUSH_INTERVAL,
        urgent_level: int = logging.WARNING,
        max_queued: int = MAX_QUEUED_LINES,
    ) -> None:
        super().__init__(stream)
        self.interval = interval
        self.urgent_level = urgent_level
        self.max_queued = max_queued
        self._queued: list[str] = []  # guarded by the handler's lock (logging.Handler.acquire)
        self._wake = threading.Event()
        self._closing = threading.Event()  # ends the writer's gathering wait at once
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._flusher_pid = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the formatted line, or write it with the queue (urgent or full). Called with the lock held."""
        try:
            line = self.format(record) + self.terminator
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.handleError(record)
            return
        self._queued.append(line)
        if record.levelno >= self.urgent_level or len(self._queued) >= self.max_queued or self._closed:
            self._write_queued(record)
        elif len(self._queued) == 1:
            self._start_flusher()
            self._wake.set()

    def flush(self) -> None:
        """Write every queued line and flush the stream."""
        self.acquire()
        try:
            self._write_queued(None)
        finally:
            self.release()

    def close(self) -> None:
        """Write what is queued and stop the background thread (later lines are written at once)."""
        self.acquire()
        try:
            self._closed = True
            self._write_queued(None)
        finally:
            self.release()
        self._closing.set()
        self._wake.set()
        super().close()

    # -- internals ---------------------------------------------------------------------------------------------

    def _write_queued(self, record: logging.LogRecord | None) -> None:
        """Write the queue in one call and flush (the lock is held)."""
        if not self._queued:
            return
        data = "".join(self._queued)
        self._queued.clear()
        try:
            self.stream.write(data)
            self.stream.flush()
        except Exception:  # noqa: BLE001 - as logging.StreamHandler.emit: report, never raise
            if record is not None:
                self.handleError(record)

    def _start_flusher(self) -> None:
        """Start the background writer in this process if it is not running (a fork leaves it behind)."""
        flusher = self._flusher
        if flusher is not None and self._flusher_pid == os.getpid() and flusher.is_alive():
            return
        self._flusher_pid = os.getpid()
        self._flusher = threading.Thread(target=self._run, name="ostiary-log-writer", daemon=True)
        self._flusher.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            # Let the lines of the next interval gather, then write them together.
            if self._closing.wait(self.interval):
                return  # close() wrote the queue
            self.flush()
