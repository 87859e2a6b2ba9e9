"""Application resources without a CoAP stack: what lock firmware implements (sans-IO, STYLE §3.1).

A resource is a function from :class:`Request` to :class:`Response`. By the time it runs, the request was
unprotected and the guard allowed it (RFC 9200 §5.10.2), so :attr:`Request.authorization` is always the token
that grants it. :func:`resource_server.aiocoap_site.resource_site` turns a list of :class:`Resource` into an
aiocoap site. Payload formats are media types (``"application/json"``), which the transport maps to CoAP
Content-Format numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ace_core.status import Status
from resource_server.token_store import StoredToken

__all__ = ["Handler", "Request", "Resource", "Response"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A request that passed the guard.

    :param method: ``"GET"``, ``"PUT"``, ``"POST"``, ...
    :param path: the local path, e.g. ``"/lock"``.
    :param content_type: media type of ``payload`` (``None`` if the request had no Content-Format or an
        unregistered one).
    :param accept: the media type the client asked for with Accept (``None`` if none).
    :param authorization: the token that grants this request.
    :param peer: the client's transport address (for logs).
    """

    method: str
    path: str
    payload: bytes = b""
    content_type: str | None = None
    accept: str | None = None
    authorization: StoredToken
    peer: str = ""


@dataclass(frozen=True, slots=True)
class Response:
    """A resource's answer: a status, and a payload with its media type."""

    status: Status
    payload: bytes = b""
    content_type: str | None = None


Handler = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class Resource:
    """A resource at ``path`` served by ``handler``.

    :param methods: the methods ``handler`` implements; others get 4.05 without calling it.
    :param rt: resource type for ``/.well-known/core`` (RFC 6690 §3.1).
    :param content_types: media types it can answer in (listed as ``ct`` in ``/.well-known/core``).
    """

    path: str
    handler: Handler
    methods: frozenset[str] = field(default_factory=lambda: frozenset({"GET"}))
    rt: str | None = None
    content_types: tuple[str, ...] = ()
