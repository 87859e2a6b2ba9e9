"""resource_server.bootstrap_client: pack validation and the lock's answers to the classic bootstrap operations."""

from __future__ import annotations

import dataclasses

import pytest

from ace_core.keys import CoseKey
from ace_core.lwm2m.bundle import DeviceBundle
from ace_core.lwm2m.messages import build_bootstrap_pack
from ace_core.lwm2m.objects import ServerAccount, build_server_account
from ace_core.registry import CoseAlgorithm
from as_server.bootstrap.discover import choose_instance_ids, parse_discover
from resource_server.bootstrap_client import (
    BadOperation,
    DeviceBootstrap,
    InconsistentConfiguration,
    InvalidAccount,
    NotFound,
    UnsupportedFormat,
    account_from_pack,
)

AS_KEY = CoseKey.generate(CoseAlgorithm.ES256)
TLV, SENML = 11542, 112
BUNDLE = DeviceBundle(
    endpoint="urn:dev:ops:ostiary-L1-00000042",
    serial="L1-00000042",
    model="L1",
    psk_identity=b"bs-aaaaaaaaaaaaaaaa",
    psk=bytes(range(16)),
    bootstrap_uri="coaps://127.0.0.1:5684",
)


def make_account(generation: int = 1, **kw: object) -> ServerAccount:
    values: dict[str, object] = dict(
        server_uri="coaps://127.0.0.1:5684",
        identity=f"L1-00000042#{generation}".encode(),
        psk=bytes([generation]) * 16,
        server_public_key=AS_KEY,
        short_server_id=1,
        lifetime=300,
    )
    values.update(kw)
    return build_server_account(**values)  # type: ignore[arg-type]


# -- Bootstrap-Pack ------------------------------------------------------------------------------------------------


def test_pack_roundtrip() -> None:
    pack = build_bootstrap_pack(make_account(3), security_instance_id=1, server_instance_id=0)
    delivered = account_from_pack(pack)
    assert delivered.slot.identity == b"L1-00000042#3" and delivered.slot.generation == 3
    assert delivered.slot.key == bytes([3]) * 16 and delivered.lifetime == 300
    assert CoseKey.from_cbor(delivered.server_public_key) == AS_KEY.public()


def test_pack_at_the_bootstrap_instance_is_moved() -> None:
    pack = build_bootstrap_pack(make_account(), security_instance_id=0, server_instance_id=0)
    assert account_from_pack(pack).security_instance == 1


def _with_security(account: ServerAccount, **changes: object) -> ServerAccount:
    return ServerAccount(dataclasses.replace(account.security, **changes), account.server)


@pytest.mark.parametrize(
    ("account", "reason"),
    [
        (make_account(identity=b"L1-00000042"), "audience#generation"),
        (make_account(psk=bytes(8)), "8 bytes"),
        (_with_security(make_account(), server_public_key=b"\x01"), "COSE_Key"),
        (_with_security(make_account(), server_uri="coap://127.0.0.1"), "coaps"),
        (_with_security(make_account(), security_mode=3), "not PSK"),
    ],
)
def test_pack_validation_errors(account: ServerAccount, reason: str) -> None:
    pack = build_bootstrap_pack(account, security_instance_id=1, server_instance_id=0)
    with pytest.raises(InvalidAccount, match=reason):
        account_from_pack(pack)


@pytest.mark.parametrize("payload", [b"", b"\xff", b"\x80", b"\xa0"])
def test_malformed_packs(payload: bytes) -> None:
    with pytest.raises(InvalidAccount):
        account_from_pack(payload)


# -- classic operations --------------------------------------------------------------------------------------------


def test_discover_fresh_device() -> None:
    device = DeviceBootstrap(BUNDLE)
    text = device.discover(())
    assert text == b"</>;lwm2m=1.1,</0/0>,</1>,</3/0>"
    discovery = parse_discover(text)
    assert discovery.bootstrap_instance_id == 0
    plan = choose_instance_ids(discovery, 1)
    assert (plan.security_instance_id, plan.server_instance_id, plan.delete) == (1, 0, ())


def test_discover_lists_the_existing_account_for_a_rebootstrap() -> None:
    device = DeviceBootstrap(
        BUNDLE, account_from_pack(build_bootstrap_pack(make_account(), security_instance_id=2, server_instance_id=0))
    )
    text = device.discover(())
    assert b'</0/2>;ssid=1;uri="coaps://127.0.0.1:5684"' in text and b"</1/0>;ssid=1" in text
    plan = choose_instance_ids(parse_discover(text), 1)
    assert plan.security_instance_id == 2 and plan.delete == ((0, 2), (1, 0))
    assert device.discover(("0",)) == b'</0/0>,</0/2>;ssid=1;uri="coaps://127.0.0.1:5684"'
    with pytest.raises(NotFound):
        device.discover(("3",))
    with pytest.raises(BadOperation):
        device.discover(("0", "1"))


@pytest.mark.parametrize("fmt", [TLV, SENML])
def test_write_then_finish(fmt: int) -> None:
    account = make_account(2)
    device = DeviceBootstrap(BUNDLE)
    device.delete(())
    if fmt == TLV:
        device.write(("0", "1"), fmt, account.security.to_tlv(1))
        device.write(("1", "0"), fmt, account.server.to_tlv(0, wrap=True))
    else:
        device.write(("0", "1"), fmt, account.security.to_senml_cbor(1))
        device.write(("1", "0"), fmt, account.server.to_senml_cbor(0))
    delivered = device.finish()
    assert delivered.slot.generation == 2 and (delivered.security_instance, delivered.server_instance) == (1, 0)


def test_write_rules() -> None:
    account = make_account()
    device = DeviceBootstrap(BUNDLE)
    with pytest.raises(UnsupportedFormat):
        device.write(("0", "1"), 60, account.security.to_tlv(1))
    with pytest.raises(UnsupportedFormat):
        device.write(("0", "1"), None, account.security.to_tlv(1))
    with pytest.raises(BadOperation):
        device.write(("0", "0"), TLV, account.security.to_tlv(0))  # the bootstrap account
    with pytest.raises(BadOperation):
        device.write(("0", "1"), TLV, b"\xc8\x00")  # truncated TLV
    with pytest.raises(BadOperation):
        device.write(("0", "1", "3"), TLV, b"")
    with pytest.raises(BadOperation):
        device.write(("3", "0"), TLV, b"")
    with pytest.raises(BadOperation):
        device.write(("0", "2"), SENML, account.security.to_senml_cbor(1))  # records for another instance


def test_delete_rules() -> None:
    device = DeviceBootstrap(
        BUNDLE, account_from_pack(build_bootstrap_pack(make_account(), security_instance_id=1, server_instance_id=0))
    )
    with pytest.raises(BadOperation):
        device.delete(("0", "0"))
    with pytest.raises(BadOperation):
        device.delete(("0", "1", "3"))
    device.delete(("3", "0"))  # not removable: a no-op 2.02
    device.delete(("0", "7"))  # absent: 2.02
    device.delete(("0",))
    assert device.discover(()) == b"</>;lwm2m=1.1,</0/0>,</1/0>;ssid=1,</3/0>"
    device.delete(())
    assert device.discover(()) == b"</>;lwm2m=1.1,</0/0>,</1>,</3/0>"


def test_finish_inconsistent() -> None:
    account = make_account()
    device = DeviceBootstrap(BUNDLE)
    with pytest.raises(InconsistentConfiguration, match="0 server accounts"):
        device.finish()
    device.write(("0", "1"), TLV, account.security.to_tlv(1))
    with pytest.raises(InconsistentConfiguration, match="Server instances"):
        device.finish()  # no /1 instance with SSID 1
    other_ssid = dataclasses.replace(account.server, short_server_id=2)
    device.write(("1", "0"), TLV, other_ssid.to_tlv(0))
    with pytest.raises(InconsistentConfiguration):
        device.finish()
    device.write(("1", "0"), TLV, account.server.to_tlv(0))
    device.write(("0", "2"), TLV, make_account(2).security.to_tlv(2))  # two accounts
    with pytest.raises(InconsistentConfiguration, match="2 server accounts"):
        device.finish()
    device.delete(("0", "2"))
    assert device.finish().slot.generation == 1


def test_finish_refuses_an_unusable_account() -> None:
    account = make_account(psk=bytes(8))
    device = DeviceBootstrap(BUNDLE)
    device.write(("0", "1"), TLV, account.security.to_tlv(1))
    device.write(("1", "0"), TLV, account.server.to_tlv(0))
    with pytest.raises(InconsistentConfiguration, match="8 bytes"):
        device.finish()


def test_incomplete_instance_is_reported_at_finish() -> None:
    account = make_account()
    device = DeviceBootstrap(BUNDLE)
    partial = dataclasses.replace(account.server).to_instance(0)
    from ace_core.lwm2m import tlv
    from ace_core.lwm2m.model import ObjectInstance
    from ace_core.lwm2m.objects import SERVER_SPEC

    device.write(("0", "1"), TLV, account.security.to_tlv(1))
    device.write(("1", "0"), TLV, tlv.encode_instance(ObjectInstance(1, 0, {0: 1}), SERVER_SPEC))
    with pytest.raises(InconsistentConfiguration, match="/1/0"):
        device.finish()
    assert partial.object_id == 1
