"""The in-memory storage backend: the Storage Protocol, ordering rules, sealing with a master key, threads."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from ace_core.keys import CoseKey
from ace_core.registry import AceProfile, CoseAlgorithm
from as_server.models import Client, IssuedToken, ResourceServer, SigningKey, TokenStatus
from as_server.sealing import MasterKey, hash_secret
from as_server.storage.base import DuplicateError, NotFoundError, Storage
from as_server.storage.memory import MemoryStorage


@pytest.fixture(params=["plain", "sealed"])
def storage(request: pytest.FixtureRequest) -> MemoryStorage:
    return MemoryStorage(MasterKey.generate()[0] if request.param == "sealed" else None)


def token(
    cti: bytes, *, iat: int = 100, client_id: str = "c", audience: str = "rs", kid: bytes | None = None
) -> IssuedToken:
    return IssuedToken(
        cti=cti,
        client_id=client_id,
        audience=audience,
        scope="read",
        profile=AceProfile.COAP_OSCORE,
        iat=iat,
        exp=iat + 60,
        token_hash=b"\x01" + cti.ljust(32, b"\x00"),
        cnf=b"\xa1\x04\xa2\x00\x41\x01\x02\x50" + bytes(16),
        pop_kid=kid,
    )


def test_implements_the_protocol(storage: MemoryStorage) -> None:
    typed: Storage = storage  # mypy checks the structural match
    assert typed.count() == 0


def test_clients(storage: MemoryStorage) -> None:
    b = Client(client_id="b", secret_hash=hash_secret("s"))
    a = Client(client_id="a", secret_hash=hash_secret("s"))
    storage.add_client(b)
    storage.add_client(a)
    with pytest.raises(DuplicateError):
        storage.add_client(a)
    assert storage.get_client("a") == a and storage.get_client("z") is None
    assert [c.client_id for c in storage.list_clients()] == ["a", "b"]
    storage.update_client(dataclasses.replace(a, enabled=False))
    assert storage.get_client("a") == dataclasses.replace(a, enabled=False)
    with pytest.raises(NotFoundError):
        storage.update_client(Client(client_id="z", secret_hash=b""))


def test_resource_servers_keep_their_shared_key(storage: MemoryStorage) -> None:
    key = CoseKey.symmetric(bytes(range(16)), kid=b"k")
    rs = ResourceServer(audience="rs", shared_key=key, public_key=CoseKey.generate(CoseAlgorithm.EDDSA).public())
    storage.add_resource_server(rs)
    storage.add_resource_server(ResourceServer(audience="other"))
    with pytest.raises(DuplicateError):
        storage.add_resource_server(rs)
    loaded = storage.get_resource_server("rs")
    assert loaded == rs and loaded is not None and loaded.shared_key is not None
    assert loaded.shared_key.secret() == key.secret()
    assert [r.audience for r in storage.list_resource_servers()] == ["other", "rs"]
    storage.update_resource_server(dataclasses.replace(rs, max_lifetime=5))
    assert storage.get_resource_server("rs") == dataclasses.replace(rs, max_lifetime=5)
    with pytest.raises(NotFoundError):
        storage.update_resource_server(ResourceServer(audience="nope"))
    assert storage.get_resource_server("nope") is None


def test_sealed_storage_keeps_no_secret_in_the_clear() -> None:
    storage = MemoryStorage(MasterKey.generate()[0])
    secret = bytes(range(100, 116))
    storage.add_resource_server(ResourceServer(audience="rs", shared_key=CoseKey.symmetric(secret)))
    storage.record(token(b"t1"))
    kept = [repr(vars(storage)), repr(storage._resource_servers), repr(storage._tokens)]
    assert all(secret.hex() not in text and repr(secret) not in text for text in kept)
    assert all((bytes(16)).hex() not in text for text in kept[2:])
    assert storage.get_by_cti(b"t1") == token(b"t1")


def test_tokens(storage: MemoryStorage) -> None:
    first, second = token(b"t1", iat=100), token(b"t2", iat=200, audience="other")
    storage.record(first)
    storage.record(second)
    with pytest.raises(DuplicateError):
        storage.record(first)
    with pytest.raises(DuplicateError):
        storage.record(dataclasses.replace(token(b"t3"), token_hash=first.token_hash))
    assert storage.count() == 2
    assert storage.get_by_cti(b"t1") == first and storage.get_by_cti(b"zz") is None
    assert storage.get_by_hash(second.token_hash) == second and storage.get_by_hash(b"\x01") is None
    assert storage.list_tokens() == [second, first]
    assert storage.list_tokens(audience="rs") == [first]
    assert storage.list_tokens(client_id="nobody") == []
    assert storage.list_tokens(limit=1) == [second]
    assert storage.revoke(b"t1") and not storage.revoke(b"zz")
    assert storage.get_by_cti(b"t1") == dataclasses.replace(first, status=TokenStatus.REVOKED)
    assert storage.get_by_hash(first.token_hash) == dataclasses.replace(first, status=TokenStatus.REVOKED)


def test_find_by_pop_kid_returns_the_newest(storage: MemoryStorage) -> None:
    storage.record(token(b"old", iat=100, kid=b"k"))
    storage.record(token(b"new", iat=200, kid=b"k"))
    storage.record(token(b"k2-newer", iat=200, kid=b"k2"))
    storage.record(token(b"k2-older-recorded-later", iat=50, kid=b"k2"))  # iat decides, not recording order
    storage.record(token(b"other-client", iat=300, kid=b"k", client_id="d"))
    found = storage.find_by_pop_kid("c", "rs", b"k")
    assert found is not None and found.cti == b"new"
    found = storage.find_by_pop_kid("c", "rs", b"k2")
    assert found is not None and found.cti == b"k2-newer"
    assert storage.find_by_pop_kid("c", "other", b"k") is None
    assert storage.find_by_pop_kid("c", "rs", b"none") is None
    storage.record(token(b"tie", iat=200, kid=b"k"))  # same iat: recording order decides
    found = storage.find_by_pop_kid("c", "rs", b"k")
    assert found is not None and found.cti == b"tie"


def test_signing_keys(storage: MemoryStorage) -> None:
    assert storage.signing_key() is None
    k1 = SigningKey(kid=b"1", alg=CoseAlgorithm.EDDSA, key=CoseKey.generate(CoseAlgorithm.EDDSA), created_at=10)
    k2 = SigningKey(kid=b"2", alg=CoseAlgorithm.ES256, key=CoseKey.generate(CoseAlgorithm.ES256), created_at=20)
    storage.add_signing_key(k1)
    storage.add_signing_key(k2)
    with pytest.raises(DuplicateError):
        storage.add_signing_key(k1)
    newest = storage.signing_key()
    assert newest == k2 and newest is not None and newest.key.has_private and newest.key.d == k2.key.d
    storage.retire(b"2", at=30, retire_after=100)
    assert storage.signing_key() == k1
    assert [k.kid for k in storage.verification_keys(99)] == [b"2", b"1"]
    assert [k.kid for k in storage.verification_keys(100)] == [b"1"]
    with pytest.raises(NotFoundError):
        storage.retire(b"9", at=1, retire_after=2)


def test_close(storage: MemoryStorage) -> None:
    storage.add_client(Client(client_id="a", secret_hash=b""))
    storage.close()
    storage.close()
    with pytest.raises(RuntimeError):
        storage.get_client("a")


def test_concurrent_records(storage: MemoryStorage) -> None:
    def worker(n: int) -> None:
        for i in range(50):
            storage.record(token(bytes([n, i]), kid=bytes([n])))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.count() == 400
    assert len(storage.list_tokens(limit=1000)) == 400
