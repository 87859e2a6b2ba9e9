"""Client authentication helpers and the failure rate limiter (RFC 6749 §2.3, §10.10; RFC 8516 4.29)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from ace_core.errors import InvalidRequest
from ace_core.status import Status
from as_server import sealing
from as_server.auth import (
    METHOD_BASIC,
    METHOD_PAYLOAD,
    ClientCredentials,
    FailureRateLimiter,
    check_secret,
    select_credentials,
)
from as_server.config import Settings
from as_server.errors import Forbidden, TooManyRequests
from as_server.sealing import hash_secret

NOW = 1_800_000_000


# --------------------------------------------------------------------------------------------------------------
# credentials
# --------------------------------------------------------------------------------------------------------------


def test_transport_credentials_win_when_alone() -> None:
    creds = ClientCredentials("c", b"s", METHOD_BASIC)
    assert select_credentials(creds, None, None) is creds
    assert select_credentials(creds, "c", None) is creds  # the same client id in the payload is fine


def test_payload_credentials() -> None:
    assert select_credentials(None, "c", b"s") == ClientCredentials("c", b"s", METHOD_PAYLOAD)
    assert select_credentials(None, "c", None) is None  # identified, not authenticated
    assert select_credentials(None, None, None) is None


@pytest.mark.parametrize(
    ("transport", "client_id", "secret"),
    [
        (ClientCredentials("c", b"s"), "c", b"s"),  # two methods (RFC 6749 §2.3)
        (ClientCredentials("c", b"s"), None, b"s"),
        (ClientCredentials("c", b"s"), "other", None),  # contradicting ids
        (None, None, b"s"),  # a secret without an id
    ],
)
def test_ambiguous_credentials_are_invalid_request(
    transport: ClientCredentials | None, client_id: str | None, secret: bytes | None
) -> None:
    with pytest.raises(InvalidRequest):
        select_credentials(transport, client_id, secret)


def test_secret_not_in_repr() -> None:
    assert "hunter2" not in repr(ClientCredentials("c", b"hunter2"))


def test_check_secret() -> None:
    stored = hash_secret("right")
    assert check_secret(ClientCredentials("c", b"right"), stored)
    assert not check_secret(ClientCredentials("c", b"wrong"), stored)
    assert not check_secret(ClientCredentials("c", b"right"), None)


def test_check_secret_hashes_for_unknown_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison runs for unknown clients too, so response time does not reveal which ids exist."""
    calls: list[bytes] = []
    real = sealing.secret_matches

    def counting(secret: bytes | str, stored: bytes) -> bool:
        calls.append(stored)
        return real(secret, stored)

    monkeypatch.setattr("as_server.auth.secret_matches", counting)
    assert not check_secret(ClientCredentials("c", b"x"), None)
    assert not check_secret(ClientCredentials("c", b"x"), hash_secret("y"))
    assert len(calls) == 2 and len(calls[0]) == len(calls[1])


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------


def test_error_statuses() -> None:
    assert TooManyRequests.status == Status.TOO_MANY_REQUESTS and Status.TOO_MANY_REQUESTS.coap_dotted == "4.29"
    assert TooManyRequests(0).retry_after == 1  # never "retry now"
    assert TooManyRequests(17).retry_after == 17
    assert Forbidden.status == Status.FORBIDDEN and Status.FORBIDDEN.coap_dotted == "4.03"


# --------------------------------------------------------------------------------------------------------------
# rate limiter
# --------------------------------------------------------------------------------------------------------------


def fail(limiter: FailureRateLimiter, times: int, client_id: str | None, peer: str | None, now: float) -> None:
    for _ in range(times):
        limiter.check(client_id, peer, now)
        limiter.record_failure(client_id, peer, now)


def test_from_settings() -> None:
    settings = Settings(home=Path("/nonexistent"), auth_failure_limit=3, auth_failure_window=30)
    for limiter in (FailureRateLimiter.from_settings(settings), FailureRateLimiter(settings)):
        assert (limiter.limit, limiter.window) == (3, 30)
    assert (FailureRateLimiter(settings, limit=5).limit, FailureRateLimiter().limit) == (5, 10)


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"window": 0}, {"max_keys": 0}])
def test_invalid_parameters(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FailureRateLimiter(**kwargs)  # type: ignore[arg-type]


def test_blocks_after_limit_within_window() -> None:
    limiter = FailureRateLimiter(limit=3, window=60)
    fail(limiter, 3, "c", "192.0.2.1", NOW)
    with pytest.raises(TooManyRequests) as info:
        limiter.check("c", "192.0.2.1", NOW + 10)
    assert info.value.retry_after == 50


@pytest.mark.parametrize(("key_name", "logged"), [(None, "client_id='c'"), ("user", "user='c'")])
def test_the_log_names_what_is_counted(key_name: str | None, logged: str, caplog: pytest.LogCaptureFixture) -> None:
    limiter = FailureRateLimiter(limit=1) if key_name is None else FailureRateLimiter(limit=1, key_name=key_name)
    fail(limiter, 1, "c", "192.0.2.1", NOW)
    with caplog.at_level("WARNING", logger="as_server.auth"), pytest.raises(TooManyRequests):
        limiter.check("c", "192.0.2.1", NOW)
    assert f"rate limit reached for {logged} peer='192.0.2.1'" in caplog.text


def test_sliding_window() -> None:
    limiter = FailureRateLimiter(limit=3, window=60)
    for t in (0, 20, 40):
        limiter.record_failure("c", None, NOW + t)
    with pytest.raises(TooManyRequests) as info:
        limiter.check("c", None, NOW + 59)
    assert info.value.retry_after == 1
    limiter.check("c", None, NOW + 60)  # the first failure left the window
    limiter.record_failure("c", None, NOW + 60)
    with pytest.raises(TooManyRequests) as info:
        limiter.check("c", None, NOW + 61)
    assert info.value.retry_after == 19  # until the failure at +20 leaves


def test_per_client_id_across_addresses() -> None:
    limiter = FailureRateLimiter(limit=2, window=60)
    limiter.record_failure("c", "192.0.2.1", NOW)
    limiter.record_failure("c", "192.0.2.2", NOW)
    with pytest.raises(TooManyRequests):
        limiter.check("c", "192.0.2.3", NOW)
    limiter.check("other", "192.0.2.3", NOW)


def test_per_address_across_client_ids() -> None:
    limiter = FailureRateLimiter(limit=2, window=60)
    limiter.record_failure("a", "192.0.2.1", NOW)
    limiter.record_failure("b", "192.0.2.1", NOW)
    with pytest.raises(TooManyRequests):
        limiter.check("c", "192.0.2.1", NOW)
    with pytest.raises(TooManyRequests):
        limiter.check(None, "192.0.2.1", NOW)
    limiter.check("c", "192.0.2.2", NOW)


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() -> None:
    limiter = FailureRateLimiter(limit=2, window=60)
    limiter.record_failure(None, "2001:db8:1:2::1", NOW)
    limiter.record_failure(None, "2001:db8:1:2:ffff::9", NOW)
    with pytest.raises(TooManyRequests):
        limiter.check(None, "2001:db8:1:2::77", NOW)
    limiter.check(None, "2001:db8:1:3::1", NOW)  # another /64
    limiter.record_failure(None, "::ffff:192.0.2.7", NOW)
    limiter.record_failure(None, "192.0.2.7", NOW)
    with pytest.raises(TooManyRequests):
        limiter.check(None, "192.0.2.7", NOW)
    limiter.record_failure(None, "peer-name", NOW)  # not an address: used as given
    limiter.check(None, "peer-name", NOW)


def test_memory_is_bounded() -> None:
    limiter = FailureRateLimiter(limit=5, window=60, max_keys=100)
    for i in range(1000):
        limiter.record_failure(f"random-{i}", None, NOW)
    assert len(limiter) == 100
    for _ in range(50):
        limiter.record_failure("hot", None, NOW)
    assert len(limiter) == 100
    with pytest.raises(TooManyRequests):
        limiter.check("hot", None, NOW)


def test_expired_entries_are_dropped_on_check() -> None:
    limiter = FailureRateLimiter(limit=5, window=60)
    limiter.record_failure("c", "192.0.2.1", NOW)
    assert len(limiter) == 2
    limiter.check("c", "192.0.2.1", NOW + 61)
    assert len(limiter) == 0


def test_thread_safe() -> None:
    limiter = FailureRateLimiter(limit=1000, window=60, max_keys=50)
    errors: list[BaseException] = []

    def hammer(n: int) -> None:
        try:
            for i in range(300):
                limiter.record_failure(f"c{i % 70}", f"192.0.2.{n}", NOW)
                try:
                    limiter.check(f"c{i % 70}", f"192.0.2.{n}", NOW)
                except TooManyRequests:
                    pass
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(limiter) <= 50
