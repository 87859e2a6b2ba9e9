"""Typed Security/Server/OSCORE instances (ref. §2) and the AS's server account (issue #7), against the
reference's TLV bytes (ref. §3), and their device-side inverse."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.keys import CoseKey
from ace_core.lwm2m import tlv
from ace_core.lwm2m.errors import BootstrapFormatError, ObjectError
from ace_core.lwm2m.model import ObjectInstance, ObjectLink
from ace_core.lwm2m.objects import (
    SECURITY_SPEC,
    OscoreInstance,
    SecurityInstance,
    ServerAccount,
    ServerInstance,
    build_server_account,
)
from ace_core.lwm2m.registry import SecurityMode, SecurityResource
from ace_core.registry import CoseAlgorithm
from tests.vectors_loader import vector_hex

NOSEC_101 = SecurityInstance(
    server_uri="coap://127.0.0.1:5683",
    bootstrap_server=False,
    security_mode=SecurityMode.NO_SEC,
    public_key_or_identity=b"",
    server_public_key=b"",
    secret_key=b"",
    short_server_id=101,
)
SERVER_101 = ServerInstance(short_server_id=101, lifetime=300, notification_storing=False, binding="U")
AS_KEY = CoseKey.generate(CoseAlgorithm.ES256)


def account(**overrides: Any) -> ServerAccount:
    kwargs: dict[str, Any] = {
        "server_uri": "coaps://as.example:5684",
        "identity": b"lock-0001",
        "psk": bytes(range(16)),
        "server_public_key": AS_KEY,
        "short_server_id": 101,
        "lifetime": 300,
    }
    kwargs.update(overrides)
    return build_server_account(**kwargs)


def test_ref3_nosec_security_instance_bytes() -> None:
    """The typed NoSec account writes exactly the reference's ``PUT /0/1`` payload, and reads back from it."""
    vector = vector_hex("lwm2m/ref3_put_0_1_nosec_ssid101.hex")
    assert NOSEC_101.to_tlv(1) == vector
    assert SecurityInstance.from_tlv(vector, 1) == NOSEC_101


def test_ref3_server_instance_bytes() -> None:
    vector = vector_hex("lwm2m/ref3_put_1_1_ssid101.hex")
    assert SERVER_101.to_tlv(1) == vector
    assert ServerInstance.from_tlv(vector, 1) == SERVER_101


def test_ref3_wrapped_ssid_202() -> None:
    body = vector_hex("lwm2m/ref3_put_0_1_nosec_ssid101.hex")[:-3] + vector_hex("lwm2m/ref3_ssid202.hex")
    wrapped = vector_hex("lwm2m/ref3_wrapped_0_2_header.hex") + body
    nosec_202 = SecurityInstance.from_tlv(wrapped, 2)
    assert nosec_202.short_server_id == 202
    assert nosec_202.to_tlv(2, wrap=True) == wrapped


def test_as_account_psk_resources_match_the_reference_psk_variant() -> None:
    """ref. §3 "PSK variant": mode 0, identity "lock-0001", 16-byte key, each TLV byte for byte."""
    acc = account()
    written = {t.identifier: tlv.encode([t]) for t in tlv.decode(acc.security.to_tlv(2))}
    assert written[SecurityResource.SECURITY_MODE] == vector_hex("lwm2m/ref3_psk_security_mode.hex")
    assert written[SecurityResource.PUBLIC_KEY_OR_IDENTITY] == vector_hex("lwm2m/ref3_psk_identity.hex")
    assert written[SecurityResource.SECRET_KEY] == vector_hex("lwm2m/ref3_psk_secret_key.hex")
    assert set(written) == {0, 1, 2, 3, 4, 5, 10}  # the minimum DM account (ref. §2.2)
    assert acc.server.to_tlv(1) == vector_hex("lwm2m/ref3_put_1_1_ssid101.hex")


def test_as_account_carries_the_public_cose_key_only() -> None:
    acc = account()
    assert acc.security.server_public_cose_key() == AS_KEY.public()
    assert acc.security.server_public_cose_key().d is None
    parsed = SecurityInstance.from_tlv(acc.security.to_tlv(2), 2)
    assert parsed == acc.security
    assert parsed.server_public_cose_key() == AS_KEY.public()
    assert "secret_key" not in repr(acc.security)  # secrets stay out of logs


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"server_uri": "coap://as.example"}, "coaps"),
        ({"identity": b""}, "non-empty"),
        ({"psk": b""}, "non-empty"),
        ({"server_public_key": CoseKey.symmetric(bytes(16))}, "asymmetric"),
        ({"short_server_id": 0}, "Short Server ID"),
        ({"short_server_id": 65535}, "Short Server ID"),
        ({"binding": "X"}, "binding"),
        ({"lifetime": "300"}, "Integer"),
    ],
)
def test_account_builder_refuses(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        account(**overrides)


def test_server_public_key_checks() -> None:
    private = replace(NOSEC_101, server_public_key=AS_KEY.to_cbor())
    with pytest.raises(ObjectError, match="public"):
        private.server_public_cose_key()
    garbage = replace(NOSEC_101, server_public_key=b"\xff")
    with pytest.raises(ObjectError, match="not a COSE_Key"):
        garbage.server_public_cose_key()


def test_missing_mandatory_resource_and_wrong_object() -> None:
    with pytest.raises(ObjectError, match="Binding"):
        ServerInstance.from_instance(ObjectInstance(1, 0, {0: 1, 1: 60, 6: False}))
    with pytest.raises(ObjectError, match="not an instance of /0"):
        SecurityInstance.from_instance(ObjectInstance(1, 0, {}))
    with pytest.raises(ObjectError, match="Short Server ID"):  # res 10 is a MUST for a non-bootstrap account
        SecurityInstance.from_instance(ObjectInstance(0, 1, {0: "coap://x", 1: False, 2: 3, 3: b"", 4: b"", 5: b""}))


def test_bootstrap_account_needs_no_ssid_and_unknown_resources_survive() -> None:
    bs = ObjectInstance(0, 0, {0: "coaps://bs:5685", 1: True, 2: 0, 3: b"bs-lock", 4: b"", 5: b"k", 11: 10, 22: b"?"})
    parsed = SecurityInstance.from_instance(bs)
    assert parsed.bootstrap_server and parsed.client_hold_off_time == 10
    assert parsed.extra == {22: b"?"}  # a 1.2 resource the reference gives no type for: kept as bytes
    assert parsed.to_instance(0) == bs


def test_multiple_instance_ciphersuites_and_objlnk() -> None:
    sec = replace(account().security, ciphersuites=(49320,), oscore_security_mode=ObjectLink(21, 0))
    assert SecurityInstance.from_tlv(sec.to_tlv(3, wrap=True), 3) == sec
    assert tlv.decode_instance(sec.to_tlv(3), SECURITY_SPEC, object_id=0, instance_id=3).resources[16] == {0: 49320}


def test_oscore_instance_round_trip() -> None:
    osc = OscoreInstance(master_secret=bytes(16), sender_id=b"\x01", recipient_id=b"", aead_algorithm=10)
    assert OscoreInstance.from_tlv(osc.to_tlv(0), 0) == osc
    assert "master_secret" not in repr(osc)


def test_server_instance_refuses_executable_values() -> None:
    with pytest.raises(ObjectError, match="executable"):
        ServerInstance.from_instance(ObjectInstance(1, 0, {0: 1, 1: 60, 6: False, 7: "U", 8: b""}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 3))
def test_hostile_tlv_raises_only_bootstrap_format_errors(data: bytes, instance_id: int) -> None:
    for cls in (SecurityInstance, ServerInstance, OscoreInstance):
        try:
            cls.from_tlv(data, instance_id)
        except BootstrapFormatError:
            pass
