"""The servers' batching log handler (:mod:`as_server.logs`): order, promptness of warnings, the bound on how late
an informational line is written, completeness under many threads, and the final write at close."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from as_server.logs import BatchingStreamHandler

#: Bound on waiting for a line that should appear (seconds); reached only when a test fails.
WAIT = 5.0


class CountingStream(io.StringIO):
    """A text stream that counts the writes it receives and wakes :meth:`wait_for` on each."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self._written = threading.Condition()

    def write(self, text: str) -> int:
        with self._written:
            self.writes += 1
            n = super().write(text)
            self._written.notify_all()
            return n

    def wait_for(self, condition: Callable[[str], bool]) -> None:
        """Until ``condition(contents)`` holds after a write (bounded by WAIT)."""
        with self._written:
            assert self._written.wait_for(lambda: condition(self.getvalue()), WAIT), self.getvalue()


@pytest.fixture
def stream() -> CountingStream:
    return CountingStream()


@pytest.fixture
def logger(stream: CountingStream) -> Iterator[tuple[logging.Logger, BatchingStreamHandler]]:
    handler = BatchingStreamHandler(stream, interval=0.05)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"test-logs-{id(stream)}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, handler
    log.removeHandler(handler)
    handler.close()


def test_info_lines_are_queued_and_written_in_one_call(stream: CountingStream) -> None:
    handler = BatchingStreamHandler(stream, interval=60.0)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for i in range(50):
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, f"issued token {i}", None, None))
    assert stream.getvalue() == ""  # queued: the writer waits out its interval
    handler.flush()
    assert stream.getvalue() == "".join(f"INFO issued token {i}\n" for i in range(50))
    assert stream.writes == 1
    handler.close()


def test_queued_lines_are_written_by_the_background_writer(
    logger: tuple[logging.Logger, BatchingStreamHandler], stream: CountingStream
) -> None:
    log, _ = logger  # interval 0.05 s
    log.info("issued token 1")
    log.info("issued token 2")
    stream.wait_for(lambda text: text == "INFO issued token 1\nINFO issued token 2\n")
    log.info("issued token 3")  # a later batch gets written too
    stream.wait_for(lambda text: text.endswith("INFO issued token 3\n"))


def test_a_warning_is_written_at_once_after_the_lines_before_it(
    logger: tuple[logging.Logger, BatchingStreamHandler], stream: CountingStream
) -> None:
    log, _ = logger
    log.info("first")
    log.debug("second")
    log.warning("problem")
    assert stream.getvalue() == "INFO first\nDEBUG second\nWARNING problem\n"
    log.error("worse")
    assert stream.getvalue().endswith("ERROR worse\n")


def test_a_full_queue_is_written_at_once(stream: CountingStream) -> None:
    handler = BatchingStreamHandler(stream, interval=60.0, max_queued=10)
    handler.setFormatter(logging.Formatter("%(message)s"))
    records = [logging.LogRecord("x", logging.INFO, __file__, 1, f"line {i}", None, None) for i in range(25)]
    for record in records:
        handler.handle(record)
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(20))  # two full batches; five still queued
    handler.close()
    assert stream.getvalue() == "".join(f"line {i}\n" for i in range(25))


def test_close_writes_what_is_queued_and_later_lines_go_out_at_once(stream: CountingStream) -> None:
    handler = BatchingStreamHandler(stream, interval=60.0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "queued", None, None))
    assert stream.getvalue() == ""
    handler.close()
    assert stream.getvalue() == "queued\n"
    handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "after close", None, None))
    assert stream.getvalue() == "queued\nafter close\n"


def test_every_line_of_many_threads_arrives_whole_and_in_each_threads_order(
    logger: tuple[logging.Logger, BatchingStreamHandler], stream: CountingStream
) -> None:
    log, handler = logger
    threads, per_thread = 8, 500

    def work(t: int) -> None:
        for i in range(per_thread):
            log.info("thread %d line %d", t, i)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT)
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == threads * per_thread
    for t in range(threads):
        own = [line for line in lines if line.startswith(f"INFO thread {t} ")]
        assert own == [f"INFO thread {t} line {i}" for i in range(per_thread)]
    assert stream.writes < threads * per_thread / 10  # batched, not one write per line


def test_a_failing_stream_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    reported: list[logging.LogRecord] = []
    handler = BatchingStreamHandler(Broken(), interval=60.0)
    monkeypatch.setattr(handler, "handleError", reported.append)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    handler.handle(record)  # urgent: written at once, fails, is reported
    assert reported == [record]
    handler.close()  # nothing queued: nothing more to report
