"""A minimal WSGI app for tests that run a real gunicorn (nothing heavy to import, so workers boot at once)."""

from __future__ import annotations

from typing import Any

BODY = b"hello"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
