"""Bootstrap-Discover answers (ref. §1) and the choice of instance ids: never the bootstrap account, reuse on
re-bootstrap, else the smallest free id."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ace_core.lwm2m.errors import LinkFormatError
from as_server.bootstrap.discover import (
    DiscoveredInstance,
    InstancePlan,
    Link,
    choose_instance_ids,
    parse_discover,
    parse_link_format,
)
from tests.vectors_loader import VECTORS

AS_SSID = 101


def reference_payload(name: str) -> str:
    return (VECTORS / "lwm2m" / name).read_text().strip()


def test_ref1_wakaama_discover() -> None:
    """ref. §1 Wakaama (after ``DELETE /``): the only Security instance, ``/0/0``, is the bootstrap account."""
    discovery = parse_discover(reference_payload("ref1_discover_wakaama.txt").encode())
    assert discovery.lwm2m_version == "1.1"
    assert discovery.objects == {0: None, 1: "1.1", 2: None, 3: None, 4: None, 5: None, 6: None, 7: None, 31024: "1.0"}
    assert discovery.instances[0] == {0} and 1 not in discovery.instances
    assert discovery.security == {0: DiscoveredInstance(0)}
    assert discovery.bootstrap_instance_id == 0
    assert choose_instance_ids(discovery, AS_SSID) == InstancePlan(1, 0)


def test_ref1_anjay_discover_bootstrap_account_at_0_1() -> None:
    """ref. §1 Anjay: the bootstrap account is ``/0/1`` (the pitfall run overwrote it). The reference elides parts
    of the answer with ``...``; the test drops those elisions and parses the rest verbatim."""
    text = reference_payload("ref1_discover_anjay.txt")
    assert ",...," in text
    links = [part for part in text.split(",...") if part]
    payload = links[0] + "".join(links[1:])
    discovery = parse_discover(payload)
    assert discovery.lwm2m_version == "1.2"
    assert discovery.security == {1: DiscoveredInstance(1, None, "coap://127.0.0.1:5685")}
    assert discovery.bootstrap_instance_id == 1
    assert discovery.objects[10] == "1.1"
    plan = choose_instance_ids(discovery, AS_SSID)
    assert plan.security_instance_id != 1
    assert plan == InstancePlan(0, 0)


SPEC_FORM = 'lwm2m="1.1",</0/0>,</0/1>;ssid=101;uri="coaps://as.example:5684",</1/0>;ssid=101,</3/0>'


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # fresh device, bootstrap account at 0
        ("</>;lwm2m=1.1,</0/0>,</3/0>", InstancePlan(1, 0)),
        # bootstrap account elsewhere
        ("</>;lwm2m=1.1,</0/4>,</3/0>", InstancePlan(0, 0)),
        # re-bootstrap, 1.1.1+ spec form with a leading bare lwm2m attribute: reuse and delete first
        (SPEC_FORM, InstancePlan(1, 0, ((0, 1), (1, 0)))),
        # another server's account occupies /0/1 and /1/0; gaps are filled from the smallest id
        ('</0/0>,</0/1>;ssid=7;uri="coap://other",</0/3>;ssid=8,</1/0>;ssid=7,</1/2>;ssid=8', InstancePlan(2, 1)),
        # our account split over odd ids, plus a stale duplicate of our SSID
        ("</0/2>,</0/5>;ssid=101,</0/6>;ssid=101,</1/9>;ssid=101", InstancePlan(5, 9, ((0, 5), (0, 6), (1, 9)))),
        # a pre-1.1.1 client lists no ssid at all: every Security instance is protected
        ("</0/0>,</0/1>,</1/0>", InstancePlan(2, 1)),
        # nothing listed (an odd client): smallest ids
        ("", InstancePlan(0, 0)),
    ],
    ids=["fresh", "bs-elsewhere", "rebootstrap", "foreign-accounts", "split-and-duplicate", "no-ssid", "empty"],
)
def test_choose_instance_ids(payload: str, expected: InstancePlan) -> None:
    discovery = parse_discover(payload)
    plan = choose_instance_ids(discovery, AS_SSID)
    assert plan == expected
    assert plan.security_instance_id not in discovery.protected_security_ids
    assert plan.rebootstrap == bool(expected.delete)


def test_link_format_details() -> None:
    links = parse_link_format(' </0/1>;uri="coap://a,b;c\\"d";ssid=3 ,\n</rd>;rt=core.rd;obs,</1>;ver=1.1')
    assert links == (
        Link("/0/1", {"uri": 'coap://a,b;c"d', "ssid": "3"}),
        Link("/rd", {"rt": "core.rd", "obs": None}),
        Link("/1", {"ver": "1.1"}),
    )
    assert [link.path for link in links] == [(0, 1), None, (1,)]
    assert Link("/").path == () and Link("/0/70000").path is None and Link("0/1").path is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("</0/1", "unterminated"),
        ('</0/1>;uri="coap://x', "unterminated quoted"),
        ("</0/1>;=3", "parameter name"),
        ("</0/1>;ssid=", "missing value"),
        ("</0/1> </0/2>", "expected ','"),
        ("</0/1>,ssid=3", "expected '<'"),
        ("</0/1>;ssid=abc", "not a Short Server ID"),
        ("</0/1>;ssid=0", "not a Short Server ID"),
        ("</1/1>;ssid", "without a value"),
        ("</0/1>;ssid=1,</0/1>;ssid=2", "two Short Server IDs"),
        ("</0/65535>", "reserved"),
        (b"</0/\xff>", "not UTF-8"),
        ("</0/1>;" + ";".join(f"a{i}" for i in range(40)), "more than 32 parameters"),
    ],
)
def test_malformed_discover(payload: str | bytes, message: str) -> None:
    with pytest.raises(LinkFormatError, match=message):
        parse_discover(payload)


def test_bounds() -> None:
    with pytest.raises(LinkFormatError, match="exceeds the limit"):
        parse_discover("</3/0>," * 4000)
    with pytest.raises(LinkFormatError, match="more than 10 links"):
        parse_link_format(",".join(["</3/0>"] * 11), max_links=10)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='<>/0123456789;,="abc\\ ssidur', max_size=120))
def test_hostile_input_raises_only_link_format_error(payload: bytes | str) -> None:
    try:
        parse_discover(payload)
    except LinkFormatError:
        pass


ids = st.integers(0, 40)


@settings(max_examples=300, deadline=None)
@given(
    protected=st.sets(ids, max_size=3),
    accounts=st.dictionaries(ids, st.integers(1, 3) | st.just(AS_SSID), max_size=5),
    servers=st.dictionaries(ids, st.integers(1, 3) | st.just(AS_SSID), max_size=5),
)
def test_plan_never_touches_protected_or_foreign_instances(
    protected: set[int], accounts: dict[int, int], servers: dict[int, int]
) -> None:
    links = [f"</0/{i}>" for i in protected - set(accounts)]
    links += [f"</0/{i}>;ssid={ssid}" for i, ssid in accounts.items()]
    links += [f"</1/{i}>;ssid={ssid}" for i, ssid in servers.items()]
    discovery = parse_discover(",".join(links))
    plan = choose_instance_ids(discovery, AS_SSID)
    ours_security = {i for i, s in accounts.items() if s == AS_SSID}
    ours_server = {i for i, s in servers.items() if s == AS_SSID}
    assert plan.security_instance_id not in discovery.protected_security_ids
    assert plan.security_instance_id in ours_security or plan.security_instance_id not in discovery.security
    assert plan.server_instance_id in ours_server or plan.server_instance_id not in discovery.server
    assert set(plan.delete) == {(0, i) for i in ours_security} | {(1, i) for i in ours_server}
    if not ours_security:
        free = [i for i in range(100) if i not in discovery.security]
        assert plan.security_instance_id == free[0]
