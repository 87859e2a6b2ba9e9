"""Bootstrap-Request / Bootstrap-Pack-Request queries, operations and their codes, the Bootstrap-Pack (ref. §1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.keys import CoseKey
from ace_core.lwm2m.errors import BootstrapFormatError, InvalidBootstrapRequest
from ace_core.lwm2m.messages import (
    BOOTSTRAP_PACK_SUCCESS,
    BOOTSTRAP_REQUEST_FAILURE,
    BOOTSTRAP_REQUEST_SUCCESS,
    BootstrapPackRequest,
    BootstrapPackTemplate,
    BootstrapRequest,
    NotAcceptable,
    Operation,
    OperationKind,
    build_bootstrap_pack,
    choose_pack_format,
    parse_bootstrap_pack,
    split_query,
)
from ace_core.lwm2m.objects import OscoreInstance, build_server_account
from ace_core.lwm2m.registry import CoapMethod, Lwm2mContentFormat
from ace_core.registry import CoseAlgorithm
from ace_core.status import Status

ACCOUNT = build_server_account(
    server_uri="coaps://as.example:5684",
    identity=b"lock-0001",
    psk=bytes(range(16)),
    server_public_key=CoseKey.generate(CoseAlgorithm.ES256),
    short_server_id=101,
    lifetime=300,
)


@pytest.mark.parametrize(
    "items",
    [("ep=lock-0001", "pct=112"), ("pct=112", "ep=lock-0001")],
    ids=["ep-first", "pct-first"],
)
def test_bootstrap_request_query_is_order_independent(items: tuple[str, ...]) -> None:
    """ref. §1: Anjay sends ``pct=112``; Wakaama's server is strict about order, ours must not be."""
    request = BootstrapRequest.from_query(items)
    assert request == BootstrapRequest(endpoint="lock-0001", preferred_content_format=112)
    assert request.to_query() == ("ep=lock-0001", "pct=112")


def test_bootstrap_request_without_pct_and_with_unknown_parameters() -> None:
    """coap-node sends no pct (ref. §1); unknown parameters are kept."""
    assert BootstrapRequest.from_query(["ep=urn:imei:1234"]) == BootstrapRequest(endpoint="urn:imei:1234")
    request = BootstrapRequest.from_query(["Q", "ep=x", "foo=bar"])
    assert request.extra == {"Q": None, "foo": "bar"}
    assert BootstrapRequest.from_query(request.to_query()) == request


def test_split_query_percent_decodes() -> None:
    assert split_query("ep=lock%2D1&pct=110") == ("ep=lock-1", "pct=110")
    assert split_query("") == ()
    with pytest.raises(InvalidBootstrapRequest):
        split_query("ep=%ff")


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "missing query parameter 'ep'"),
        (["pct=112"], "missing query parameter 'ep'"),
        (["ep="], "empty Endpoint"),
        (["ep"], "empty Endpoint"),
        (["ep=a", "ep=b"], "given twice"),
        (["ep=a", "pct=1", "pct=2"], "given twice"),
        (["ep=a", "pct="], "not a Content-Format"),
        (["ep=a", "pct=-1"], "not a Content-Format"),
        (["ep=a", "pct=65536"], "not a Content-Format"),
        (["ep=a", "pct=1e3"], "not a Content-Format"),
        (["ep=a\x00b"], "control character"),
        (["ep=" + "x" * 253], "longer than 252"),
        (["=x", "ep=a"], "no name"),
        (["ep=a"] + [f"x{i}=1" for i in range(16)], "more than 16"),
    ],
)
def test_invalid_bootstrap_request(items: list[str], message: str) -> None:
    with pytest.raises(InvalidBootstrapRequest, match=message) as info:
        BootstrapRequest.from_query(items)
    assert info.value.status == Status.BAD_REQUEST == BOOTSTRAP_REQUEST_FAILURE


def test_bootstrap_pack_request() -> None:
    assert BootstrapPackRequest.from_query(["ep=lock-0001"]) == BootstrapPackRequest(endpoint="lock-0001")
    with pytest.raises(InvalidBootstrapRequest):
        BootstrapPackRequest.from_query(["pct=112"])
    assert choose_pack_format(None) is Lwm2mContentFormat.SENML_CBOR
    assert choose_pack_format(112) is Lwm2mContentFormat.SENML_CBOR
    with pytest.raises(NotAcceptable) as info:
        choose_pack_format(int(Lwm2mContentFormat.SENML_JSON))
    assert info.value.status == Status.NOT_ACCEPTABLE


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=20))
def test_hostile_queries_raise_only_invalid_bootstrap_request(items: list[str]) -> None:
    for cls in (BootstrapRequest, BootstrapPackRequest):
        try:
            cls.from_query(items)
        except InvalidBootstrapRequest:
            pass


def test_operations_match_the_reference_table() -> None:
    """ref. §1 "Operation | CoAP | URI | Success" rows for the server-initiated operations."""
    discover = Operation.discover()
    assert (discover.method, discover.path, discover.accept, discover.success) == (
        CoapMethod.GET,
        "/",
        Lwm2mContentFormat.LINK_FORMAT,
        Status.CONTENT,
    )
    write = Operation.write((0, 2), b"\xc1\x0a\x65", Lwm2mContentFormat.TLV)
    assert (write.method, write.path, write.content_format, write.success) == (
        CoapMethod.PUT,
        "/0/2",
        Lwm2mContentFormat.TLV,
        Status.CHANGED,
    )
    delete = Operation.delete((1, 0))
    assert (delete.method, delete.path, delete.success) == (CoapMethod.DELETE, "/1/0", Status.DELETED)
    assert Operation.delete().path == "/"
    finish = Operation.finish()
    assert (finish.method, finish.uri_path, finish.payload, finish.success) == (
        CoapMethod.POST,
        ("bs",),
        b"",
        Status.CHANGED,
    )
    assert str(finish) == "Bootstrap-Finish /bs"
    assert BOOTSTRAP_REQUEST_SUCCESS == Status.CHANGED and BOOTSTRAP_PACK_SUCCESS == Status.CONTENT


@pytest.mark.parametrize(
    ("kind", "code", "meaning"),
    [
        (OperationKind.DISCOVER, 404, "Not Found"),
        (OperationKind.WRITE, 400, "does not match its Content-Format"),
        (OperationKind.WRITE, 415, "Unsupported Content-Format"),
        (OperationKind.DELETE, 400, "Bad Request"),
        (OperationKind.FINISH, 406, "inconsistent"),
        (OperationKind.FINISH, 500, "unexpected"),
    ],
)
def test_failure_reasons(kind: OperationKind, code: int, meaning: str) -> None:
    op = {
        OperationKind.DISCOVER: Operation.discover(),
        OperationKind.WRITE: Operation.write((0, 1), b"", Lwm2mContentFormat.TLV),
        OperationKind.DELETE: Operation.delete((0, 1)),
        OperationKind.FINISH: Operation.finish(),
    }[kind]
    assert meaning in op.reason(code)


def test_bootstrap_pack_round_trip() -> None:
    oscore = OscoreInstance(master_secret=bytes(16), sender_id=b"\x01", recipient_id=b"\x02")
    data = build_bootstrap_pack(ACCOUNT, security_instance_id=1, server_instance_id=0, oscore=(0, oscore))
    pack = parse_bootstrap_pack(data)
    assert pack.security == {1: ACCOUNT.security}
    assert pack.server == {0: ACCOUNT.server}
    assert pack.oscore == {0: oscore}
    assert pack.account(101) == ACCOUNT
    with pytest.raises(KeyError):
        pack.account(102)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_hostile_packs_raise_only_format_errors(data: bytes) -> None:
    try:
        parse_bootstrap_pack(data)
    except BootstrapFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_packs_raise_only_format_errors(data: st.DataObject) -> None:
    pack = bytearray(build_bootstrap_pack(ACCOUNT, security_instance_id=1, server_instance_id=0))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(pack) - 1))
        pack[pos] ^= data.draw(st.integers(1, 255))
    try:
        parse_bootstrap_pack(bytes(pack))
    except BootstrapFormatError:
        pass


_TEMPLATE_KEY = CoseKey.generate(CoseAlgorithm.ES256)


def _template(**overrides: object) -> BootstrapPackTemplate:
    settings: dict[str, object] = {
        "server_uri": "coaps://as.example:5684",
        "server_public_key": _TEMPLATE_KEY,
        "short_server_id": 1,
        "lifetime": 3600,
        "security_instance_id": 10,
        "server_instance_id": 10,
    }
    settings.update(overrides)
    return BootstrapPackTemplate(**settings)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(
    identity=st.binary(min_size=1, max_size=300),
    psk=st.binary(min_size=1, max_size=300),
    ssid=st.integers(1, 65534),
    lifetime=st.integers(0, 2**32 - 1),
    ids=st.tuples(st.integers(0, 65534), st.integers(0, 65534)),
)
def test_pack_template_is_byte_identical_to_build_bootstrap_pack(
    identity: bytes, psk: bytes, ssid: int, lifetime: int, ids: tuple[int, int]
) -> None:
    """The bootstrap server's cached encoding (issue #7 benchmark) makes exactly the pack of the account."""
    for key in (_TEMPLATE_KEY, CoseKey.generate(CoseAlgorithm.EDDSA)):
        template = _template(
            server_public_key=key,
            short_server_id=ssid,
            lifetime=lifetime,
            security_instance_id=ids[0],
            server_instance_id=ids[1],
        )
        account = build_server_account(
            server_uri="coaps://as.example:5684",
            identity=identity,
            psk=psk,
            server_public_key=key,
            short_server_id=ssid,
            lifetime=lifetime,
        )
        expected = build_bootstrap_pack(account, security_instance_id=ids[0], server_instance_id=ids[1])
        assert template.pack(identity, psk) == expected
        assert parse_bootstrap_pack(expected).account(ssid) == account


def test_pack_template_serves_many_accounts_and_refuses_what_build_server_account_refuses() -> None:
    template = _template()
    for generation in (1, 9, 10, 12345):
        identity, psk = f"L1-00000042#{generation}".encode(), bytes([generation % 256]) * 16
        account = build_server_account(
            server_uri="coaps://as.example:5684",
            identity=identity,
            psk=psk,
            server_public_key=_TEMPLATE_KEY,
            short_server_id=1,
            lifetime=3600,
        )
        assert template.pack(identity, psk) == build_bootstrap_pack(
            account, security_instance_id=10, server_instance_id=10
        )
    with pytest.raises(ValueError, match="non-empty"):
        template.pack(b"", b"k")
    with pytest.raises(ValueError, match="non-empty"):
        template.pack(b"id", b"")
    with pytest.raises(ValueError, match="bytes"):
        template.pack("id", b"k")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="coaps"):
        _template(server_uri="coap://as.example")
    with pytest.raises(ValueError, match="asymmetric"):
        _template(server_public_key=CoseKey.generate(CoseAlgorithm.A128GCM))


def test_pack_template_matches_its_settings_only() -> None:
    template = _template()
    same = {"server_uri": "coaps://as.example:5684", "server_public_key": _TEMPLATE_KEY, "short_server_id": 1}
    assert template.matches(**same, lifetime=3600)  # type: ignore[arg-type]
    assert not template.matches(**same, lifetime=60)  # type: ignore[arg-type]
    assert not template.matches(**{**same, "server_uri": "coaps://other:5684"}, lifetime=3600)  # type: ignore[arg-type]
    assert not template.matches(**{**same, "short_server_id": 2}, lifetime=3600)  # type: ignore[arg-type]
    assert not template.matches(**{**same, "server_public_key": _TEMPLATE_KEY.public()}, lifetime=3600)  # type: ignore[arg-type]
