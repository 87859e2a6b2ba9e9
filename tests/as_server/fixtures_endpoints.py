"""A small AS deployment for endpoint tests: memory storage, allow-list policy, fixed clock (no pytest fixtures,
so that test modules import plain helpers and no conftest is shared with the storage tests)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ace_core import cose, cwt
from ace_core.keys import CoseKey
from ace_core.messages import IntrospectionRequest, TokenRequest
from ace_core.registry import AceProfile, CoseAlgorithm, GrantType
from ace_core.scope import AifScope
from as_server.auth import METHOD_BASIC, ClientCredentials, FailureRateLimiter
from as_server.config import Settings
from as_server.endpoints.introspect import IntrospectionEndpoint
from as_server.endpoints.token import TokenEndpoint
from as_server.models import Client, PopKeyType, ResourceServer, ScopeFormat, SigningKey, TokenForm
from as_server.sealing import hash_secret
from as_server.storage.base import Storage
from as_server.storage.memory import MemoryStorage
from policies.base import AccessPolicy
from policies.builtin.allow_list import AllowList

NOW = 1_800_000_000
ISSUER = "coaps://as.example/token"
PEER = "192.0.2.10"

#: Distinctive secrets, so a test can assert that they never show up in logs.
PHONE_SECRET = "phone-app-secret-Zq8xW3vY"
RPK_SECRET = "rpk-client-secret-Jm4kP2"
RS_INTROSPECTION_SECRET = "lock-introspection-secret-Hd7rT1"
SENSOR_INTROSPECTION_SECRET = "sensor-introspection-secret-Lp0sQ9"

# Keys are generated once per test session: generation is the slow part, and tests only read them.
LOCK_SHARED_KEY = CoseKey.symmetric(bytes(range(16)), kid=b"lock-aif-key")
NESTED_SHARED_KEY = CoseKey.symmetric(bytes(range(32, 64)), kid=b"lock-nested-key")
MAC_SHARED_KEY = CoseKey.symmetric(bytes(range(64, 96)), kid=b"lock-mac-key")
RS_PUBLIC_KEY = CoseKey.generate(CoseAlgorithm.EDDSA, kid=b"lock-rs-rpk")
SENSOR_PUBLIC_KEY = CoseKey.generate(CoseAlgorithm.ES256, kid=b"sensor-rs-rpk")
AS_SIGNING_KEY = CoseKey.generate(CoseAlgorithm.EDDSA, kid=b"as-sign-1")
CLIENT_ED25519 = CoseKey.generate(CoseAlgorithm.EDDSA)  # phone-app's registered public key
CLIENT_P256 = CoseKey.generate(CoseAlgorithm.ES256)  # registered by no client unless a test overrides it
RPK_CLIENT_KEY = CoseKey.generate(CoseAlgorithm.EDDSA, kid=b"rpk-client-key")

LOCK_POLICY = """
rules:
  - client: phone-app
    audience: "lock-*"
    scope: "/lock:GET,PUT /battery:GET /config:GET"
    max_lifetime: 1800
  - client: "*"
    audience: sensor-text
    scope: "read write"
  - client: rpk-client
    audience: lock-aif
    scope: "/lock:GET"
  - client: dtls-only
    audience: "lock-*"
    scope: "/lock:GET"
"""

ALL_AUDIENCES = frozenset({"lock-aif", "lock-nested", "lock-mac", "sensor-text", "lock-oscore-only", "lock-off"})


def aif(spec: str) -> bytes:
    """The ``application/aif+cbor`` bytes of an AIF spec such as ``"/lock:GET,PUT"``."""
    return AifScope.parse_spec(spec).to_cbor()


def resource_servers() -> list[ResourceServer]:
    """The registered audiences.

    Raw-public-key clients need the RS's public key in ``rs_cnf`` (RFC 9202 §3.2.1): ``lock-aif``, ``lock-mac`` and
    ``sensor-text`` have one; ``lock-nested`` (DTLS, but no public key) and ``lock-oscore-only`` do not.
    """
    return [
        ResourceServer(
            audience="lock-aif",
            shared_key=LOCK_SHARED_KEY,
            public_key=RS_PUBLIC_KEY.public(),
            profiles=frozenset({AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS}),
            scope_format=ScopeFormat.AIF,
            resources="/lock:GET,PUT,POST /battery:GET",  # no /config: the policy's /config:GET is not served
            token_form=TokenForm.ENCRYPT0,
            max_lifetime=7200,
            introspection_secret_hash=hash_secret(RS_INTROSPECTION_SECRET),
        ),
        ResourceServer(
            audience="lock-nested",
            shared_key=NESTED_SHARED_KEY,
            profiles=frozenset({AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS}),
            token_form=TokenForm.SIGN1_ENCRYPT0,
        ),
        ResourceServer(
            audience="lock-mac",
            shared_key=MAC_SHARED_KEY,
            public_key=RS_PUBLIC_KEY.public(),
            profiles=frozenset({AceProfile.COAP_DTLS}),
            token_form=TokenForm.MAC0,
        ),
        ResourceServer(
            audience="sensor-text",
            profiles=frozenset({AceProfile.COAP_DTLS, AceProfile.COAP_OSCORE}),
            scope_format=ScopeFormat.TEXT,
            public_key=SENSOR_PUBLIC_KEY.public(),
            token_form=TokenForm.SIGN1,
            max_lifetime=600,
            introspection_secret_hash=hash_secret(SENSOR_INTROSPECTION_SECRET),
        ),
        ResourceServer(
            audience="lock-oscore-only",
            shared_key=LOCK_SHARED_KEY,
            profiles=frozenset({AceProfile.COAP_OSCORE}),
        ),
        ResourceServer(audience="lock-off", shared_key=LOCK_SHARED_KEY, enabled=False),
    ]


def clients() -> list[Client]:
    """The registered clients. Only a client's registered ``public_key`` can be bound from ``req_cnf`` (RFC 9202
    §3.2.1): ``phone-app`` has :data:`CLIENT_ED25519`, ``rpk-client`` has :data:`RPK_CLIENT_KEY`."""
    every_key = frozenset({PopKeyType.SYMMETRIC, PopKeyType.ED25519, PopKeyType.P256})
    both = frozenset({AceProfile.COAP_OSCORE, AceProfile.COAP_DTLS})
    return [
        Client(
            client_id="phone-app",
            secret_hash=hash_secret(PHONE_SECRET),
            audiences=ALL_AUDIENCES,
            profiles=both,
            pop_key_types=every_key,
            default_audience="lock-aif",
            default_scope=aif("/lock:GET"),
            public_key=CLIENT_ED25519.public(),
        ),
        Client(
            client_id="rpk-client",
            secret_hash=hash_secret(RPK_SECRET),
            audiences=frozenset({"lock-aif", "lock-oscore-only"}),
            profiles=both,
            pop_key_types=frozenset({PopKeyType.ED25519}),
            public_key=RPK_CLIENT_KEY.public(),
        ),
        Client(
            client_id="dtls-only",
            secret_hash=hash_secret("dtls-only-secret"),
            audiences=frozenset({"lock-aif", "lock-oscore-only"}),
            profiles=frozenset({AceProfile.COAP_DTLS}),
            pop_key_types=frozenset({PopKeyType.SYMMETRIC}),
        ),
        Client(
            client_id="no-defaults",
            secret_hash=hash_secret("no-defaults-secret"),
            audiences=frozenset({"lock-aif"}),
        ),
        Client(
            client_id="code-only",
            secret_hash=hash_secret("code-only-secret"),
            grant_types=frozenset({GrantType.AUTHORIZATION_CODE}),
            audiences=frozenset({"lock-aif"}),
        ),
        Client(
            client_id="switched-off",
            secret_hash=hash_secret("switched-off-secret"),
            audiences=frozenset({"lock-aif"}),
            enabled=False,
        ),
    ]


class Clock:
    """A settable clock for the endpoints (they read it once per request)."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    """One AS: storage, policy, limiter, clock and both endpoints, wired like :class:`as_server.app`."""

    settings: Settings
    storage: Storage
    policy: AccessPolicy
    limiter: FailureRateLimiter
    clock: Clock
    random_bytes: Callable[[int], bytes] = secrets.token_bytes
    token: TokenEndpoint = field(init=False)
    introspection: IntrospectionEndpoint = field(init=False)

    def __post_init__(self) -> None:
        self.token = TokenEndpoint(
            settings=self.settings,
            storage=self.storage,
            policy=self.policy,
            limiter=self.limiter,
            clock=self.clock,
            random_bytes=lambda n: self.random_bytes(n),  # late-bound: tests swap the source
        )
        self.introspection = IntrospectionEndpoint(
            settings=self.settings, storage=self.storage, limiter=self.limiter, clock=self.clock
        )

    @classmethod
    def create(
        cls,
        *,
        policy: AccessPolicy | None = None,
        settings: dict[str, Any] | None = None,
        rs_overrides: dict[str, dict[str, Any]] | None = None,
        client_overrides: dict[str, dict[str, Any]] | None = None,
        signing_key: bool = True,
        storage: Storage | None = None,
    ) -> World:
        """A fresh deployment; ``*_overrides`` replace fields of the named records.

        :param storage: an empty storage to fill (default: a new :class:`MemoryStorage`).
        """
        base = Settings(home=Path("/nonexistent/ostiary-test"), issuer=ISSUER, token_lifetime=3600)
        the_settings = replace(base, **(settings or {}))
        storage = storage if storage is not None else MemoryStorage()
        for rs in resource_servers():
            storage.add_resource_server(replace(rs, **(rs_overrides or {}).get(rs.audience, {})))
        for client in clients():
            storage.add_client(replace(client, **(client_overrides or {}).get(client.client_id, {})))
        if signing_key:
            storage.add_signing_key(
                SigningKey(kid=AS_SIGNING_KEY.kid or b"", alg=CoseAlgorithm.EDDSA, key=AS_SIGNING_KEY, created_at=0)
            )
        return cls(
            settings=the_settings,
            storage=storage,
            policy=policy if policy is not None else AllowList.from_yaml(LOCK_POLICY, source="lock-policy"),
            limiter=FailureRateLimiter(the_settings),
            clock=Clock(),
        )

    def request_token(
        self,
        request: TokenRequest | None = None,
        *,
        client_id: str = "phone-app",
        secret: str = PHONE_SECRET,
        peer: str = PEER,
        **fields: Any,
    ) -> Any:
        """Call the token endpoint with Basic credentials; ``fields`` build the request if none is given."""
        req = request if request is not None else TokenRequest(**fields)
        creds = ClientCredentials(client_id, secret.encode(), METHOD_BASIC)
        return self.token.handle(req, credentials=creds, peer=peer)

    def introspect(
        self, token: bytes, *, caller: str = "lock-aif", secret: str = RS_INTROSPECTION_SECRET, peer: str = PEER
    ) -> Any:
        """Call the introspection endpoint as ``caller``."""
        creds = ClientCredentials(caller, secret.encode(), METHOD_BASIC)
        return self.introspection.handle(IntrospectionRequest(token=token), credentials=creds, peer=peer)


def rs_keys(*keys: CoseKey) -> cose.KeySet:
    """The key set an RS would verify with."""
    return cose.KeySet(list(keys))


def open_token(token: bytes, audience: str = "lock-aif", key: CoseKey = LOCK_SHARED_KEY, now: int = NOW) -> cwt.Claims:
    """Verify and decrypt an issued token as the RS does (never ``no_verify``)."""
    return cwt.verify(token, rs_keys(key, AS_SIGNING_KEY.public()), now=now, audience=audience, issuer=ISSUER)
