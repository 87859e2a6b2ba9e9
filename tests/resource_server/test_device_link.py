""":class:`DeviceLink` bootstraps again with the lock's method (``ostiary lock serve --bootstrap-method``): the
periodic pull that picks up a rotated key is a Bootstrap-Pack-Request for ``pack`` and the classic flow for
``classic``, and so is the re-bootstrap after a failed registration. The registration itself is replaced by a
stand-in: these tests are about which bootstrap the loop runs, not about the network."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from resource_server.bootstrap_client import BootstrapError
from resource_server.credentials import CredentialKeeper, CredentialStore
from resource_server.registration import Backoff
from resource_server.transport.lwm2m_client import DeviceLink, RegistrationFailed

#: Bound on one test's event loop (seconds).
FLOW_TIMEOUT = 5.0
#: The link's pull interval in these tests (seconds).
PULL_INTERVAL = 0.01


class RecordingClient:
    """Stands in for :class:`BootstrapClient`: records which bootstrap the link asks for and stops the link
    after ``calls_before_stop`` of them."""

    def __init__(self, keeper: CredentialKeeper, stop: asyncio.Event, calls_before_stop: int = 2) -> None:
        self.keeper = keeper
        self.stop = stop
        self.calls: list[str] = []
        self.calls_before_stop = calls_before_stop

    async def _record(self, name: str) -> Any:
        self.calls.append(name)
        if len(self.calls) >= self.calls_before_stop:
            self.stop.set()
        raise BootstrapError(f"{name}: not reachable in this test")

    async def pull(self) -> Any:
        return await self._record("pull")

    async def classic(self) -> Any:
        return await self._record("classic")

    async def bootstrap(self) -> Any:
        return await self._record("bootstrap")


class StandInRegistration:
    lifetime = 3600

    async def update(self) -> None:
        raise AssertionError("no Update is due within the test")

    async def deregister(self) -> None:
        pass


def _link(tmp_path: Path, method: str, stop: asyncio.Event) -> tuple[DeviceLink, RecordingClient]:
    keeper = CredentialKeeper(CredentialStore(tmp_path / "credentials.cbor"))
    client = RecordingClient(keeper, stop)
    link = DeviceLink(client, pull_interval=PULL_INTERVAL, method=method, backoff=Backoff(attempts=0))  # type: ignore[arg-type]
    return link, client


@pytest.mark.parametrize(("method", "expected"), [("pack", "pull"), ("classic", "classic")])
def test_the_periodic_bootstrap_follows_the_method(tmp_path: Path, method: str, expected: str) -> None:
    async def flow() -> list[str]:
        stop = asyncio.Event()
        link, client = _link(tmp_path, method, stop)

        async def registered() -> None:
            link.registration = StandInRegistration()  # type: ignore[assignment]

        link._register = registered  # type: ignore[method-assign]
        await asyncio.wait_for(link.run(stop), FLOW_TIMEOUT)
        return client.calls

    assert asyncio.run(flow()) == [expected, expected]


@pytest.mark.parametrize(("method", "expected"), [("pack", "bootstrap"), ("classic", "classic")])
def test_the_rebootstrap_after_a_failed_registration_follows_the_method(
    tmp_path: Path, method: str, expected: str
) -> None:
    async def flow() -> list[str]:
        stop = asyncio.Event()
        link, client = _link(tmp_path, method, stop)

        async def refused() -> None:
            raise RegistrationFailed("Register: no answer")

        link._register = refused  # type: ignore[method-assign]
        await asyncio.wait_for(link.run(stop), FLOW_TIMEOUT)  # the client stops the link at its second bootstrap
        return client.calls

    # every re-bootstrap, not only the first, uses the method; the link keeps retrying until it is stopped
    assert asyncio.run(flow()) == [expected, expected]


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown bootstrap method"):
        _link(tmp_path, "bspack", asyncio.Event())


# -- a newer key after a bootstrap: rotation or revocation ------------------------------------------------------


def _account(generation: int) -> Any:
    from resource_server.credentials import DeliveredAccount, KeySlot

    slot = KeySlot(identity=f"L1-00000042#{generation}".encode(), key=bytes([generation]) * 16, generation=generation)
    return DeliveredAccount(
        server_uri="coaps://127.0.0.1:1", slot=slot, server_public_key=b"", short_server_id=1, lifetime=300
    )


@pytest.mark.parametrize("accepted", [True, False], ids=["rotation", "revocation"])
def test_a_newer_key_is_a_rotation_only_while_the_as_takes_the_old_identity(tmp_path: Path, accepted: bool) -> None:
    async def flow() -> tuple[DeviceLink, list[bytes]]:
        link, _client = _link(tmp_path, "pack", asyncio.Event())
        link.keeper.deliver(_account(1))
        asked: list[bytes] = []

        async def identity_accepted(creds: Any) -> bool:
            asked.append(creds.newest.identity)
            return accepted

        link._identity_accepted = identity_accepted  # type: ignore[method-assign]
        before = link.keeper.credentials
        await link._after_bootstrap(before)  # the same key again: nothing to ask
        link.keeper.deliver(_account(2))
        await link._after_bootstrap(before)
        return link, asked

    link, asked = asyncio.run(asyncio.wait_for(flow(), FLOW_TIMEOUT))
    creds = link.keeper.credentials
    assert creds is not None and asked == [b"L1-00000042#1"]
    if accepted:  # rotation: the old key stays current until a token under the new one arrives
        assert creds.current.generation == 1 and creds.next is not None and creds.next.generation == 2
    else:  # the AS retired it: the new key alone, at once
        assert creds.current.generation == 2 and creds.next is None and creds.previous is None


# -- what the log says when the AS refuses the lock (a revoked, decommissioned or released device) ----------------


class RefusingClient:
    """Stands in for :class:`BootstrapClient` when the bootstrap server refuses the factory identity at DTLS."""

    def __init__(self, keeper: CredentialKeeper) -> None:
        self.keeper = keeper
        self.bundle = SimpleNamespace(psk_identity=b"bs-refusedrefused00", endpoint="urn:dev:ops:ostiary-L1-00000043")
        self.calls = 0

    async def bootstrap(self) -> Any:
        self.calls += 1
        refused = BootstrapError("Bootstrap-Pack-Request: the server refused the DTLS handshake")
        refused.handshake_refused = True
        raise refused


def test_a_refused_lock_says_so_once_per_change_and_keeps_retrying(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The lock's identity revoked and its factory identity refused (``ostiary as rs revoke --decommission``): the
    log says in words what happened, once, not once per attempt; the retries and their backoff go on."""
    keeper = CredentialKeeper(CredentialStore(tmp_path / "credentials.cbor"))
    keeper.deliver(_account(1))
    client = RefusingClient(keeper)
    slept: list[float] = []
    stop = asyncio.Event()

    async def sleep(delay: float) -> None:
        slept.append(delay)
        if len(slept) == 4:
            stop.set()  # the lock stops during its fourth wait

    link = DeviceLink(client, backoff=Backoff(initial=5, maximum=20, attempts=3), sleep=sleep)  # type: ignore[arg-type]

    async def refused() -> None:
        failure = RegistrationFailed("Register: the server refused the DTLS handshake")
        failure.handshake_refused = True
        raise failure

    link._register = refused  # type: ignore[method-assign]
    caplog.set_level(logging.DEBUG, logger="ostiary.lock.lwm2m")
    assert asyncio.run(asyncio.wait_for(link._register_with_retries(stop), FLOW_TIMEOUT)) is False

    assert client.calls == 4 and slept == [5.0, 10.0, 20.0, 40.0]  # the backoff's attempts, then on without end
    lwm2m = [r for r in caplog.records if r.name == "ostiary.lock.lwm2m"]
    warnings = [r.getMessage() for r in lwm2m if r.levelno == logging.WARNING]
    assert warnings == [
        "the AS refused the lock's operational identity L1-00000042#1 (DTLS handshake failed: its key was revoked"
        " or retired); bootstrapping again",
        "the bootstrap server refused the factory identity bs-refusedrefused00 of urn:dev:ops:ostiary-L1-00000043"
        " (DTLS handshake failed): the device may be decommissioned or released, or its factory bundle is wrong;"
        " retrying",
    ]
    assert sum(r.getMessage().startswith("still: ") for r in lwm2m if r.levelno == logging.DEBUG) == 6
    assert "NetworkError" not in caplog.text


def test_a_changed_failure_is_logged_again_and_a_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    link = DeviceLink.__new__(DeviceLink)
    link._reported = {}
    caplog.set_level(logging.DEBUG, logger="ostiary.lock.lwm2m")
    for message in ("bootstrap failed: A", "bootstrap failed: A", "bootstrap failed: B"):
        link._failed("bootstrap", message)
    link._recovered("bootstrap", "works again")
    link._recovered("bootstrap", "works again")
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("WARNING", "bootstrap failed: A"),
        ("DEBUG", "still: bootstrap failed: A"),
        ("WARNING", "bootstrap failed: B"),
        ("INFO", "works again"),
    ]


# -- registration keeps being retried: a device claimed again, an AS back after an outage -----------------------


@pytest.mark.parametrize(
    ("pull_interval", "later"),
    [
        (3600.0, [600.0, 1200.0, 2400.0, 3600.0, 3600.0, 3600.0]),  # the default pull interval
        (7200.0, [600.0, 1200.0, 2400.0, 3600.0, 3600.0, 3600.0]),  # MAX_RETRY_DELAY
        (60.0, [60.0] * 6),  # a shorter pull interval caps every delay, the early ones too
    ],
)
def test_registration_is_retried_without_end_under_a_ceiling_and_succeeds_when_the_as_accepts_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, pull_interval: float, later: list[float]
) -> None:
    """More than the backoff's 8 attempts fail (the device was released, or the AS is down): the link goes on,
    its delay capped at the pull interval or an hour, and registers once the AS accepts it again."""
    keeper = CredentialKeeper(CredentialStore(tmp_path / "credentials.cbor"))
    keeper.deliver(_account(1))
    client = RefusingClient(keeper)
    slept: list[float] = []
    failures = 14

    async def sleep(delay: float) -> None:  # a fake clock: the delays are recorded, not waited
        slept.append(delay)

    link = DeviceLink(client, pull_interval=pull_interval, sleep=sleep)  # type: ignore[arg-type]
    attempts: list[int] = []

    async def register() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= failures:
            raise RegistrationFailed("Register: no answer")
        link.registration = StandInRegistration()  # type: ignore[assignment]
        link.registered.set()

    link._register = register  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="ostiary.lock.lwm2m")
    registered = asyncio.run(asyncio.wait_for(link._register_with_retries(asyncio.Event()), FLOW_TIMEOUT))

    assert registered is True and link.registered.is_set() and len(attempts) == failures + 1
    assert client.calls == failures  # one re-bootstrap per failure
    early = [min(d, pull_interval) for d in (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0)]
    assert slept == early + later  # the early attempts as before, then capped
    messages = [r.getMessage() for r in caplog.records if r.name == "ostiary.lock.lwm2m"]
    assert sum("not registered after 9 attempts" in m for m in messages) == 1
    assert messages[-1] == "registered again"


def test_a_stop_ends_the_wait_between_attempts_at_once(tmp_path: Path) -> None:
    """SIGTERM while the link waits to retry (a real ``asyncio.sleep`` of a minute) stops it without delay."""
    stop = asyncio.Event()
    keeper = CredentialKeeper(CredentialStore(tmp_path / "credentials.cbor"))
    keeper.deliver(_account(1))
    client = RecordingClient(keeper, stop, calls_before_stop=1_000)
    link = DeviceLink(client, method="pack", backoff=Backoff(initial=60.0))  # type: ignore[arg-type]

    async def refused() -> None:
        raise RegistrationFailed("Register: no answer")

    link._register = refused  # type: ignore[method-assign]

    async def flow() -> float:
        loop = asyncio.get_running_loop()
        task = asyncio.create_task(link.run(stop))
        while not client.calls:  # the first attempt failed; the link now waits 60 s
            await asyncio.sleep(0)
        stop.set()
        started = loop.time()
        await asyncio.wait_for(task, FLOW_TIMEOUT)
        return loop.time() - started

    assert asyncio.run(asyncio.wait_for(flow(), FLOW_TIMEOUT)) < 1.0
    assert client.calls == ["bootstrap"]
