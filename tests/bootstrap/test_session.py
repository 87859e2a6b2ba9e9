"""The server-driven bootstrap sequence (ref. §1): happy paths and a failure at every step."""

from __future__ import annotations

import pytest

from ace_core.keys import CoseKey
from ace_core.lwm2m import senml, tlv
from ace_core.lwm2m.errors import BootstrapFailed
from ace_core.lwm2m.messages import BootstrapRequest, Operation, OperationKind
from ace_core.lwm2m.objects import OBJECT_SPECS, SecurityInstance, ServerInstance, build_server_account
from ace_core.lwm2m.registry import EXCHANGE_LIFETIME, CoapMethod, Lwm2mContentFormat
from ace_core.registry import CoseAlgorithm
from ace_core.status import Status
from as_server.bootstrap.discover import InstancePlan
from as_server.bootstrap.session import BootstrapPolicy, BootstrapSession, SessionState
from tests.vectors_loader import VECTORS

REQUEST = BootstrapRequest(endpoint="lock-0001", preferred_content_format=112)
ACCOUNT = build_server_account(
    server_uri="coaps://as.example:5684",
    identity=b"lock-0001",
    psk=bytes(range(16)),
    server_public_key=CoseKey.generate(CoseAlgorithm.ES256),
    short_server_id=101,
    lifetime=300,
)
WAKAAMA = (VECTORS / "lwm2m" / "ref1_discover_wakaama.txt").read_bytes().strip()
REBOOTSTRAP = b'</>;lwm2m=1.1,</0/0>,</0/3>;ssid=101;uri="coaps://as.example:5684",</1/2>;ssid=101,</3/0>'
T0 = 1_000.0


def run(session: BootstrapSession, discover_payload: bytes) -> list[Operation]:
    """Drive ``session`` answering every operation with its success code; return the operations sent."""
    sent = [session.start(now=T0)]
    now = T0
    while True:
        op = sent[-1]
        now += 0.5
        payload = discover_payload if op.kind is OperationKind.DISCOVER else b""
        nxt = session.on_response(op.success, payload, now=now)
        if nxt is None:
            return sent
        sent.append(nxt)


def test_fresh_device_wakaama() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    sent = run(session, WAKAAMA)
    assert [(op.method, op.path) for op in sent] == [
        (CoapMethod.GET, "/"),
        (CoapMethod.PUT, "/0/1"),
        (CoapMethod.PUT, "/1/0"),
        (CoapMethod.POST, "/bs"),
    ]
    assert sent[0].accept is Lwm2mContentFormat.LINK_FORMAT
    assert session.state is SessionState.DONE and session.pending is None and session.failure is None
    assert session.plan == InstancePlan(1, 0)
    write_security, write_server = sent[1], sent[2]
    assert write_security.content_format is Lwm2mContentFormat.TLV
    assert SecurityInstance.from_tlv(write_security.payload, 1) == ACCOUNT.security
    assert ServerInstance.from_tlv(write_server.payload, 0) == ACCOUNT.server
    assert [code for _, code in session.completed] == [205, 204, 204, 204]


def test_rebootstrap_deletes_and_reuses_the_previous_account() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    sent = run(session, REBOOTSTRAP)
    assert [str(op) for op in sent] == [
        "Bootstrap-Discover /",
        "Bootstrap-Delete /0/3",
        "Bootstrap-Delete /1/2",
        "Bootstrap-Write /0/3",
        "Bootstrap-Write /1/2",
        "Bootstrap-Finish /bs",
    ]
    assert session.plan is not None and session.plan.rebootstrap


def test_delete_all_first_and_senml_wrapped_policy() -> None:
    policy = BootstrapPolicy(delete_all_first=True, write_format=Lwm2mContentFormat.SENML_CBOR)
    session = BootstrapSession(REQUEST, ACCOUNT, policy=policy)
    sent = run(session, WAKAAMA)
    assert [str(op) for op in sent][:2] == ["Bootstrap-Delete /", "Bootstrap-Discover /"]
    write = sent[2]
    assert write.content_format is Lwm2mContentFormat.SENML_CBOR
    (instance,) = senml.decode_instances(write.payload, OBJECT_SPECS)
    assert SecurityInstance.from_instance(instance) == ACCOUNT.security and instance.instance_id == 1


def test_wrapped_tlv_policy() -> None:
    sent = run(BootstrapSession(REQUEST, ACCOUNT, policy=BootstrapPolicy(wrap_instances=True)), WAKAAMA)
    (outer,) = tlv.decode(sent[1].payload)
    assert outer.identifier == 1 and SecurityInstance.from_tlv(sent[1].payload, 1) == ACCOUNT.security


def test_policy_refuses_other_formats() -> None:
    with pytest.raises(ValueError):
        BootstrapPolicy(write_format=Lwm2mContentFormat.SENML_JSON)


STEPS = ["discover", "delete-0", "delete-1", "write-security", "write-server", "finish"]


@pytest.mark.parametrize("step", range(len(STEPS)), ids=STEPS)
@pytest.mark.parametrize("code", [400, 404, 406, 415, 500, 201, 203])
def test_unexpected_code_at_each_step(step: int, code: int) -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    op: Operation | None = session.start(now=T0)
    for _ in range(step):
        assert op is not None
        op = session.on_response(op.success, REBOOTSTRAP if op.kind is OperationKind.DISCOVER else b"", now=T0)
    assert op is not None
    with pytest.raises(BootstrapFailed) as info:
        session.on_response(code, b"", now=T0 + 1)
    failure = info.value
    assert failure.code == code and failure.step == f"{op} to lock-0001"
    assert failure.reason == op.reason(code)
    assert session.state is SessionState.FAILED and session.failure is failure and session.pending is None
    with pytest.raises(RuntimeError):
        session.on_response(op.success, now=T0 + 2)


def test_finish_4_06_names_the_inconsistent_configuration() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    op: Operation | None = session.start(now=T0)
    while op is not None and op.kind is not OperationKind.FINISH:
        op = session.on_response(op.success, WAKAAMA if op.kind is OperationKind.DISCOVER else b"", now=T0)
    with pytest.raises(BootstrapFailed, match=r"Bootstrap-Finish /bs to lock-0001: 4\.06: Not Acceptable"):
        session.on_response(int(Status.NOT_ACCEPTABLE), now=T0)


def test_malformed_discover_answer_fails() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    session.start(now=T0)
    with pytest.raises(BootstrapFailed, match="not valid link-format") as info:
        session.on_response(205, b"</0/0>;ssid=zero", now=T0)
    assert info.value.code == 205


def test_timeout_and_late_answer() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    session.start(now=T0)
    assert session.deadline() == T0 + EXCHANGE_LIFETIME
    with pytest.raises(BootstrapFailed, match="no response") as info:
        session.on_timeout(now=T0 + 30)
    assert info.value.code is None
    late = BootstrapSession(REQUEST, ACCOUNT)
    late.start(now=T0)
    with pytest.raises(BootstrapFailed, match="EXCHANGE_LIFETIME"):
        late.on_response(205, WAKAAMA, now=T0 + EXCHANGE_LIFETIME + 1)
    assert late.deadline() is None


def test_misuse() -> None:
    session = BootstrapSession(REQUEST, ACCOUNT)
    with pytest.raises(RuntimeError):
        session.on_response(205, now=T0)
    session.start(now=T0)
    with pytest.raises(RuntimeError):
        session.start(now=T0)
    with pytest.raises(ValueError):
        session.on_response(69, now=T0)  # 2.05 as a CoAP code byte, not class*100+detail
    with pytest.raises(ValueError):
        session.on_response(True, now=T0)


def test_the_bootstrap_account_is_never_written_or_deleted() -> None:
    """ref. §1 pitfall: Anjay's bootstrap account at /0/1 must survive."""
    payload = b'</>;lwm2m=1.2,</0>,</0/1>;uri="coap://127.0.0.1:5685",</1>,</2>,</3>,</3/0>'
    sent = run(BootstrapSession(REQUEST, ACCOUNT), payload)
    assert all(op.path not in ("/0/1", "/0") for op in sent)
    assert [op.path for op in sent if op.kind is OperationKind.WRITE] == ["/0/0", "/1/0"]
