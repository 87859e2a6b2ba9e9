"""UDP ports the AS's CoAP servers bind: refuse one that another server on this machine already holds.

aiocoap binds its server sockets with ``SO_REUSEPORT`` (``simplesocketserver``, ``udp6`` and the DTLS server), so
a second server on a taken port starts without an error, and the kernel then spreads the datagrams over both
sockets by source address: some clients reach one server, some the other (a lock on the AS's bootstrap port
answered its token upload, then never saw the OSCORE request that followed from another source port). Before
binding, :func:`ensure_udp_port_free` binds a probe socket that does not share; a port in use fails it with
``EADDRINUSE``, which the caller gets as an :class:`OSError` naming the port. (``resource_server.aiocoap_site``
does the same for locks; the two packages do not import each other, STYLE §3.1.)
"""

from __future__ import annotations

import errno
import socket

__all__ = ["PortInUseError", "ensure_udp_port_free"]


class PortInUseError(OSError):
    """Another server holds the UDP port (``EADDRINUSE``); ``str()`` is the message alone, for one-line errors."""

    def __str__(self) -> str:
        return str(self.strerror)


def ensure_udp_port_free(host: str, port: int, *, setting: str | None = None) -> None:
    """Raise :class:`PortInUseError` if another socket holds UDP ``host:port``; port 0 always passes.

    ``setting`` names what chooses the port (e.g. ``"coap_port (OSTIARY_COAP_PORT)"``), for the message. Other
    failures (an address this machine does not have, a privileged port) are left to the real bind, which reports
    them itself.
    """
    if port == 0:
        return
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror:
        return
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as aiocoap's udp6 binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                where = host or "every address"
                message = f"UDP port {port} on {where} is already in use by another server"
                if setting is not None:
                    message += f"; choose another with {setting}"
                raise PortInUseError(errno.EADDRINUSE, message) from None
