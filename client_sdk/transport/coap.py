"""CoAP transport of the client SDK (aiocoap). RFC 7252; ACE payloads are ``application/ace+cbor`` (RFC 9200 §5)."""

from __future__ import annotations

import asyncio

import aiocoap
from aiocoap.numbers import ContentFormat

from ace_core.status import Status
from client_sdk.transport import Response

__all__ = ["CoapTransport"]


class CoapTransport:
    """One aiocoap client context, created on first use and shared by every request of an :class:`AceClient`."""

    def __init__(self, *, timeout: float = 10.0) -> None:
        self._context: aiocoap.Context | None = None
        self._timeout = timeout

    async def _ctx(self) -> aiocoap.Context:
        if self._context is None:
            self._context = await aiocoap.Context.create_client_context()
        return self._context

    async def post(self, uri: str, payload: bytes, *, content_format: int) -> Response:
        """POST ``payload`` with the given Content-Format; returns the response (any code)."""
        ctx = await self._ctx()
        request = aiocoap.Message(
            code=aiocoap.POST, uri=uri, payload=payload, content_format=ContentFormat(content_format)
        )
        response = await asyncio.wait_for(ctx.request(request).response, self._timeout)
        code = int(response.code)
        status = (code >> 5) * 100 + (code & 0x1F)
        cf = response.opt.content_format
        media = cf.media_type if cf is not None and getattr(cf, "is_known", lambda: True)() else None
        return Response(
            status=Status(status) if status in Status._value2member_map_ else status,
            payload=response.payload,
            content_type=media,
        )

    async def close(self) -> None:
        """Shut the client context down."""
        if self._context is not None:
            await self._context.shutdown()
            self._context = None
