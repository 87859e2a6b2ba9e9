"""Transports of the client SDK: CoAP (aiocoap) and HTTP (httpx). Only these modules import them.

This package module itself imports neither: it holds the transport-neutral :class:`Response` and the
:class:`CoapLike` protocol that :class:`~client_sdk.client.AceClient` programs against (so tests can script a
double without sockets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ace_core.oscore import OscoreContextParameters
from ace_core.status import Status

__all__ = ["CoapLike", "Response"]


@dataclass(frozen=True, slots=True)
class Response:
    """A transport-neutral response: status (CoAP c.dd / HTTP as ``Status``-like int), payload, media type.

    ``protected`` is true when the response came back OSCORE-protected and verified (RFC 8613 §8.4): only then
    does it come from the holder of the security context. An unprotected answer to a protected request (e.g. 4.01
    "Security context not found") has ``protected`` false.
    """

    status: int
    payload: bytes
    content_type: str | None
    protected: bool = False

    @property
    def ok(self) -> bool:
        """2.xx / 2xx."""
        return 200 <= self.status < 300

    def status_text(self) -> str:
        """``"4.01"`` style for CoAP-range codes we know, else the number."""
        try:
            return Status(self.status).coap_dotted
        except ValueError:
            if 0 <= self.status < 800 and self.status % 100 < 32:
                return f"{self.status // 100}.{self.status % 100:02d}"
            return str(self.status)


class CoapLike(Protocol):
    """What :class:`~client_sdk.client.AceClient` needs from a CoAP transport (RFC 7252, OSCORE RFC 8613).

    Implemented by :class:`client_sdk.transport.coap.CoapTransport`.
    """

    async def request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        """Send an *unprotected* request and return the response (any code).

        :raises TransportTimeout: no response in time. :raises TransportError: the network failed.
        """
        ...

    def install_oscore(self, uri: str, params: OscoreContextParameters) -> None:
        """Use a security context built from ``params`` for every protected request to ``uri``'s origin."""
        ...

    def remove_oscore(self, uri: str) -> None:
        """Forget the security context of ``uri``'s origin (no-op without one)."""
        ...

    async def protected_request(
        self, method: str, uri: str, payload: bytes = b"", *, content_format: int | None = None
    ) -> Response:
        """Send an OSCORE-protected request with the origin's installed context.

        :raises NoSecurityContext: none is installed (nothing is sent).
        :raises ResponseProtectionFailed: the response claimed protection but did not verify.
        :raises TransportTimeout: no response in time. :raises TransportError: the network failed.
        """
        ...

    async def close(self) -> None:
        """Release sockets."""
        ...
