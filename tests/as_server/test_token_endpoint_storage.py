"""The token endpoint on every storage backend: what it relies on the storage for.

* Generated PoP key ids (RFC 9203 §3.2.1 OSCORE ``id``, RFC 9202 §3.3.1 PSK ``kid``) are new for the client and
  audience because the storage refuses a second one (a unique index in SQL); the endpoint then draws fresh
  material. A collision is forced here through the endpoint's random source.
* Tokens that re-bind a key by ``kid`` (RFC 9203 §3.1, RFC 9202 §4) or bind the client's registered key share the
  ``pop_kid`` of earlier tokens, which the rule must not refuse.
* Registry changes reach the endpoint: through the same storage at once; from another process (another storage
  object on the database) within :data:`~as_server.storage.registry_cache.REGISTRY_MAX_AGE`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest

from ace_core import cwt
from ace_core.errors import InvalidClient, InvalidRequest, TokenRejected
from ace_core.keys import CoseKey
from ace_core.messages import TokenRequest
from ace_core.pop import Confirmation
from ace_core.registry import AceProfile, ConfirmationMethod, CoseAlgorithm, GrantType, OscoreInputMaterial
from as_server.auth import METHOD_BASIC, ClientCredentials
from as_server.endpoints.token import CTI_RANDOM_LENGTH
from as_server.models import SigningKey
from as_server.sealing import MasterKey
from as_server.storage.base import DuplicateError, Storage
from as_server.storage.registry_cache import REGISTRY_MAX_AGE
from as_server.storage.sqlalchemy import SqlStorage, open_storage
from as_server.storage.sqlalchemy.engine import make_engine
from as_server.tokens import token_hash
from tests.as_server.fixtures_endpoints import (
    AS_SIGNING_KEY,
    CLIENT_ED25519,
    NESTED_SHARED_KEY,
    NOW,
    PEER,
    PHONE_SECRET,
    World,
    aif,
    rs_keys,
)

OSC = int(ConfirmationMethod.OSC)
COSE_KEY = int(ConfirmationMethod.COSE_KEY)
KID = int(ConfirmationMethod.KID)
#: Slack on top of the cache bound for the one test that waits for it in real time (seconds).
REAL_TIME_MARGIN = 0.05


class Draws:
    """A random source that replays scripted draws first, then falls back to ``secrets``; it counts calls."""

    def __init__(self) -> None:
        self.script: list[bytes] = []
        self.calls = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        if self.script:
            draw = self.script.pop(0)
            assert len(draw) == n, (len(draw), n)
            return draw
        return secrets.token_bytes(n)


@pytest.fixture
def draws() -> Draws:
    return Draws()


@pytest.fixture
def world(storage: Storage, draws: Draws) -> World:
    """The endpoint fixtures' deployment on each backend (memory, SQLite, PostgreSQL)."""
    created = World.create(storage=storage)
    created.random_bytes = draws
    return created


def generated_id(response: object, profile: AceProfile) -> bytes:
    cnf = response.cnf  # type: ignore[attr-defined]
    kid = cnf[OSC][OscoreInputMaterial.ID] if profile == AceProfile.COAP_OSCORE else cnf[COSE_KEY][2]
    assert isinstance(kid, bytes)
    return kid


@pytest.mark.parametrize(
    ("profile", "material_length", "id_at"),
    [(AceProfile.COAP_OSCORE, 6 + 16, slice(0, 6)), (AceProfile.COAP_DTLS, 16 + 8, slice(16, 24))],
    ids=["oscore-id", "psk-kid"],
)
def test_a_generated_pop_key_id_that_is_taken_is_drawn_again(
    world: World, draws: Draws, profile: AceProfile, material_length: int, id_at: slice
) -> None:
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), ace_profile=profile)
    taken = generated_id(first, profile)
    # The next draw: the cti's random bytes, then material whose id is the one just issued.
    colliding = bytearray(secrets.token_bytes(material_length))
    colliding[id_at] = taken
    draws.script = [secrets.token_bytes(CTI_RANDOM_LENGTH) + bytes(colliding)]
    draws.calls = 0
    second = world.request_token(audience="lock-aif", scope=aif("/lock:GET"), ace_profile=profile)
    assert draws.calls == 2  # the colliding attempt, refused by the storage, and a fresh one
    fresh = generated_id(second, profile)
    assert fresh != taken
    record = world.storage.get_by_hash(token_hash(second.access_token))
    assert record is not None and record.pop_kid == fresh and record.pop_key_generated
    assert world.storage.count() == 2


def test_tokens_rebound_by_kid_share_the_generated_id(world: World, draws: Draws) -> None:
    """RFC 9203 §3.1: updates of access rights name the key of the first token; that is no collision."""
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    material_id = first.cnf[OSC][OscoreInputMaterial.ID]
    updates = [
        world.request_token(audience="lock-aif", scope=aif(scope), req_cnf={KID: material_id})
        for scope in ("/lock:GET,PUT", "/battery:GET", "/lock:GET")
    ]
    records = [world.storage.get_by_hash(token_hash(u.access_token)) for u in updates]
    assert all(r is not None and r.pop_kid == material_id and not r.pop_key_generated for r in records)
    assert world.storage.find_by_pop_kid("phone-app", "lock-aif", material_id) == records[-1]
    # The id stays taken for generated keys: a new draw of it is refused and replaced.
    draws.script = [secrets.token_bytes(CTI_RANDOM_LENGTH) + material_id + secrets.token_bytes(16)]
    draws.calls = 0
    again = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    assert draws.calls == 2 and again.cnf[OSC][OscoreInputMaterial.ID] != material_id


def test_tokens_bound_to_the_registered_key_share_its_kid(world: World) -> None:
    """RFC 9202 §3.2.1: every token of an RPK client carries the same key."""
    req_cnf = Confirmation(cose_key=CLIENT_ED25519.public()).to_cbor_map()
    responses = [world.request_token(audience="lock-aif", scope=aif("/lock:GET"), req_cnf=req_cnf) for _ in range(3)]
    records = [world.storage.get_by_hash(token_hash(r.access_token)) for r in responses]
    assert CLIENT_ED25519.kid is not None
    assert all(r is not None and r.pop_kid == CLIENT_ED25519.kid and not r.pop_key_generated for r in records)
    assert world.storage.count() == 3


def test_a_random_source_that_only_collides_is_an_internal_error(world: World, draws: Draws) -> None:
    world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    stuck = secrets.token_bytes(CTI_RANDOM_LENGTH + 6 + 16)
    world.random_bytes = lambda n: stuck
    world.request_token(audience="lock-aif", scope=aif("/lock:GET"))  # the first use of these bytes is fine
    with pytest.raises(RuntimeError, match="unused identifiers"):
        world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    assert world.storage.count() == 2


# --- registry changes across processes (SQL) ---------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def shared_database(sql_url: str, master_key: MasterKey) -> Iterator[Callable[..., SqlStorage]]:
    """``connect(monotonic=...)``: another storage object on one database, as each AS process has; all closed at
    the end. The deployment is created through the first."""
    opened: list[SqlStorage] = []

    def connect(monotonic: Callable[[], float] = time.monotonic) -> SqlStorage:
        if not opened:
            open_storage(sql_url, master_key, create=True).close()
        storage = SqlStorage(make_engine(sql_url), master_key, monotonic=monotonic)
        opened.append(storage)
        return storage

    yield connect
    for storage in opened:
        storage.close()


def test_a_client_disabled_by_another_process_is_refused_within_the_bound(
    shared_database: Callable[..., SqlStorage],
) -> None:
    clock = FakeMonotonic()
    server = World.create(storage=shared_database(clock))
    admin = shared_database()  # `ostiary as client disable phone-app`, in its own process
    server.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    phone = admin.get_client("phone-app")
    assert phone is not None
    admin.update_client(replace(phone, enabled=False))
    clock.now += REGISTRY_MAX_AGE
    with pytest.raises(InvalidClient):
        server.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    # Audiences too (RFC 9200 §5.8.1: a disabled audience is invalid_request).
    admin.update_client(phone)
    lock = admin.get_resource_server("lock-aif")
    assert lock is not None
    admin.update_resource_server(replace(lock, enabled=False))
    clock.now += REGISTRY_MAX_AGE
    with pytest.raises(InvalidRequest):
        server.request_token(audience="lock-aif", scope=aif("/lock:GET"))


def test_a_client_disabled_through_the_same_storage_is_refused_at_once(
    shared_database: Callable[..., SqlStorage],
) -> None:
    server = World.create(storage=shared_database(FakeMonotonic()))  # its clock never moves
    server.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    phone = server.storage.get_client("phone-app")
    assert phone is not None
    server.storage.update_client(replace(phone, enabled=False))
    with pytest.raises(InvalidClient):
        server.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    server.storage.update_client(phone)
    server.request_token(audience="lock-aif", scope=aif("/lock:GET"))


def test_a_signing_key_rotated_by_another_process_signs_within_the_bound(
    shared_database: Callable[..., SqlStorage],
) -> None:
    """``ostiary as keys rotate`` in another process: the new key signs once the bound has passed."""
    clock = FakeMonotonic()
    server = World.create(storage=shared_database(clock))
    admin = shared_database()
    assert AS_SIGNING_KEY.kid is not None
    new_key = CoseKey.generate(CoseAlgorithm.EDDSA, kid=b"as-sign-2")
    scope = aif("/lock:GET")

    def signed_with(response: object, key: CoseKey) -> bool:
        token = response.access_token  # type: ignore[attr-defined]
        try:
            cwt.verify(token, rs_keys(NESTED_SHARED_KEY, key.public()), now=NOW, audience="lock-nested")
        except TokenRejected:
            return False
        return True

    assert signed_with(server.request_token(audience="lock-nested", scope=scope), AS_SIGNING_KEY)  # sign1+encrypt0
    admin.add_signing_key(SigningKey(kid=b"as-sign-2", alg=CoseAlgorithm.EDDSA, key=new_key, created_at=1))
    admin.retire(AS_SIGNING_KEY.kid, at=2, retire_after=3)
    clock.now += REGISTRY_MAX_AGE
    rotated = server.request_token(audience="lock-nested", scope=scope)
    assert signed_with(rotated, new_key) and not signed_with(rotated, AS_SIGNING_KEY)


def test_the_default_bound_in_real_time(shared_database: Callable[..., SqlStorage]) -> None:
    """As deployed: the monotonic clock and :data:`REGISTRY_MAX_AGE`."""
    server = World.create(storage=shared_database())
    admin = shared_database()
    server.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    phone = admin.get_client("phone-app")
    assert phone is not None
    admin.update_client(replace(phone, enabled=False))
    time.sleep(REGISTRY_MAX_AGE + REAL_TIME_MARGIN)
    with pytest.raises(InvalidClient):
        server.request_token(audience="lock-aif", scope=aif("/lock:GET"))


# --- handle_queued: the event-loop transports' path (issue #3) ---------------------------------------------------

QUEUED_WAIT = 10.0  # bound on a commit future; reached only when a test fails


def queued_request(world: World, *, secret: str = PHONE_SECRET, **fields: object) -> object:
    """``handle_queued`` as the CoAP transport calls it (credentials in the request are equivalent)."""
    request = TokenRequest(audience="lock-aif", scope=aif("/lock:GET"), **fields)  # type: ignore[arg-type]
    creds = ClientCredentials("phone-app", secret.encode(), METHOD_BASIC)
    return world.token.handle_queued(request, credentials=creds, peer=PEER)


def test_a_queued_token_is_recorded_by_its_commit_and_announced_by_the_caller(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="as_server.endpoints.token")
    queued = queued_request(world)
    assert queued is not None
    info, record = queued  # type: ignore[misc]
    assert record.commit.result(timeout=QUEUED_WAIT) is None
    stored = world.storage.get_by_hash(token_hash(info.access_token))
    assert stored is not None and stored.audience == "lock-aif" and stored.pop_key_generated
    assert "issued token" not in caplog.text  # the caller logs it once the token leaves
    record.announce()
    assert f"issued token cti={stored.cti.hex()}" in caplog.text


def test_a_queued_token_whose_cti_is_taken_fails_its_commit_and_handle_draws_again(world: World, draws: Draws) -> None:
    first = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))
    taken = world.storage.get_by_hash(token_hash(first.access_token))
    assert taken is not None
    # The same second (the fixed clock), the same counter value and the same random bytes: the same cti.
    world.token._cti_counter = itertools.count(int.from_bytes(taken.cti[4:6], "big"))  # noqa: SLF001 - a seam
    draws.script = [taken.cti[6:] + secrets.token_bytes(6 + 16)]
    queued = queued_request(world)
    assert queued is not None
    _, record = queued  # type: ignore[misc]
    with pytest.raises(DuplicateError):
        record.commit.result(timeout=QUEUED_WAIT)
    assert world.storage.count() == 1  # nothing of the refused row
    again = world.request_token(audience="lock-aif", scope=aif("/lock:GET"))  # what the transport does next
    assert world.storage.get_by_hash(token_hash(again.access_token)) is not None
    assert world.storage.count() == 2


def test_queued_issuance_declines_an_exi_resource_server_before_counting(storage: Storage) -> None:
    """RFC 9200 §5.10.3: the sequence number is a durable write; that request goes to a thread, untouched."""
    world = World.create(storage=storage, rs_overrides={"lock-aif": {"has_clock": False}})
    assert queued_request(world) is None
    assert storage.count() == 0
    assert storage.next_exi_sequence("lock-aif") == 1  # the counter was not moved


def test_queued_issuance_declines_other_grants_without_calling_them(world: World) -> None:
    calls: list[object] = []

    class Handler:
        def handle(self, *args: object, **kwargs: object) -> object:
            calls.append(args)
            raise AssertionError("not to be called")

    world.token.register_grant(GrantType.AUTHORIZATION_CODE, Handler())  # type: ignore[arg-type]
    assert queued_request(world, grant_type=GrantType.AUTHORIZATION_CODE) is None
    assert calls == [] and world.storage.count() == 0


def test_queued_issuance_refuses_as_handle_does(world: World) -> None:
    with pytest.raises(InvalidClient):
        queued_request(world, secret="not-the-secret")
    assert world.storage.count() == 0
