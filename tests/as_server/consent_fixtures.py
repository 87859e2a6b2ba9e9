"""An AS with a consent policy, users and groups, for the consent-workflow tests (plain helpers, no fixtures).

Users (passwords hashed with deliberately cheap Argon2id parameters: the tests check the workflow, and one test
in test_users.py checks the default parameters):

* ``frank`` -- manager, named as approver by the ``ask-facility`` rule;
* ``grace`` -- manager, in group ``facility`` (also named by the rule);
* ``mallory`` -- manager, approver of nothing;
* ``alice`` -- user (may not approve anything);
* ``root`` -- admin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ace_core.messages import AccessInformation, TokenRequest
from ace_core.registry import CoseAlgorithm
from as_server.app import AuthorizationServer
from as_server.auth import METHOD_BASIC, ClientCredentials, FailureRateLimiter
from as_server.config import Settings
from as_server.consent import Approver, GrantRuleSource
from as_server.errors import ConsentPending
from as_server.identity import LocalIdentityProvider, PasswordHasher
from as_server.models import Group, SigningKey, User, UserRole
from as_server.storage.base import Storage
from policies.engine import PolicyEngine
from tests.as_server.fixtures_endpoints import (
    AS_SIGNING_KEY,
    ISSUER,
    NOW,
    PEER,
    PHONE_SECRET,
    RS_INTROSPECTION_SECRET,
    Clock,
    aif,
    clients,
    resource_servers,
)

#: NOW (1_800_000_000) is Friday 2027-01-15, 08:00 UTC = 09:00 in Europe/Berlin.
BERLIN = "Europe/Berlin"

CONSENT_POLICY = """
rules:
  - id: battery
    client: phone-app
    audience: lock-aif
    scope: "/battery:GET"
  - id: ask-facility
    effect: consent
    client: phone-app
    audience: lock-aif
    scope: "/lock:GET,PUT"
    approvers: {users: [frank], groups: [facility]}
  - id: ask-sensors
    effect: consent
    client: "*"
    audience: sensor-text
    scope: "read write"
    approvers: {groups: [facility]}
"""

CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {
    "frank": "frank-pw-9q",
    "grace": "grace-pw-4t",
    "mallory": "mallory-pw-1x",
    "alice": "alice-pw-7z",
    "root": "root-pw-3k",
}
ROLES = {
    "frank": UserRole.MANAGER,
    "grace": UserRole.MANAGER,
    "mallory": UserRole.MANAGER,
    "alice": UserRole.USER,
    "root": UserRole.ADMIN,
}


def add_people(storage: Storage, *, hasher: PasswordHasher = CHEAP_HASHER) -> None:
    """The users and the ``facility`` group (grace is in it)."""
    for name, role in ROLES.items():
        storage.add_user(
            User(name=name, password_hash=hasher.hash(PASSWORDS[name]), role=role, created_at=NOW),
            actor="cli:test",
            now=NOW,
        )
    storage.add_group(Group(name="facility", created_at=NOW), actor="cli:test", now=NOW)
    storage.add_member("facility", "grace", actor="cli:test", now=NOW)


@dataclass
class ConsentWorld:
    """An :class:`AuthorizationServer` on ``storage`` with the consent policy, a settable clock and people."""

    server: AuthorizationServer
    clock: Clock
    refusals: list[ConsentPending] = field(default_factory=list)

    @property
    def storage(self) -> Storage:
        return self.server.storage

    @classmethod
    def create(cls, storage: Storage, *, policy: str = CONSENT_POLICY, **settings: Any) -> ConsentWorld:
        for rs in resource_servers():
            storage.add_resource_server(rs)
        for client in clients():
            storage.add_client(client)
        storage.add_signing_key(
            SigningKey(kid=AS_SIGNING_KEY.kid or b"", alg=CoseAlgorithm.EDDSA, key=AS_SIGNING_KEY, created_at=0)
        )
        add_people(storage)
        the_settings = Settings(home=Path("/nonexistent/ostiary-test"), issuer=ISSUER, **settings)
        engine = PolicyEngine.from_yaml(policy, source="consent-policy", sources=[GrantRuleSource(storage)])
        clock = Clock()
        server = AuthorizationServer(
            settings=the_settings,
            storage=storage,
            policy=engine,
            limiter=FailureRateLimiter(the_settings),
            clock=clock,
            identity=LocalIdentityProvider(storage, CHEAP_HASHER),
        )
        return cls(server, clock)

    @property
    def now(self) -> int:
        return int(self.clock.now)

    def token(
        self, scope: str = "/lock:PUT", *, audience: str = "lock-aif", client_id: str = "phone-app", **fields: Any
    ) -> AccessInformation:
        value: str | bytes = aif(scope) if scope.startswith("/") else scope
        request = TokenRequest(audience=audience, scope=value, **fields)
        secret = PHONE_SECRET if client_id == "phone-app" else f"{client_id}-secret"
        creds = ClientCredentials(client_id, secret.encode(), METHOD_BASIC)
        return self.server.token_endpoint.handle(request, credentials=creds, peer=PEER)

    def pending(self, scope: str = "/lock:PUT", **kwargs: Any) -> str:
        """Ask for ``scope``, expect the consent refusal, return the access request id."""
        with pytest.raises(ConsentPending) as info:
            self.token(scope, **kwargs)
        self.refusals.append(info.value)
        return info.value.request_id

    def approver(self, name: str) -> Approver:
        return self.server.consent.authenticate(name, PASSWORDS[name], peer=PEER, now=self.now)

    def credentials(self, name: str, password: str | None = None) -> ClientCredentials:
        return ClientCredentials(name, (password or PASSWORDS[name]).encode(), METHOD_BASIC)

    def introspect(self, token: bytes, caller: str = "lock-aif") -> Any:
        from ace_core.messages import IntrospectionRequest

        creds = ClientCredentials(caller, RS_INTROSPECTION_SECRET.encode(), METHOD_BASIC)
        return self.server.introspection_endpoint.handle(
            IntrospectionRequest(token=token), credentials=creds, peer=PEER
        )

    def close(self) -> None:
        self.server.audit_log.close()
