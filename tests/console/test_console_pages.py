"""The manager console through Flask's test client (issue #6): sign-in and sessions, CSRF, every page's empty state,
pagination, the approval form's narrowing, sites, roles, the JSON API twins, CSV export and a fuzz of the forms."""

from __future__ import annotations

import base64
import json
import re

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from as_server.models import User, UserRole
from as_server.storage.base import AuditQuery
from tests.as_server.consent_fixtures import PASSWORDS
from tests.as_server.transport.harness import assert_no_traceback
from tests.console.helpers import console_world, csrf_of, post_form, sign_in

PAGES = ["/console/", "/console/requests", "/console/grants", "/console/tokens", "/console/locks", "/console/clients"]
PAGES += ["/console/policy", "/console/audit"]


def basic(name: str, password: str | None = None) -> dict[str, str]:
    raw = f"{name}:{password or PASSWORDS[name]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def test_signin_sets_a_sealed_strict_httponly_cookie_and_signout_ends_it() -> None:
    with console_world() as (_, client):
        assert client.get("/console/").status_code == 303  # to the sign-in page
        page = client.get("/console/signin")
        assert page.status_code == 200 and b"<script" not in page.data
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        response = client.post(
            "/console/signin",
            data={"csrf_token": csrf_of(page.data), "username": "frank", "password": PASSWORDS["frank"]},
        )
        assert response.status_code == 303
        cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("ostiary_console="))
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain http on loopback: development (see transport.console)
        assert b"Dashboard" in client.get("/console/").data
        signout = post_form(client, "/console/", "/console/signout")
        assert signout.status_code == 303  # type: ignore[attr-defined]
        assert client.get("/console/").status_code == 303


def test_wrong_password_user_role_and_csrf_less_signin_are_refused() -> None:
    with console_world() as (_, client):
        assert sign_in(client, "frank", "nope") == 400
        assert sign_in(client, "alice") == 403  # role user
        response = client.post("/console/signin", data={"username": "frank", "password": PASSWORDS["frank"]})
        assert response.status_code == 403
        assert client.get("/console/").status_code == 303


def test_signin_is_rate_limited() -> None:
    with console_world() as (world, client):
        limit = world.server.settings.signin_failure_limit
        statuses = [sign_in(client, "frank", "wrong") for _ in range(limit + 1)]
        assert statuses[-1] == 429 and set(statuses[:-1]) == {400}


def test_posts_without_a_valid_csrf_token_get_403_pages() -> None:
    with console_world() as (world, client):
        request_id = world.pending()
        assert sign_in(client, "frank") == 303
        for data in ({}, {"csrf_token": "x" * 40}, {"csrf_token": ""}):
            response = client.post(f"/console/requests/{request_id}/approve", data=data)
            assert response.status_code == 403
            assert b"expired" in response.data and b"text/html" in response.headers["Content-Type"].encode()
            assert_no_traceback(response.data)
        assert world.server.storage.get_access_request(request_id, now=world.now).status.value == "pending"


def test_idle_timeout_ends_the_session() -> None:
    with console_world() as (world, client):
        assert sign_in(client, "frank") == 303
        world.clock.now += world.server.settings.console_idle_timeout - 1
        assert client.get("/console/").status_code == 200  # activity slides the timeout
        world.clock.now += world.server.settings.console_idle_timeout - 1
        assert client.get("/console/").status_code == 200
        world.clock.now += world.server.settings.console_idle_timeout + 1
        assert client.get("/console/").status_code == 303


def test_disabling_a_user_ends_their_session() -> None:
    with console_world() as (world, client):
        assert sign_in(client, "frank") == 303
        world.storage.set_user_enabled("frank", False, actor="cli:test", now=world.now)
        assert client.get("/console/").status_code == 303


def test_every_page_has_an_empty_state_for_a_manager_without_sites() -> None:
    with console_world() as (_, client):
        assert sign_in(client, "mallory") == 303
        expected = {
            "/console/": b"Nothing waits for your decision",
            "/console/requests": b"No pending access requests",
            "/console/grants": b"No grants match",
            "/console/tokens": b"No tokens match in your sites",
            "/console/locks": b"No locks in your sites",
            "/console/audit": b"No entries match",
        }
        for path, text in expected.items():
            response = client.get(path)
            assert response.status_code == 200, path
            assert text in response.data, path
        assert b"No locks in your sites" in client.get("/console/").data


def test_admin_only_pages_and_actions_refuse_managers() -> None:
    with console_world() as (_, client):
        assert sign_in(client, "frank") == 303
        assert client.get("/console/users").status_code == 403
        assert b"Register a client" not in client.get("/console/clients").data
        response = post_form(client, "/console/clients", "/console/clients", {"client_id": "evil"})
        assert response.status_code == 403  # type: ignore[attr-defined]
        response = post_form(client, "/console/", "/console/users/frank/sites", {"sites": "*"})
        assert response.status_code == 403  # type: ignore[attr-defined]


def test_approve_with_a_narrower_window_then_the_token_respects_it() -> None:
    with console_world() as (world, client):
        request_id = world.pending("/lock:GET,PUT")
        assert sign_in(client, "frank") == 303
        listing = client.get("/console/requests")
        assert request_id.encode() in listing.data and b"/lock:GET,PUT" in listing.data
        # NOW is Friday 09:00 in Berlin: a window closing at 09:30 clips the token's exp to 30 minutes.
        form = {"scope": "/lock:PUT", "windows": "Mon-Fri 09:00-09:30", "timezone": "Europe/Berlin"}
        response = post_form(client, f"/console/requests/{request_id}", f"/console/requests/{request_id}/approve", form)
        assert response.status_code == 303  # type: ignore[attr-defined]
        page = client.get(f"/console/requests/{request_id}?done=approved")
        assert b"The access request is approved" in page.data and b"Mon-Fri 09:00-09:30" in page.data
        info = world.token("/lock:PUT")
        assert info.expires_in is not None and info.expires_in <= 1800
        actions = [e.action for e in world.storage.list_audit(AuditQuery(action="access_request"))]
        assert "access_request.approved" in actions


def test_an_invalid_narrowing_shows_the_form_again_with_the_reason() -> None:
    with console_world() as (world, client):
        request_id = world.pending("/lock:PUT")
        assert sign_in(client, "frank") == 303
        path = f"/console/requests/{request_id}"
        for form, text in (
            ({"scope": "/lock:GET,PUT,DELETE"}, b"subset"),
            ({"windows": "someday"}, b"window"),
            ({"windows": "Mon 09:00-10:00", "timezone": "Mars/Olympus"}, b"time zone"),
            ({"max_lifetime": "-5"}, b"max_lifetime"),
            ({"valid_until": "2001-01-01T00:00"}, b"future"),
        ):
            response = post_form(client, path, path + "/approve", form)
            assert response.status_code == 400, form  # type: ignore[attr-defined]
            assert text in response.data, form  # type: ignore[attr-defined]
        assert world.storage.get_access_request(request_id, now=world.now).status.value == "pending"


def test_deny_with_a_reason_and_other_managers_are_refused() -> None:
    with console_world() as (world, client):
        request_id = world.pending("/lock:PUT")
        assert sign_in(client, "mallory") == 303  # a manager, but not an approver of this request
        assert client.get(f"/console/requests/{request_id}").status_code == 403
        response = post_form(client, "/console/", f"/console/requests/{request_id}/deny", {"reason": "no"})
        assert response.status_code == 403  # type: ignore[attr-defined]
        post_form(client, "/console/", "/console/signout")
        assert sign_in(client, "grace") == 303  # approver through the facility group
        path = f"/console/requests/{request_id}"
        response = post_form(client, path, path + "/deny", {"reason": "not on weekends"})
        assert response.status_code == 303  # type: ignore[attr-defined]
        decided = world.storage.get_access_request(request_id, now=world.now)
        assert decided.status.value == "denied" and decided.note == "not on weekends"


def test_sites_scope_tokens_and_revocation_makes_introspection_inactive() -> None:
    with console_world() as (world, client):
        info = world.token("/battery:GET")  # permitted by the file: a token of lock-aif
        world.storage.set_manager_sites("frank", ["lock-*"], actor="cli:test", now=world.now)
        world.storage.set_manager_sites("mallory", ["building-b/*"], actor="cli:test", now=world.now)
        token = world.storage.list_tokens(audience="lock-aif", limit=1)[0]
        assert sign_in(client, "mallory") == 303
        assert b"No tokens match" in client.get("/console/tokens").data
        response = post_form(client, "/console/", f"/console/tokens/{token.cti.hex()}/revoke")
        assert response.status_code == 404  # type: ignore[attr-defined]
        post_form(client, "/console/", "/console/signout")
        assert sign_in(client, "frank") == 303
        listing = client.get("/console/tokens?lock=lock-aif")
        assert token.cti.hex().encode() in listing.data
        assert b"lock-aif" in client.get("/console/locks").data
        assert b"lock-nested" in client.get("/console/locks").data  # lock-* matches every test lock
        response = post_form(client, "/console/tokens", f"/console/tokens/{token.cti.hex()}/revoke")
        assert response.status_code == 303  # type: ignore[attr-defined]
        assert world.introspect(info.access_token).active is False
        again = post_form(client, "/console/tokens", f"/console/tokens/{token.cti.hex()}/revoke")
        assert again.status_code == 409  # type: ignore[attr-defined]


def test_grants_search_and_revoke() -> None:
    with console_world() as (world, client):
        request_id = world.pending("/lock:PUT")
        world.server.consent.approve(
            world.approver("frank"),
            request_id,
            __import__("as_server.consent", fromlist=["Approval"]).Approval(),
            now=world.now,
        )
        info = world.token("/lock:PUT")
        assert sign_in(client, "frank") == 303
        assert b"phone-app" in client.get("/console/grants?q=phone").data
        assert b"No grants match" in client.get("/console/grants?q=nothing-like-this").data
        response = post_form(client, "/console/grants", f"/console/grants/{request_id}/revoke")
        assert response.status_code == 303  # type: ignore[attr-defined]
        assert world.introspect(info.access_token).active is False


def test_admin_registers_clients_and_locks_with_secrets_shown_once() -> None:
    with console_world() as (world, client):
        assert sign_in(client, "root") == 303
        response = post_form(
            client, "/console/clients", "/console/clients", {"client_id": "door-app", "audiences": "lock-aif"}
        )
        assert response.status_code == 200  # type: ignore[attr-defined]
        secret = re.search(rb'<code id="secret">([^<]+)</code>', response.data)  # type: ignore[attr-defined]
        assert secret is not None
        assert secret.group(1) not in client.get("/console/clients").data  # shown once
        rotated = post_form(client, "/console/clients", "/console/clients/door-app/rotate")
        new = re.search(rb'<code id="secret">([^<]+)</code>', rotated.data)  # type: ignore[attr-defined]
        assert new is not None and new.group(1) != secret.group(1)
        duplicate = post_form(client, "/console/clients", "/console/clients", {"client_id": "door-app"})
        assert duplicate.status_code == 409  # type: ignore[attr-defined]
        glob = post_form(
            client, "/console/clients", "/console/clients", {"client_id": "glob-app", "audiences": "lock-aif L1-*"}
        )
        assert glob.status_code == 400 and b"exact lock names, not patterns: L1-*" in glob.data  # type: ignore[attr-defined]
        assert world.storage.get_client("glob-app") is None
        disabled = post_form(client, "/console/clients", "/console/clients/door-app/disable")
        assert disabled.status_code == 303  # type: ignore[attr-defined]
        assert world.storage.get_client("door-app").enabled is False
        lock = post_form(client, "/console/locks", "/console/locks", {"audience": "building-b/door-1"})
        assert lock.status_code == 200 and b'id="secret"' in lock.data  # type: ignore[attr-defined]
        assert world.storage.get_resource_server("building-b/door-1") is not None
        # A lifetime of 12 digits was read as its first 10 and accepted; "²" passes str.isdigit() but not int().
        for lifetime in ("100000000000", "\u00b2", "2147483648", "0"):
            refused = post_form(
                client, "/console/locks", "/console/locks", {"audience": "building-b/door-2", "max_lifetime": lifetime}
            )
            assert refused.status_code == 400, lifetime  # type: ignore[attr-defined]
            assert b"max lifetime must be a positive number of seconds" in refused.data  # type: ignore[attr-defined]
        assert world.storage.get_resource_server("building-b/door-2") is None


def test_admin_manages_users_groups_and_sites() -> None:
    with console_world() as (world, client):
        assert sign_in(client, "root") == 303
        response = post_form(
            client, "/console/users", "/console/users", {"name": "nina", "role": "manager", "password": "pw-nina-1"}
        )
        assert response.status_code == 303  # type: ignore[attr-defined]
        post_form(client, "/console/users", "/console/users/nina/sites", {"sites": "building-b/* front-door"})
        assert world.storage.manager_sites("nina") == ("building-b/*", "front-door")
        post_form(client, "/console/users", "/console/groups", {"name": "night"})
        post_form(client, "/console/users", "/console/groups/members", {"group": "night", "user": "nina"})
        assert "night" in world.storage.groups_of("nina")
        post_form(client, "/console/users", "/console/users/nina/disable")
        assert world.storage.get_user("nina").enabled is False
        self_disable = post_form(client, "/console/users", "/console/users/root/disable")
        assert self_disable.status_code == 409  # type: ignore[attr-defined]


def test_pagination_of_users_and_audit() -> None:
    with console_world() as (world, client):
        for i in range(40):
            world.storage.add_user(User(name=f"u{i:02d}", role=UserRole.USER), actor="cli:test", now=world.now)
        assert sign_in(client, "root") == 303
        first = client.get("/console/users")
        assert b'rel="next"' in first.data and b'rel="prev"' not in first.data
        second = client.get("/console/users?page=2")
        assert b'rel="prev"' in second.data and b"u39" in second.data
        assert client.get("/console/users?page=999999").status_code == 200
        audit = client.get("/console/audit?action=user")
        assert b'rel="next"' in audit.data
        assert client.get("/console/audit?action=user&page=2").status_code == 200


def test_policy_page_shows_the_source_and_explains() -> None:
    with console_world() as (_, client):
        assert sign_in(client, "frank") == 303
        page = client.get("/console/policy")
        assert page.status_code == 200
        explained = client.get("/console/policy?client=phone-app&audience=lock-aif&scope=/lock:PUT")
        assert b"consent required" in explained.data and b"ask-facility" in explained.data
        bad = client.get("/console/policy?client=phone-app&audience=lock-aif&scope=/lock:FLY")
        assert bad.status_code == 400 and b"malformed" in bad.data


def test_audit_csv_export() -> None:
    with console_world() as (world, client):
        world.pending("/lock:PUT")
        assert sign_in(client, "root") == 303
        response = client.get("/console/audit.csv?action=access_request")
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/csv")
        lines = response.data.decode().splitlines()
        assert lines[0].startswith("time,action,actor") and any("access_request.created" in line for line in lines)


def test_unknown_pages_and_errors_are_html_without_traceback() -> None:
    with console_world() as (_, client):
        assert sign_in(client, "frank") == 303
        response = client.get("/console/nowhere")
        assert response.status_code == 404 and b"There is no such page" in response.data
        assert client.get("/console/requests/" + "A" * 22).status_code == 404
        assert client.get("/console/requests?status=bogus").status_code == 400


def test_json_api_mirrors_the_console_with_the_same_checks() -> None:
    with console_world() as (world, client):
        world.token("/battery:GET")
        world.storage.set_manager_sites("frank", ["lock-aif"], actor="cli:test", now=world.now)
        listed = client.get("/console/api/tokens", headers=basic("frank"))
        assert listed.status_code == 200
        tokens = json.loads(listed.data)["tokens"]
        assert [t["audience"] for t in tokens] == ["lock-aif"]
        assert json.loads(client.get("/console/api/tokens", headers=basic("mallory")).data)["tokens"] == []
        assert client.get("/console/api/tokens").status_code == 401
        assert client.get("/console/api/tokens", headers=basic("alice")).status_code == 403
        refused = client.put("/console/api/users/mallory/sites", json={"sites": ["*"]}, headers=basic("frank"))
        assert refused.status_code == 403
        ok = client.put("/console/api/users/mallory/sites", json={"sites": ["lock-*"]}, headers=basic("root"))
        assert ok.status_code == 200 and json.loads(ok.data)["sites"] == ["lock-*"]
        revoked = client.post(f"/console/api/tokens/{tokens[0]['cti']}/revoke", headers=basic("mallory"))
        assert revoked.status_code == 200 and json.loads(revoked.data)["status"] == "revoked"
        added = client.post("/console/api/clients", json={"client_id": "x-app"}, headers=basic("root"))
        assert added.status_code == 200 and json.loads(added.data)["client_secret"]


_text = st.text(st.characters(codec="utf-8"), max_size=80)
_FORMS = [
    ("approve", ["scope", "windows", "timezone", "valid_from", "valid_until", "max_lifetime", "note"]),
    ("deny", ["reason"]),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(["approve", "deny", "tokens", "policy", "audit", "grants", "requests", "client", "user"]),
    values=st.dictionaries(
        st.sampled_from(
            ["scope", "windows", "timezone", "valid_until", "max_lifetime", "note", "reason", "client", "user"]
            + ["lock", "audience", "since", "until", "action", "q", "status", "page", "at", "groups", "client_id"]
            + ["name", "role", "password", "audiences"]
        ),
        _text,
        max_size=6,
    ),
)
@example(which="tokens", values={"page": "\u00b9"})  # "¹".isdigit() is true, int("¹") fails: was a 500
@example(which="approve", values={"max_lifetime": "\u00b2\u00b3"})
def test_console_forms_never_answer_5xx(which: str, values: dict[str, str]) -> None:
    with console_world() as (world, client):
        request_id = world.pending("/lock:PUT")
        assert sign_in(client, "root") == 303
        token = csrf_of(client.get("/console/").data)
        if which in ("approve", "deny"):
            response = client.post(f"/console/requests/{request_id}/{which}", data={"csrf_token": token, **values})
        elif which == "client":
            response = client.post("/console/clients", data={"csrf_token": token, **values})
        elif which == "user":
            response = client.post("/console/users", data={"csrf_token": token, **values})
        else:
            path = {"tokens": "/console/tokens", "policy": "/console/policy", "audit": "/console/audit"}.get(which)
            path = path or f"/console/{which}"
            response = client.get(path, query_string=values)
        assert response.status_code < 500, (which, values, response.data[:300])
        assert_no_traceback(response.data)
