"""Helpers of the console tests: an AS (memory storage, the consent world's people and policy) behind Flask's test
client, and sign-in with the page's CSRF token."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from flask.testing import FlaskClient

from as_server.storage.memory import MemoryStorage
from as_server.transport.http import create_app
from tests.as_server.consent_fixtures import PASSWORDS, ConsentWorld
from tests.as_server.transport.harness import assert_no_traceback

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: bytes | str) -> str:
    """The CSRF token of the first form on a page."""
    text = html.decode() if isinstance(html, bytes) else html
    found = CSRF.search(text)
    assert found is not None, "no csrf_token on the page"
    return found.group(1)


@contextmanager
def console_world() -> Iterator[tuple[ConsentWorld, FlaskClient]]:
    """The consent world on memory storage and a test client of its HTTP app."""
    world = ConsentWorld.create(MemoryStorage())
    app = create_app(world.server)
    try:
        yield world, app.test_client()
    finally:
        world.close()


def sign_in(client: FlaskClient, name: str, password: str | None = None) -> int:
    """Sign ``name`` in; the status of the POST (303 on success)."""
    page = client.get("/console/signin")
    assert page.status_code in (200, 303)
    if page.status_code == 303:
        return 303
    response = client.post(
        "/console/signin",
        data={"csrf_token": csrf_of(page.data), "username": name, "password": password or PASSWORDS[name]},
    )
    assert_no_traceback(response.data)
    return response.status_code


def post_form(client: FlaskClient, page_path: str, action: str, data: dict[str, str] | None = None) -> object:
    """POST ``data`` to ``action`` with the CSRF token of the page at ``page_path``."""
    page = client.get(page_path)
    assert page.status_code == 200, page.status_code
    response = client.post(action, data={"csrf_token": csrf_of(page.data), **(data or {})})
    assert_no_traceback(response.data)
    return response
