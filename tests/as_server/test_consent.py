"""The consent workflow through the token endpoint and :class:`ConsentService`, on every storage backend (issue #5).

A client asks for rights that a consent rule covers -> ``invalid_scope`` with the access request's id -> an
approver approves (optionally narrowed) -> the next token request succeeds, the token records the grant -> the
grant is revoked -> introspection says inactive and the next request is refused again. Plus: duplicates merge,
expiry, who may approve (roles, approvers, not one's own request), the audit entries of each step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ace_core.errors import InvalidClient, InvalidScope
from ace_core.keys import b64url_decode
from ace_core.messages import TokenRequest
from ace_core.pop import Confirmation
from ace_core.scope import AifScope, TextScope
from as_server.auth import METHOD_BASIC, ClientCredentials
from as_server.consent import Approval, is_request_id, parse_approval
from as_server.errors import ApiBadRequest, ApiConflict, ApiForbidden, ApiNotFound, ApiUnauthorized, ConsentPending
from as_server.models import AccessRequestStatus, ConsentRequest, Grant, GrantStatus, TokenStatus, User, grant_rule_id
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery, DuplicateError, NotFoundError, StateError, Storage
from policies.base import AccessRequest
from tests.as_server.consent_fixtures import BERLIN, NOW, PASSWORDS, ConsentWorld
from tests.as_server.fixtures_endpoints import CLIENT_ED25519, PEER, PHONE_SECRET, aif, open_token
from tests.as_server.test_storage import OpenSql


@pytest.fixture
def world(storage: Storage) -> Iterator[ConsentWorld]:
    the_world = ConsentWorld.create(storage)
    yield the_world
    the_world.server.close()


def actions(world: ConsentWorld, **filters: object) -> list[str]:
    """The audit log's actions, oldest first (refusals written first)."""
    world.server.audit_log.flush()
    return [e.action for e in reversed(world.storage.list_audit(AuditQuery(limit=1000, **filters)))]  # type: ignore[arg-type]


# --- the flow -----------------------------------------------------------------------------------------------------


def test_a_request_needing_consent_is_recorded_and_refused_with_invalid_scope(world: ConsentWorld) -> None:
    with pytest.raises(ConsentPending) as info:
        world.token("/lock:PUT")
    error = info.value
    assert isinstance(error, InvalidScope)  # RFC 9200 §5.8.3 / RFC 6749 §5.2: invalid_scope
    assert error.to_message().error_description == "consent pending: follow error_uri for the decision"
    assert is_request_id(error.request_id)
    with_uri = error.with_uri("coap://as.example:5683/")
    assert with_uri.to_message().error_uri == f"coap://as.example:5683/access-requests/{error.request_id}"
    request = world.storage.get_access_request(error.request_id, now=NOW)
    assert request is not None
    assert (request.client_id, request.subject, request.audience) == ("phone-app", None, "lock-aif")
    assert AifScope.from_cbor(request.scope) == AifScope.parse_spec("/lock:PUT")
    assert request.status == AccessRequestStatus.PENDING
    assert request.approvers == ("user:frank", "group:facility")
    assert request.rules == ("ask-facility",)
    assert "consent required" in request.reason
    assert (request.created_at, request.requested_from, request.requested_until) == (NOW, NOW, None)
    assert request.expires_at == NOW + world.server.settings.access_request_lifetime
    # Rights the policy grants are issued as before, without any request.
    assert world.token("/battery:GET").access_token


def test_request_ids_are_128_random_bits(world: ConsentWorld) -> None:
    ids = {world.pending(scope) for scope in ("/lock:PUT", "/lock:GET", "/lock:GET,PUT")}
    assert len(ids) == 3
    assert all(is_request_id(i) and len(b64url_decode(i)) == 16 for i in ids)
    assert not is_request_id("short") and not is_request_id("a" * 21 + "!")


def test_duplicates_are_merged_while_pending(world: ConsentWorld) -> None:
    first = world.pending("/lock:PUT")
    world.clock.now += 5
    assert world.pending("/lock:PUT") == first
    request = world.storage.get_access_request(first, now=world.now)
    assert request is not None and (request.request_count, request.updated_at) == (2, NOW + 5)
    other = world.pending("/lock:GET,PUT")  # another scope: another request
    assert other != first
    assert actions(world, action="access_request") == [
        "access_request.created",
        "access_request.merged",
        "access_request.created",
    ]


def test_approval_lets_the_next_request_succeed_and_revocation_stops_it(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    frank = world.approver("frank")
    grant = world.server.consent.approve(frank, request_id, Approval(), now=world.now)
    assert grant.id == request_id and grant.created_by == "user:frank" and grant.status == GrantStatus.ACTIVE
    assert world.storage.get_access_request(request_id, now=world.now).status == AccessRequestStatus.APPROVED  # type: ignore[union-attr]

    info = world.token("/lock:PUT")
    claims = open_token(info.access_token)
    assert AifScope.from_cbor(claims.scope) == AifScope.parse_spec("/lock:PUT")  # type: ignore[arg-type]
    record = world.storage.get_by_cti(claims.cti)  # type: ignore[arg-type]
    assert record is not None and record.rules == (grant_rule_id(request_id),) and record.grant_ids == (request_id,)
    assert [t.cti for t in world.storage.tokens_of_grant(request_id)] == [claims.cti]
    assert world.introspect(info.access_token).active is True

    world.clock.now += 60
    count = world.server.consent.revoke(frank, request_id, now=world.now)
    assert count == 1
    assert world.introspect(info.access_token).active is False
    assert world.storage.get_by_cti(claims.cti).status == TokenStatus.REVOKED  # type: ignore[union-attr,arg-type]
    again = world.pending("/lock:PUT")  # refused again: a new request for the approvers
    assert again != request_id
    with pytest.raises(ApiConflict):
        world.server.consent.revoke(frank, request_id, now=world.now)
    assert actions(world, action="grant") == ["grant.created", "grant.revoked"]


def test_narrowing_the_scope_to_a_subset(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:GET,PUT")
    approval = parse_approval({"scope": "/lock:PUT"}, AifScope.parse_spec("/lock:GET,PUT"), now=world.now)
    world.server.consent.approve(world.approver("grace"), request_id, approval, now=world.now)
    info = world.token("/lock:GET,PUT")
    assert AifScope.from_cbor(info.scope) == AifScope.parse_spec("/lock:PUT")  # type: ignore[arg-type]
    assert AifScope.from_cbor(open_token(info.access_token).scope) == AifScope.parse_spec("/lock:PUT")  # type: ignore[arg-type]
    # Not a superset, not empty, not another kind.
    for scope in ("/lock:GET,PUT,DELETE", "/door:PUT", "read"):
        with pytest.raises(ApiBadRequest):
            parse_approval({"scope": scope}, AifScope.parse_spec("/lock:GET,PUT"), now=world.now)


def test_narrowing_the_time_clips_the_token_expiry(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    # Friday 09:00 Berlin now: a window until 09:20, remembered for a week.
    body = {"windows": ["Fri 08:00-09:20"], "timezone": BERLIN, "valid_until": world.now + 7 * 86400}
    approval = parse_approval(body, AifScope.parse_spec("/lock:PUT"), now=world.now)
    grant = world.server.consent.approve(world.approver("frank"), request_id, approval, now=world.now)
    assert grant.windows == ("Fri 08:00-09:20",) and grant.timezone == BERLIN
    assert world.token("/lock:PUT").expires_in == 20 * 60  # clipped to the window's end
    # Outside the window: refused, and no new request bothers the approvers.
    world.clock.now += 3600
    with pytest.raises(InvalidScope) as info:
        world.token("/lock:PUT")
    assert not isinstance(info.value, ConsentPending)
    assert info.value.description == "scope not granted at this time"
    assert len(world.storage.list_access_requests(now=world.now, status=AccessRequestStatus.PENDING)) == 0
    # "Remember until" clips too: a grant valid for 10 more minutes.
    other = world.pending("/lock:GET")
    approval = parse_approval({"valid_until": world.now + 600}, AifScope.parse_spec("/lock:GET"), now=world.now)
    world.server.consent.approve(world.approver("frank"), other, approval, now=world.now)
    assert world.token("/lock:GET").expires_in == 600
    world.clock.now += 600
    assert world.pending("/lock:GET") != other  # expired grant: ask again


@pytest.mark.parametrize(
    ("value", "expected"),
    [("30d", 30 * 86400), ("12h", 12 * 3600), ("15m", 15 * 60), ("2w", 14 * 86400), ("90s", 90)],
)
def test_approval_times_from_now_as_the_cli_takes_them(world: ConsentWorld, value: str, expected: int) -> None:
    """The HTTP API takes `30d` like `ostiary consent approve --until 30d`, besides ISO 8601 and epoch seconds."""
    approval = parse_approval({"valid_until": value}, AifScope.parse_spec("/lock:GET"), now=world.now)
    assert approval.valid_until == world.now + expected


@pytest.mark.parametrize("value", ["30", "30x", "-3d", "d", "3 d", True, 1.5, ["30d"]])
def test_approval_times_that_are_not_times(world: ConsentWorld, value: object) -> None:
    with pytest.raises(ApiBadRequest, match="valid_until must be"):
        parse_approval({"valid_until": value}, AifScope.parse_spec("/lock:GET"), now=world.now)


def test_max_lifetime_of_an_approval(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    approval = parse_approval({"max_lifetime": 120}, AifScope.parse_spec("/lock:PUT"), now=world.now)
    world.server.consent.approve(world.approver("root"), request_id, approval, now=world.now)
    assert world.token("/lock:PUT").expires_in == 120


def test_text_scopes(world: ConsentWorld) -> None:
    rpk = Confirmation(cose_key=CLIENT_ED25519.public()).to_cbor_map()
    request_id = world.pending("read write", audience="sensor-text", req_cnf=rpk)
    approval = parse_approval({"scope": ["read"]}, TextScope.parse("read write"), now=world.now)
    world.server.consent.approve(world.approver("grace"), request_id, approval, now=world.now)
    assert world.token("read write", audience="sensor-text", req_cnf=rpk).scope == "read"


# --- who may decide -----------------------------------------------------------------------------------------------


def test_who_may_approve(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    consent = world.server.consent
    with pytest.raises(ApiForbidden, match="role"):
        world.approver("alice")  # role user
    with pytest.raises(ApiForbidden, match="not an approver"):
        consent.approve(world.approver("mallory"), request_id, Approval(), now=world.now)
    with pytest.raises(ApiUnauthorized):
        consent.authenticate("frank", "wrong password", peer="192.0.2.1", now=world.now)
    with pytest.raises(ApiUnauthorized):
        consent.authenticate("nobody", "whatever", peer="192.0.2.1", now=world.now)
    assert [r.id for r in consent.list_requests(world.approver("mallory"), now=world.now)] == []
    assert [r.id for r in consent.list_requests(world.approver("grace"), now=world.now)] == [request_id]  # by group
    assert [r.id for r in consent.list_requests(world.approver("root"), now=world.now)] == [request_id]  # admin
    with pytest.raises(ApiNotFound):
        consent.get_request(world.approver("root"), "A" * 22, now=world.now)
    # A disabled approver cannot sign in any more.
    world.storage.set_user_enabled("frank", False, actor="cli:test", now=world.now)
    with pytest.raises(ApiUnauthorized):
        world.approver("frank")
    consent.deny(world.approver("grace"), request_id, note="not today", now=world.now)
    with pytest.raises(ApiConflict, match="^the access request is already denied; a request is decided once$"):
        consent.approve(world.approver("root"), request_id, Approval(), now=world.now)
    assert world.storage.get_access_request(request_id, now=world.now).note == "not today"  # type: ignore[union-attr]
    assert world.server.consent_api.poll(request_id)["status"] == "denied"


def test_a_requestor_cannot_approve_their_own_request(world: ConsentWorld) -> None:
    """A request made for a user (the subject; the authorization-code flow) is not theirs to approve, even as
    admin or as a named approver."""
    world.storage.set_user_enabled("frank", True, actor="cli:test", now=world.now)
    engine = world.server.policy
    for subject in ("frank", "root"):
        asked = AifScope.parse_spec("/lock:PUT")
        decision = engine.decide(
            AccessRequest(client_id="phone-app", audience="lock-aif", scope=asked, now=world.now, subject=subject)
        )
        with pytest.raises(ConsentPending) as info:
            world.server.consent.request_consent(
                client_id="phone-app", subject=subject, audience="lock-aif", decision=decision, now=world.now
            )
        with pytest.raises(ApiForbidden, match="own request"):
            world.server.consent.approve(world.approver(subject), info.value.request_id, Approval(), now=world.now)
        world.server.consent.approve(world.approver("grace"), info.value.request_id, Approval(), now=world.now)


def test_authentication_failures_are_rate_limited(world: ConsentWorld, caplog: pytest.LogCaptureFixture) -> None:
    from as_server.errors import TooManyRequests

    consent = world.server.consent
    for _ in range(world.server.settings.auth_failure_limit):
        with pytest.raises(ApiUnauthorized):
            consent.authenticate("frank", "guess", peer="198.51.100.7", now=world.now)
    with caplog.at_level("WARNING", logger="as_server.auth"), pytest.raises(TooManyRequests):
        consent.authenticate("frank", PASSWORDS["frank"], peer="198.51.100.7", now=world.now)
    # frank is an approver, not a client: the log says so.
    assert "rate limit reached for user='frank' peer='198.51.100.7'" in caplog.text


# --- expiry -------------------------------------------------------------------------------------------------------


def test_requests_expire_if_nobody_decides(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    world.clock.now += world.server.settings.access_request_lifetime
    view = world.server.consent_api.poll(request_id)
    assert view["status"] == "expired" and view["decided_at"] == NOW + world.server.settings.access_request_lifetime
    with pytest.raises(ApiConflict):
        world.server.consent.approve(world.approver("frank"), request_id, Approval(), now=world.now)
    assert world.pending("/lock:PUT") != request_id  # an expired request is not merged into
    assert actions(world, action="access_request.expired") == ["access_request.expired"]


def test_listing_expires_what_is_due(world: ConsentWorld) -> None:
    first = world.pending("/lock:PUT")
    world.clock.now += 10
    second = world.pending("/lock:GET")
    world.clock.now = NOW + world.server.settings.access_request_lifetime
    root = world.approver("root")
    pending = world.server.consent.list_requests(root, now=world.now, status=AccessRequestStatus.PENDING)
    assert [r.id for r in pending] == [second]
    expired = world.storage.list_access_requests(now=world.now, status=AccessRequestStatus.EXPIRED)
    assert [r.id for r in expired] == [first]
    assert world.storage.expire_access_requests(now=world.now) == []  # nothing left to do


# --- users and clients switched off -------------------------------------------------------------------------------


def test_disabling_the_client_revokes_its_tokens(world: ConsentWorld) -> None:
    info = world.token("/battery:GET")
    assert world.introspect(info.access_token).active is True
    assert world.storage.set_client_enabled("phone-app", False, actor="cli:root", now=world.now) == 1
    assert world.introspect(info.access_token).active is False
    assert world.storage.set_client_enabled("phone-app", True, actor="cli:root", now=world.now) == 0
    assert world.introspect(info.access_token).active is False  # revoked stays revoked
    assert actions(world, action="client") == ["client.disabled", "client.enabled"]


def test_a_refusal_before_authentication_is_audited_as_anonymous(world: ConsentWorld) -> None:
    """The actor of an audit entry is who acted: a request whose client failed to authenticate is ``anonymous``,
    with the client id it claimed; a refusal after authentication names the client."""
    with pytest.raises(InvalidClient):
        world.token("/lock:PUT", client_id="nobody-app")
    with pytest.raises(InvalidScope):
        world.token("/nothing:GET")
    world.server.audit_log.flush()
    refused = world.storage.list_audit(AuditQuery(action="token.refused", limit=10))
    assert {(e.actor, e.client_id, e.detail.split(":")[0]) for e in refused} == {
        ("anonymous", "nobody-app", "invalid_client"),
        ("client:phone-app", "phone-app", "invalid_scope"),
    }


def test_the_audit_trail_of_the_whole_flow(world: ConsentWorld) -> None:
    request_id = world.pending("/lock:PUT")
    world.pending("/lock:PUT")
    grant = world.server.consent.approve(world.approver("frank"), request_id, Approval(), now=world.now)
    world.token("/lock:PUT")
    world.server.consent.revoke(world.approver("root"), grant.id, now=world.now)
    world.server.audit_log.flush()
    entries = [e for e in world.storage.list_audit(AuditQuery(client_id="phone-app", limit=100))]
    by_action = {e.action: e for e in entries}
    assert {
        "token.refused",
        "access_request.created",
        "access_request.merged",
        "access_request.approved",
        "grant.created",
        "token.issued",
        "grant.revoked",
    } <= set(by_action)
    assert by_action["access_request.approved"].actor == "user:frank"
    assert by_action["grant.revoked"].actor == "user:root" and by_action["grant.revoked"].detail == "1 tokens revoked"
    assert by_action["token.issued"].grant_id == request_id and "now revoked" in by_action["token.issued"].detail
    assert "consent" in by_action["token.refused"].detail and by_action["token.refused"].scope == "/lock:PUT"
    assert {e.request_id for e in entries if e.action.startswith("access_request")} == {request_id}
    # Filters: by actor, by user (as actor), by action family.
    by_frank = {e.action for e in world.storage.list_audit(AuditQuery(user="frank"))}
    assert by_frank == {"user.created", "access_request.approved", "grant.created"}
    assert [e.action for e in world.storage.list_audit(AuditQuery(actor="user:root"))] == ["grant.revoked"]


# --- storage guarantees -------------------------------------------------------------------------------------------


def _request(n: int = 0, **changes: object) -> ConsentRequest:
    fields: dict[str, object] = {
        "id": f"req{n:019d}",
        "client_id": "phone-app",
        "audience": "lock-aif",
        "scope": AifScope.parse_spec("/lock:PUT").to_cbor(),
        "approvers": ("user:frank",),
        "created_at": NOW,
        "updated_at": NOW,
        "expires_at": NOW + 3600,
    }
    fields.update(changes)
    return ConsentRequest(**fields)  # type: ignore[arg-type]


def test_a_failed_decision_changes_nothing(storage: Storage) -> None:
    """Approval, grant and audit entries are one transaction: a grant that cannot be stored leaves the request
    pending and the audit log without an approval."""
    first, _ = storage.submit_access_request(_request(1), actor="client:phone-app")
    second, _ = storage.submit_access_request(_request(2, subject="alice"), actor="client:phone-app")
    grant = Grant(id=first.id, request_id=first.id, client_id="phone-app", audience="lock-aif", scope=first.scope)
    storage.approve_access_request(first.id, grant, actor="user:frank", now=NOW)
    with pytest.raises(DuplicateError):  # the same grant id again
        storage.approve_access_request(second.id, grant, actor="user:frank", now=NOW)
    assert storage.get_access_request(second.id, now=NOW).status == AccessRequestStatus.PENDING  # type: ignore[union-attr]
    assert [e.request_id for e in storage.list_audit(AuditQuery(action="access_request.approved"))] == [first.id]
    with pytest.raises(StateError):
        storage.deny_access_request(first.id, actor="user:frank", now=NOW)
    with pytest.raises(NotFoundError):
        storage.deny_access_request("nothing", actor="user:frank", now=NOW)
    with pytest.raises(NotFoundError):
        storage.revoke_grant("nothing", actor="user:frank", now=NOW)


def test_grants_of_disabled_users_do_not_count(storage: Storage) -> None:
    storage.add_user(User(name="alice"), actor="cli:test", now=NOW)
    request, _ = storage.submit_access_request(_request(1, subject="alice"), actor="client:phone-app")
    grant = Grant(id=request.id, client_id="phone-app", subject="alice", audience="lock-aif", scope=request.scope)
    storage.approve_access_request(request.id, grant, actor="user:frank", now=NOW)
    version = storage.registry_version()
    assert [g.id for g in storage.active_grants()] == [request.id]
    storage.set_user_enabled("alice", False, actor="cli:test", now=NOW)
    assert storage.registry_version() != version
    assert storage.active_grants() == ()
    storage.set_user_enabled("alice", True, actor="cli:test", now=NOW)
    assert [g.id for g in storage.active_grants()] == [request.id]


def test_one_pending_request_per_key_across_processes(sql_url: str, master_key: MasterKey, open_sql: OpenSql) -> None:
    """Two AS processes recording the same request at once: one request, asked twice (the unique pending key)."""
    first, second = open_sql(sql_url, master_key), open_sql(sql_url, master_key, create=False)
    barrier = threading.Barrier(2)
    results: list[tuple[ConsentRequest, bool]] = []

    def submit(storage: Storage, n: int) -> None:
        barrier.wait()
        results.append(storage.submit_access_request(_request(n), actor="client:phone-app"))

    threads = [threading.Thread(target=submit, args=(s, n)) for n, s in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(merged for _, merged in results) == [False, True]
    assert {r.id for r, _ in results} == {r.id for r, merged in results if not merged}
    (stored,) = first.list_access_requests(now=NOW)
    assert stored.request_count == 2


# --- administrators' database rules (grants without a request) ----------------------------------------------------


def test_an_administrator_grants_directly_and_revokes(world: ConsentWorld) -> None:
    consent = world.server.consent
    root = world.approver("root")
    put = AifScope.parse_spec("/lock:PUT")
    grant = consent.grant_directly(
        root, client_id="phone-app", subject=None, audience="lock-aif", scope=put, approval=Approval(), now=world.now
    )
    assert grant.created_by == "user:root" and grant.status == GrantStatus.ACTIVE
    request = world.storage.get_access_request(grant.id, now=world.now)
    assert request is not None and request.status == AccessRequestStatus.APPROVED
    assert request.reason == "granted directly by user:root"
    info = world.token("/lock:PUT")  # no access request: the database rule permits it
    claims = open_token(info.access_token)
    assert AifScope.from_cbor(claims.scope) == put  # type: ignore[arg-type]
    assert consent.revoke(root, grant.id, now=world.now) == 1
    assert world.introspect(info.access_token).active is False
    assert actions(world, action="grant") == ["grant.created", "grant.revoked"]


def test_a_direct_grant_approves_the_pending_request_it_covers(world: ConsentWorld) -> None:
    pending = world.pending("/lock:PUT")
    grant = world.server.consent.grant_directly(
        world.approver("root"),
        client_id="phone-app",
        subject=None,
        audience="lock-aif",
        scope=AifScope.parse_spec("/lock:PUT"),
        approval=Approval(),
        now=world.now,
    )
    assert grant.id == pending
    assert world.token("/lock:PUT").access_token


def test_only_administrators_grant_directly_and_nothing_is_written_on_refusal(world: ConsentWorld) -> None:
    consent = world.server.consent
    put = AifScope.parse_spec("/lock:PUT")
    kwargs = {"subject": None, "scope": put, "approval": Approval(), "now": world.now}
    with pytest.raises(ApiForbidden, match="administrators"):
        consent.grant_directly(world.approver("frank"), client_id="phone-app", audience="lock-aif", **kwargs)  # type: ignore[arg-type]
    root = world.approver("root")
    with pytest.raises(ApiBadRequest, match="^no client 'nobody'$"):
        consent.grant_directly(root, client_id="nobody", audience="lock-aif", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ApiBadRequest, match="^no resource server 'nowhere'$"):
        consent.grant_directly(root, client_id="phone-app", audience="nowhere", **kwargs)  # type: ignore[arg-type]
    late = Approval(valid_from=world.now + 100, valid_until=world.now + 50)
    with pytest.raises(ApiBadRequest):
        consent.grant_directly(
            root, client_id="phone-app", subject=None, audience="lock-aif", scope=put, approval=late, now=world.now
        )
    assert consent.list_requests(root, now=world.now, status=None) == []


def test_queued_issuance_leaves_a_consent_request_to_a_thread(world: ConsentWorld) -> None:
    """TokenEndpoint.handle_queued (the CoAP event loop's path) writes nothing itself: a request the policy refers
    to consent is declined before its access request is recorded; handle() then records it as usual."""
    request = TokenRequest(audience="lock-aif", scope=aif("/lock:PUT"))
    creds = ClientCredentials("phone-app", PHONE_SECRET.encode(), METHOD_BASIC)
    endpoint = world.server.token_endpoint
    assert endpoint.handle_queued(request, credentials=creds, peer=PEER) is None
    assert list(world.storage.list_access_requests(now=NOW)) == []
    request_id = world.pending()
    assert [r.id for r in world.storage.list_access_requests(now=NOW)] == [request_id]
