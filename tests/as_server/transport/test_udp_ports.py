"""A CoAP server of the AS refuses a UDP port that another server on this machine holds (as_server.transport.udp).

aiocoap binds with SO_REUSEPORT, so without the check a second server started silently and the kernel spread the
datagrams over both by source address.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator

import aiocoap
import pytest

from as_server.transport.coap import start_coap
from as_server.transport.udp import PortInUseError, ensure_udp_port_free
from tests.as_server.transport.harness import Running, free_port


@pytest.fixture
def shared_holder() -> Iterator[int]:
    """A UDP port on 127.0.0.1 held the way aiocoap holds its server ports (SO_REUSEPORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def test_a_free_port_and_port_zero_pass() -> None:
    ensure_udp_port_free("127.0.0.1", free_port(socket.SOCK_DGRAM))
    ensure_udp_port_free("127.0.0.1", 0)
    ensure_udp_port_free("::", free_port(socket.SOCK_DGRAM))


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0", "::", ""])  # noqa: S104 - the wildcard binds are the case
def test_a_port_held_with_reuseport_is_refused_on_every_bind_address(shared_holder: int, host: str) -> None:
    with pytest.raises(PortInUseError) as caught:
        ensure_udp_port_free(host, shared_holder, setting="coap_port")
    assert caught.value.errno == errno.EADDRINUSE
    assert str(caught.value) == (
        f"UDP port {shared_holder} on {host or 'every address'} is already in use by another server;"
        " choose another with coap_port"
    )


def test_a_second_as_coap_server_on_the_port_refuses_to_start_and_the_first_keeps_serving(
    deployment: Running,
) -> None:
    coap = deployment.coap
    with pytest.raises(PortInUseError, match=rf"UDP port {coap.port} on 127.0.0.1 .*coap_port \(OSTIARY_COAP_PORT"):
        coap.loops.run(start_coap(deployment.server, "127.0.0.1", coap.port))

    async def discover() -> aiocoap.Message:
        message = aiocoap.Message(code=aiocoap.GET, uri=f"{coap.base}/.well-known/core")
        return await coap.client.request(message).response

    reply = coap.loops.run(discover())
    assert reply.code == aiocoap.CONTENT and b"</token>" in reply.payload
