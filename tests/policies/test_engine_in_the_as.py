"""The engine behind the token endpoint: the AS loads it, honours not_after, and never issues for "consent required"."""

from __future__ import annotations

from pathlib import Path

import pytest

from ace_core.errors import InvalidScope
from as_server.app import AuthorizationServer
from as_server.config import Settings
from as_server.storage.memory import MemoryStorage
from policies.engine import PolicyEngine
from tests.as_server.fixtures_endpoints import LOCK_POLICY, NOW, World, aif, open_token

# NOW (1_800_000_000) is Friday 2027-01-15 09:00 in Europe/Berlin (08:00 UTC).
WINDOWED = """
rules:
  - id: friday-morning
    client: phone-app
    audience: lock-aif
    scope: "/lock:GET,PUT"
    timezone: Europe/Berlin
    windows: ["Fri 08:00-09:05"]
  - id: ask-for-battery
    effect: consent
    client: phone-app
    audience: lock-aif
    scope: "/battery:GET"
    approvers: {groups: [facility]}
"""


def test_the_as_loads_its_policy_file_with_the_engine(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(LOCK_POLICY)
    server = AuthorizationServer.from_settings(Settings(home=tmp_path), storage=MemoryStorage())
    try:
        assert isinstance(server.policy, PolicyEngine) and len(server.policy.rules) == 4
    finally:
        server.close()


def test_a_missing_policy_file_refuses_everything(tmp_path: Path) -> None:
    server = AuthorizationServer.from_settings(Settings(home=tmp_path), storage=MemoryStorage())
    try:
        assert isinstance(server.policy, PolicyEngine) and server.policy.rules == ()
    finally:
        server.close()


def test_the_old_allow_list_policy_issues_the_same_tokens() -> None:
    world = World.create(policy=PolicyEngine.from_yaml(LOCK_POLICY))
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET,DELETE /door:GET"))
    assert response.scope == aif("/lock:GET") and response.expires_in == 1800  # max_lifetime of the rule
    assert open_token(response.access_token).scope == aif("/lock:GET")


def test_a_window_ends_the_token() -> None:
    world = World.create(policy=PolicyEngine.from_yaml(WINDOWED))
    response = world.request_token(audience="lock-aif", scope=aif("/lock:PUT"))
    assert response.expires_in == 5 * 60  # 09:00 -> 09:05 local
    assert open_token(response.access_token).exp == NOW + 5 * 60


def test_consent_required_issues_nothing() -> None:
    world = World.create(policy=PolicyEngine.from_yaml(WINDOWED))
    with pytest.raises(InvalidScope):
        world.request_token(audience="lock-aif", scope=aif("/battery:GET"))
    # permitted + consent: only the permitted part is issued
    response = world.request_token(audience="lock-aif", scope=aif("/lock:GET /battery:GET"))
    assert response.scope == aif("/lock:GET")


def test_outside_the_window_nothing_is_issued() -> None:
    world = World.create(policy=PolicyEngine.from_yaml(WINDOWED))
    world.clock.now = NOW + 5 * 60
    with pytest.raises(InvalidScope):
        world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
