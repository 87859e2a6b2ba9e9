"""Client authentication at the token and introspection endpoints, with a failure rate limit (sans-IO).

Clients authenticate with a pre-established secret (RFC 6749 §2.3.1), either through the transport (HTTP Basic,
``client_secret_basic``) or in the request payload (``client_id`` + ``client_secret``, RFC 9200 §5.8.1 Table 5 keys
24/25 over CoAP, ``client_secret_post`` over HTTP). The transport hands the endpoint what it found as a
:class:`ClientCredentials`; the endpoint merges it with the payload (:func:`select_credentials`) and checks it
against the stored hash (:func:`check_secret`), always doing the same work whether or not the client exists.

:class:`FailureRateLimiter` counts failed authentications per client id and per source address in a sliding
window (:attr:`~as_server.config.Settings.auth_failure_limit` failures within
:attr:`~as_server.config.Settings.auth_failure_window` seconds); beyond that, requests are refused with
:class:`~as_server.errors.TooManyRequests` (4.29) before any secret is compared. The same limiter, keyed by user
name, guards approvers' passwords (the consent API) and the sign-in page.

The counts live in the memory of one server process. ``ostiary as serve`` runs the CoAP side in one process and the
HTTP side in :attr:`~as_server.config.Settings.http_workers` gunicorn workers, each with its own counts, so a
guesser whose requests are spread over the processes gets up to about ``auth_failure_limit`` x (``http_workers``
+ 1) failures per window, not ``auth_failure_limit``. Sharing the counts (in the database, or a shared cache) would
put a write on every failure; set the limit with this factor in mind.

Design decisions (RFC 6749 §10.10 and RFC 9200 §6 ask for protection against guessing, without specifying it):

* **Both keys count.** A request is refused when *either* its client id *or* its source address has reached the
  limit. The per-client-id limit stops distributed guessing against one client; the per-address limit stops one
  source spraying many client ids. The price is the classic lockout: anyone who knows a client id can keep it
  locked by failing on purpose (from many addresses). Operators who see that in the logs can raise the limit.
* **Success does not reset the counters**, so a client that authenticates correctly does not clear the record of
  someone guessing its secret, and one valid credential cannot be used to reset an address's count.
* **IPv6 sources are counted per /64**, the smallest block an attacker is usually given; IPv4 (and IPv4-mapped
  IPv6) per address. Transports pass the source *address* without the port (CoAP clients change ports freely);
  anything that is not an IP address is used as given.
* **Bounded memory.** Each key keeps at most ``limit`` timestamps, and at most ``max_keys`` keys are tracked
  (least recently failed dropped first), so a flood of random client ids costs a fixed amount of memory; the
  cost is that under such a flood old entries are forgotten early.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from ace_core.errors import InvalidRequest
from as_server.config import Settings
from as_server.errors import TooManyRequests
from as_server.sealing import hash_secret, secret_matches

__all__ = [
    "METHOD_BASIC",
    "METHOD_PAYLOAD",
    "METHOD_POST",
    "ClientCredentials",
    "FailureRateLimiter",
    "check_secret",
    "select_credentials",
]

logger = logging.getLogger(__name__)

#: HTTP Basic authentication (RFC 6749 §2.3.1), reported by the HTTP transport.
METHOD_BASIC: Final = "client_secret_basic"
#: ``client_id``/``client_secret`` in an HTTP form or JSON body (RFC 6749 §2.3.1).
METHOD_POST: Final = "client_secret_post"
#: ``client_id``/``client_secret`` in the request payload (RFC 9200 §5.8.1). Endpoints see decoded messages and
#: cannot tell a form from a CBOR map, so credentials taken from the message are reported with this method.
METHOD_PAYLOAD: Final = "payload"

#: Compared against when a client id is unknown, so that unknown and known clients cost the same (no timing
#: oracle on which client ids exist). No secret hashes to it.
_DUMMY_HASH: Final = hash_secret(b"ostiary: no such client\x00")

#: Keys tracked by :class:`FailureRateLimiter` by default; each holds at most ``limit`` timestamps.
DEFAULT_MAX_KEYS: Final = 10_000
_IPV6_BLOCK: Final = 64


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """A client id and the secret it presented, as found by the transport or in the payload (RFC 6749 §2.3.1).

    The secret is excluded from ``repr`` so that it cannot end up in logs or tracebacks by accident.
    """

    client_id: str
    secret: bytes = field(repr=False)
    method: str = METHOD_BASIC


def select_credentials(
    transport: ClientCredentials | None, client_id: str | None, client_secret: bytes | None
) -> ClientCredentials | None:
    """Merge transport credentials with ``client_id``/``client_secret`` from the request payload.

    RFC 6749 §2.3: a client MUST NOT use more than one authentication method in one request, so a secret in both
    places is an ``invalid_request``. A payload ``client_id`` next to transport credentials is tolerated when it
    names the same client (RFC 6749 §3.2.1 lets a client identify itself that way) and refused otherwise.

    :returns: the credentials to check, or ``None`` when the request carries none.
    :raises InvalidRequest: two authentication methods, contradicting client ids, or a secret without a client id.
    """
    if transport is not None:
        if client_secret is not None:
            raise InvalidRequest("more than one client authentication method")
        if client_id is not None and client_id != transport.client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
        return transport
    if client_secret is not None:
        if client_id is None:
            raise InvalidRequest("client_secret without client_id")
        return ClientCredentials(client_id, client_secret, METHOD_PAYLOAD)
    return None


def check_secret(credentials: ClientCredentials, stored_hash: bytes | None) -> bool:
    """Compare a presented secret with a stored hash in constant time; ``None`` (no such client) never matches.

    The hash is computed and compared in every case, so the time taken does not reveal whether the client exists.
    """
    matches = secret_matches(credentials.secret, stored_hash if stored_hash is not None else _DUMMY_HASH)
    return matches and stored_hash is not None


@functools.lru_cache(maxsize=4096)
def _peer_key(peer: str) -> str:
    """The rate-limit key of a source address: the address, or its /64 for IPv6 (cached: parsing an address costs
    more than the rest of a successful check)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/{_IPV6_BLOCK}", strict=False))
    return str(address)


class FailureRateLimiter:
    """Sliding-window limit on failed client authentications, per client id and per source address.

    Per process (see the module documentation). Thread-safe; one instance is shared by the token and introspection
    endpoints of an AS. Time is a parameter (``now``, seconds since the epoch).

    :param settings: supplies ``auth_failure_limit`` and ``auth_failure_window`` (defaults 10 failures in 60 s).
    :param limit: failures allowed per key within the window (overrides ``settings``).
    :param window: the window in seconds (overrides ``settings``).
    :param max_keys: how many client ids and addresses are tracked at most.
    :param key_name: what the first key is, for the log: ``client_id``, or ``user`` where user names are counted.
    :raises ValueError: a limit, window or key bound below 1.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        limit: int | None = None,
        window: float | None = None,
        max_keys: int = DEFAULT_MAX_KEYS,
        key_name: str = "client_id",
    ) -> None:
        if limit is None:
            limit = settings.auth_failure_limit if settings is not None else 10
        if window is None:
            window = settings.auth_failure_window if settings is not None else 60
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit, window and max_keys must be positive")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.key_name = key_name
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> FailureRateLimiter:
        """A limiter with the deployment's ``auth_failure_limit`` and ``auth_failure_window``."""
        return cls(settings)

    @staticmethod
    def _keys(client_id: str | None, peer: str | None) -> list[tuple[str, str]]:
        keys = []
        if client_id is not None:
            keys.append(("client", client_id))
        if peer:
            keys.append(("peer", _peer_key(peer)))
        return keys

    def check(self, client_id: str | None, peer: str | None, now: float) -> None:
        """Refuse the attempt if the client id or the source address has used up its failures.

        :raises TooManyRequests: with ``retry_after`` = seconds until the oldest counted failure leaves the window.
        """
        retry_after = 0.0
        with self._lock:
            for key in self._keys(client_id, peer):
                stamps = self._failures.get(key)
                if stamps is None:
                    continue
                horizon = now - self.window
                while stamps and stamps[0] <= horizon:
                    stamps.popleft()
                if not stamps:
                    del self._failures[key]
                elif len(stamps) >= self.limit:
                    retry_after = max(retry_after, stamps[0] + self.window - now)
        if retry_after > 0:
            logger.warning("authentication rate limit reached for %s=%r peer=%r", self.key_name, client_id, peer)
            raise TooManyRequests(math.ceil(retry_after))

    def record_failure(self, client_id: str | None, peer: str | None, now: float) -> None:
        """Count one failed authentication against the client id and the source address."""
        with self._lock:
            for key in self._keys(client_id, peer):
                stamps = self._failures.get(key)
                if stamps is None:
                    stamps = self._failures[key] = deque(maxlen=self.limit)
                else:
                    self._failures.move_to_end(key)
                stamps.append(now)
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        """The number of client ids and addresses currently tracked."""
        with self._lock:
            return len(self._failures)
