# ruff: noqa: F811  (test parameters named after the imported fixtures)
"""The lock's bootstrap client against the AS's bootstrap server over real sockets (issue #7): pull and classic over
DTLS, classic over plain CoAP, refusals that store nothing, and registration with the delivered identity."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from ace_core.lwm2m.bundle import DeviceBundle
from resource_server.bootstrap_client import BootstrapError
from resource_server.credentials import CredentialStore
from resource_server.transport.lwm2m_client import BootstrapClient, Registration
from tests.as_server.transport.test_bootstrap_coap import CLAIMED, UNCLAIMED, Bs, bs, loops  # noqa: F401  (fixtures)

TIMEOUT = 10.0


def _bundle(bs: Bs, device: object = CLAIMED, *, uri: str | None = None, psk: bytes | None = None) -> DeviceBundle:
    return DeviceBundle(
        endpoint=device.endpoint,  # type: ignore[attr-defined]
        serial=device.serial,  # type: ignore[attr-defined]
        model="L1",
        psk_identity=device.psk_identity,  # type: ignore[attr-defined]
        psk=psk if psk is not None else device.psk,  # type: ignore[attr-defined]
        bootstrap_uri=uri if uri is not None else bs.dtls_uri,
    )


def _run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CredentialStore]:
    yield CredentialStore(tmp_path / "credentials.cbor")


def test_pull_over_dtls_then_register(bs: Bs, store: CredentialStore) -> None:
    client = BootstrapClient(_bundle(bs), store, timeout=TIMEOUT)
    creds = _run(client.pull())
    assert store.load() == creds
    assert creds.audience == CLAIMED.serial and creds.server_uri.startswith("coaps://")  # type: ignore[attr-defined]

    async def register() -> tuple[str, ...]:
        # The fixture's AS writes its configured URI (default port 5684); the server listens on an ephemeral port.
        registration = Registration(
            CLAIMED.endpoint,
            bs.dtls_uri,
            creds.newest,
            lifetime=60,
            timeout=TIMEOUT,  # type: ignore[attr-defined]
        )
        location = await registration.register()
        await registration.update()
        await registration.deregister()
        return location

    assert _run(register())[0] == "rd"


def test_repeated_pull_is_idempotent(bs: Bs, store: CredentialStore) -> None:
    client = BootstrapClient(_bundle(bs), store, timeout=TIMEOUT)
    first = _run(client.pull())
    again = _run(client.pull())
    assert again.current == first.current and again.next is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("plain", [False, True], ids=["dtls", "plain"])
def test_classic(bs: Bs, store: CredentialStore, plain: bool) -> None:
    # The server records the end of the previous test's session after the device has answered its Finish; until
    # then a new Bootstrap-Request of the device is refused (4.00), so wait for that (bounded) on a busy machine.
    assert bs.service.wait_until_not_bootstrapping(CLAIMED.serial, TIMEOUT), "the previous session did not end"
    client = BootstrapClient(_bundle(bs, uri=bs.plain_uri if plain else None), store, timeout=TIMEOUT)
    creds = _run(client.classic())
    assert store.load() == creds


def test_wrong_psk_stores_nothing(bs: Bs, store: CredentialStore) -> None:
    client = BootstrapClient(_bundle(bs, psk=bytes(16)), store, timeout=3)
    with pytest.raises(BootstrapError):
        _run(client.pull())
    assert not store.exists()


def test_unknown_endpoint_stores_nothing(bs: Bs, store: CredentialStore) -> None:
    bundle = dataclasses.replace(_bundle(bs, uri=bs.plain_uri), endpoint="urn:dev:ops:nobody")
    client = BootstrapClient(bundle, store, timeout=3)
    with pytest.raises(BootstrapError):
        _run(client.pull())
    assert not store.exists()


def test_unclaimed_device_stores_nothing(bs: Bs, store: CredentialStore) -> None:
    client = BootstrapClient(_bundle(bs, UNCLAIMED), store, timeout=3)
    with pytest.raises(BootstrapError):
        _run(client.bootstrap())
    assert not store.exists()
