"""WSGI entry point for gunicorn: ``gunicorn as_server.transport.wsgi:app``.

``app`` is built lazily, once per worker process: gunicorn (without ``--preload``) imports this module in each
worker after the fork, and :func:`as_server.transport.gunicorn_conf.post_fork` builds the application right away,
so a configuration error stops the worker at boot instead of at its first request. Should anything import this
module in a process that later forks (``--preload``), nothing has been opened yet: storage connections and SQLite
handles must never be shared across a fork. Settings come from ``OSTIARY_HOME`` and ``OSTIARY_*`` variables
(:meth:`as_server.config.Settings.load`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from as_server.app import AuthorizationServer
from as_server.config import Settings

__all__ = ["LazyApp", "app"]

StartResponse = Callable[..., Any]


class LazyApp:
    """A WSGI callable that creates the Flask app (and opens the AS) on first use in the current process."""

    def __init__(self, factory: Callable[[], tuple[Any, AuthorizationServer]]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._app: Any = None
        self._server: AuthorizationServer | None = None
        self._pid: int | None = None

    def load(self) -> Any:
        """Build the app in this process if not done yet; returns the Flask app."""
        if self._app is None or self._pid != os.getpid():
            with self._lock:
                if self._app is None or self._pid != os.getpid():
                    self._app, self._server = self._factory()
                    self._pid = os.getpid()
        return self._app

    def close(self) -> None:
        """Close the AS opened in this process (gunicorn ``worker_exit``)."""
        with self._lock:
            if self._server is not None and self._pid == os.getpid():
                self._server.close()
            self._app = self._server = self._pid = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        result: Iterable[bytes] = self.load()(environ, start_response)
        return result


def _build() -> tuple[Any, AuthorizationServer]:
    from as_server.transport.http import create_app

    server = AuthorizationServer.from_settings(Settings.load())
    try:
        return create_app(server), server
    except BaseException:
        server.close()
        raise


#: The WSGI application gunicorn serves.
app = LazyApp(_build)
