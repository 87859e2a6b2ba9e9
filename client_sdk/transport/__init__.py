"""Transports of the client SDK: CoAP (aiocoap) and HTTP (httpx). Only these modules import them."""

from __future__ import annotations

from dataclasses import dataclass

from ace_core.status import Status

__all__ = ["Response"]


@dataclass(frozen=True, slots=True)
class Response:
    """A transport-neutral response: status (CoAP c.dd / HTTP as ``Status``-like int), payload, media type."""

    status: int
    payload: bytes
    content_type: str | None

    @property
    def ok(self) -> bool:
        """2.xx / 2xx."""
        return 200 <= self.status < 300

    def status_text(self) -> str:
        """``"4.01"`` style for CoAP-range codes we know, else the number."""
        try:
            return Status(self.status).coap_dotted
        except ValueError:
            return str(self.status)
