"""A lock refuses a UDP port another server on this machine holds (resource_server.aiocoap_site): aiocoap binds
with SO_REUSEPORT, so a lock started on the AS's bootstrap port used to start silently and got some of the
datagrams meant for it (a client's upload reached the lock, its OSCORE requests from another port did not)."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

import pytest

from tests.resource_server.support import Lock, rs_config, shared_key


def test_a_lock_on_a_port_another_server_holds_refuses_to_start(make_lock: Callable[..., Lock]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as aiocoap binds its servers
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=rf"UDP port {port} on 127.0.0.1 is already in use") as caught:
            make_lock(rs_config(shared_key()), port=port)
        assert caught.value.errno == errno.EADDRINUSE


def test_a_second_lock_on_the_same_port_refuses_to_start(make_lock: Callable[..., Lock]) -> None:
    first = make_lock(rs_config(shared_key()))
    with pytest.raises(OSError, match="already in use"):
        make_lock(rs_config(shared_key()), port=first.server.port)
