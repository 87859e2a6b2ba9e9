"""HTTP transport of the client SDK (httpx). RFC 9200 §5.8.1 over HTTP: credentials with HTTP Basic (RFC 6749
§2.3.1), ACE messages as ``application/ace+cbor``."""

from __future__ import annotations

import base64
from urllib.parse import quote

import httpx

from client_sdk.transport import Response

__all__ = ["HttpTransport"]


class HttpTransport:
    """One httpx client (connection pooling), created on first use."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._client: httpx.AsyncClient | None = None
        self._timeout = timeout

    async def post(
        self, uri: str, payload: bytes, *, content_type: str, basic_auth: tuple[str, str] | None = None
    ) -> Response:
        """POST ``payload``; ``basic_auth`` is form-urlencoded into the Basic header as RFC 6749 §2.3.1 says."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout)
        headers = {"Content-Type": content_type, "Accept": content_type}
        if basic_auth is not None:
            pair = f"{quote(basic_auth[0], safe='')}:{quote(basic_auth[1], safe='')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        r = await self._client.post(uri, content=payload, headers=headers)
        return Response(
            status=r.status_code,
            payload=r.content,
            content_type=r.headers.get("content-type", "").split(";")[0] or None,
        )

    async def close(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
