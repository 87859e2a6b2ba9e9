"""Fuzzing the parsers the bootstrap adapter adds (issue #7; "every parser is fuzzed"): whatever the bytes, each
raises only its documented error class -- never a ``KeyError``, ``TypeError`` or ``IndexError`` that would become a
traceback or a 5.00 -- and valid inputs mutated byte by byte still do.

* the lock's credential file (:meth:`resource_server.credentials.Credentials.from_cbor`);
* a Bootstrap-Pack as the lock receives it (:func:`resource_server.bootstrap_client.account_from_pack`);
* the server-driven operations as the lock receives them (:class:`resource_server.bootstrap_client.DeviceBootstrap`);
* the LwM2M query parser the bootstrap server uses for ``/bs``, ``/bspack`` and ``/rd``
  (:func:`ace_core.lwm2m.messages.parse_query` and :func:`~ace_core.lwm2m.messages.endpoint_of`).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ace_core.keys import CoseKey
from ace_core.lwm2m.bundle import DeviceBundle
from ace_core.lwm2m.errors import InvalidBootstrapRequest
from ace_core.lwm2m.messages import build_bootstrap_pack, endpoint_of, parse_query
from ace_core.lwm2m.objects import build_server_account
from ace_core.lwm2m.registry import Lwm2mContentFormat
from ace_core.registry import CoseAlgorithm
from resource_server.bootstrap_client import DeviceBootstrap, InvalidAccount, OperationRefused, account_from_pack
from resource_server.credentials import Credentials, CredentialsError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

AS_KEY = CoseKey.generate(CoseAlgorithm.EDDSA)
ACCOUNT = build_server_account(
    server_uri="coaps://127.0.0.1:5684",
    identity=b"L1-00000001#1",
    psk=bytes(range(16)),
    server_public_key=AS_KEY,
    short_server_id=1,
    lifetime=3600,
)
PACK = build_bootstrap_pack(ACCOUNT, security_instance_id=10, server_instance_id=10)
BUNDLE = DeviceBundle(
    endpoint="urn:dev:ops:ostiary-L1-00000001",
    serial="L1-00000001",
    model="L1",
    psk_identity=b"bs-aaaaaaaaaaaaaaaa",
    psk=bytes(16),
    bootstrap_uri="coaps://127.0.0.1:5684",
)
CREDENTIALS = Credentials.first(account_from_pack(PACK), now=0).to_cbor()


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """``valid`` with one byte replaced, a byte inserted or deleted, or cut short."""
    positions = st.integers(min_value=0, max_value=len(valid) - 1)
    return st.one_of(
        st.tuples(positions, st.integers(0, 255)).map(lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] + 1 :]),
        st.tuples(positions, st.integers(0, 255)).map(lambda p: valid[: p[0]] + bytes([p[1]]) + valid[p[0] :]),
        positions.map(lambda i: valid[:i] + valid[i + 1 :]),
        positions.map(lambda i: valid[:i]),
    )


def test_the_valid_inputs_are_valid() -> None:
    assert account_from_pack(PACK).slot.identity == b"L1-00000001#1"
    assert Credentials.from_cbor(CREDENTIALS).audience == "L1-00000001"


@FUZZ
@given(st.one_of(st.binary(max_size=300), _mutations(CREDENTIALS)))
def test_credential_files(data: bytes) -> None:
    try:
        Credentials.from_cbor(data)
    except CredentialsError:
        pass


@FUZZ
@given(st.one_of(st.binary(max_size=300), _mutations(PACK)))
def test_bootstrap_packs(data: bytes) -> None:
    try:
        account_from_pack(data)
    except InvalidAccount:
        pass


paths = st.lists(st.one_of(st.sampled_from(["0", "1", "2", "10", "65535", "bs"]), st.text(max_size=6)), max_size=4)
formats = st.one_of(st.none(), st.sampled_from([int(f) for f in Lwm2mContentFormat]), st.integers(0, 70000))


@FUZZ
@given(paths, formats, st.one_of(st.binary(max_size=200), _mutations(PACK)))
def test_server_driven_operations(path: list[str], content_format: int | None, payload: bytes) -> None:
    device = DeviceBootstrap(BUNDLE)
    for operation in (
        lambda: device.write(tuple(path), content_format, payload),
        lambda: device.delete(tuple(path)),
        lambda: device.discover(tuple(path)),
        device.finish,
    ):
        try:
            operation()
        except OperationRefused:
            pass


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=20))
def test_query_items(items: list[str]) -> None:
    try:
        found, _others = parse_query(items, frozenset({"ep", "lt", "b"}))
        endpoint_of(found)
    except InvalidBootstrapRequest:
        pass
