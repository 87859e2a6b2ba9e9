"""The resource server as one object: configuration, token store, ``/authz-info`` handler, guard and clock, wired
together (the builder of STYLE §3.6 rule 6). Transports (:mod:`resource_server.aiocoap_site`) take a
:class:`ResourceServer` and ask it for everything; it does no I/O itself except the optional state file.

>>> from ace_core import cose
>>> from ace_core.keys import CoseKey
>>> from ace_core.registry import CoseAlgorithm
>>> from resource_server.clock import ManualClock
>>> from resource_server.config import RsConfig
>>> config = RsConfig(audiences=("front-door",), issuer="coap://as/token", as_uri="coap://as/token",
...                   keys=cose.KeySet([CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128)]))
>>> rs = ResourceServer(config, clock=ManualClock(wall=1_700_000_000.0))
>>> rs.check("GET", "/lock", None).status.coap_dotted
'4.01'
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from ace_core.keys import CoseKey
from ace_core.scope import MethodLike
from resource_server.authz_info import AuthzInfo, AuthzInfoResult, RestoreReport
from resource_server.clock import Clock, SystemClock
from resource_server.cnonce import CnonceManager
from resource_server.config import RsConfig
from resource_server.guard import Guard, GuardDecision
from resource_server.token_store import Removal, StoredToken, TokenStore

__all__ = ["ResourceServer"]


class ResourceServer:
    """An ACE resource server (OSCORE profile) without a transport.

    :param config: the configuration.
    :param clock: wall clock and uptime; default: the host's (no wall clock if ``config.has_clock`` is false).
    :param rng: random bytes for nonces (injectable for tests).
    :param on_verified_key: see :class:`~resource_server.authz_info.AuthzInfo` (key-slot promotion).
    """

    def __init__(
        self,
        config: RsConfig,
        *,
        clock: Clock | None = None,
        rng: Callable[[int], bytes] = secrets.token_bytes,
        on_verified_key: Callable[[CoseKey], None] | None = None,
    ) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock(config.has_clock)
        self.store = TokenStore(
            max_tokens=config.max_tokens, path=config.state_file, sequence_chunk=config.sequence_chunk
        )
        self.cnonces = CnonceManager(lifetime=config.cnonce_lifetime, rng=rng) if config.use_cnonce else None
        self.authz_info = AuthzInfo(config, self.store, cnonces=self.cnonces, rng=rng, on_verified_key=on_verified_key)
        self.guard = Guard(config, cnonces=self.cnonces)

    def now(self) -> float | None:
        """Wall-clock time, ``None`` on a clockless lock."""
        return self.clock.now() if self.config.has_clock else None

    def monotonic(self) -> float:
        """Uptime."""
        return self.clock.monotonic()

    def handle_authz_info(
        self, payload: bytes, content_format: int | None, *, peer: str, protected_by: StoredToken | None = None
    ) -> AuthzInfoResult:
        """:meth:`AuthzInfo.handle` at the current time."""
        return self.authz_info.handle(
            payload,
            content_format,
            now=self.now(),
            monotonic=self.monotonic(),
            peer=peer,
            protected_by=protected_by,
        )

    def check(self, method: MethodLike, path: str, token: StoredToken | None) -> GuardDecision:
        """:meth:`Guard.check` at the current time."""
        return self.guard.check(method, path, token, now=self.now(), monotonic=self.monotonic())

    def token_for(self, pop_id: bytes) -> StoredToken | None:
        """The unexpired token held for ``pop_id``; an expired one is removed (its context is then dropped)."""
        return self.store.check(pop_id, now=self.now(), monotonic=self.monotonic())

    def purge(self) -> list[Removal]:
        """Remove expired tokens now (and persist the change)."""
        removals = self.store.purge(now=self.now(), monotonic=self.monotonic())
        if removals:
            self.store.save()
        return removals

    def drop_all_tokens(self) -> list[Removal]:
        """Remove every token held (reason ``dropped``; their security contexts go with them) and persist that.

        For a lock whose keys the AS retired at once (``ostiary as rs revoke``): the AS revoked every token it had
        issued for the lock, whichever key protects it (the shared key or the AS's signing key), so none of them
        may be used any longer.
        """
        removals = [r for r in (self.store.remove(t.pop_id) for t in list(self.store)) if r is not None]
        if removals:
            self.store.save()
        return removals

    def restore(self) -> RestoreReport:
        """Load persisted tokens after a restart (no-op without a state file)."""
        return self.authz_info.restore(now=self.now(), monotonic=self.monotonic())

    def save(self) -> None:
        """Write the state file (no-op without one)."""
        self.store.save()
