"""The trivial HTTP baseline: a Flask POST endpoint returning a small JSON body.

It reads the request body (as any endpoint must) and answers ``{"ok": true}`` without further work, so its rate
is the ceiling of the server stack (gunicorn + Flask + the load generator on the same machine).

Run: ``gunicorn -k gthread -w W --threads T 'benchmarks.baselines.trivial_http:create_app()'``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

__all__ = ["PATH", "create_app"]

PATH = "/echo"


def create_app() -> Flask:
    """The Flask application with one route, ``POST /echo``."""
    app = Flask(__name__)

    @app.post(PATH)
    def echo() -> Response:
        request.get_data()
        return jsonify(ok=True)

    return app
