"""gunicorn hooks for ``ostiary as serve`` (``-c python:as_server.transport.gunicorn_conf``).

The master process never opens storage: each worker builds its app right after the fork (:func:`post_fork`) and
closes its storage when it exits (:func:`worker_exit`). See :mod:`as_server.transport.wsgi`.
"""

from __future__ import annotations

from typing import Any

#: Workers are forked before the application is imported (one storage, one connection pool per worker).
preload_app = False
#: No access log: request lines are harmless, but nothing about clients should be logged by default.
accesslog = None


def post_fork(server: Any, worker: Any) -> None:
    """Configure the worker's logging like the parent's, build the app (master key, storage), and keep what now
    exists out of the garbage collector's walks (:func:`~as_server.server.freeze_startup_objects`)."""
    import os

    from as_server.server import configure_logging, freeze_startup_objects
    from as_server.transport.wsgi import app

    configure_logging(os.environ.get("OSTIARY_LOG_LEVEL") or "INFO")
    app.load()
    freeze_startup_objects()


def worker_exit(server: Any, worker: Any) -> None:
    """Close the worker's storage."""
    from as_server.transport.wsgi import app

    app.close()
