"""The console's devices page and its JSON twin (issue #7, "Ownership"): claim by enrolment id (typed leniently,
first claim wins, no site revealed), managers act only for their sites, a mistyped id is explained, release
returns the device to unclaimed and revokes the lock's operational credentials at the AS, CSRF, and the page of a
deployment without any factory batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask.testing import FlaskClient

from ace_core.lwm2m.identifiers import make_endpoint, make_enrolment_id, make_psk_identity, make_serial
from ace_core.registry import AceProfile
from as_server.bootstrap.device_db import DEVICE_DB_FILE, SqliteDeviceStore
from as_server.bootstrap.devices import Assignment, BatchRecord, FactoryDevice
from as_server.bootstrap.operational import OperationalCredentials, register
from as_server.console import DeviceRegistry
from as_server.models import IssuedToken
from as_server.sealing import MasterKey
from as_server.storage.base import AuditQuery
from tests.as_server.consent_fixtures import ConsentWorld
from tests.as_server.transport.harness import assert_no_traceback
from tests.console.helpers import console_world, post_form, sign_in
from tests.console.test_console_pages import basic

MASTER_KEY_RAW = bytes(range(32))
BATCH = "L1-20260323-153012-0000"


def factory_device(n: int, site: str | None = None) -> FactoryDevice:
    """Deterministic device ``n``."""
    seed = n.to_bytes(4, "big")
    serial = make_serial("L1", n)
    return FactoryDevice(
        serial=serial,
        model="L1",
        endpoint=make_endpoint("ostiary", serial),
        psk_identity=make_psk_identity(seed + bytes(6)),
        psk=seed * 4,
        enrolment_id=make_enrolment_id(seed + b"\x01" * 6),
        batch_id=BATCH,
        site=site,
    )


#: Two unclaimed devices, one of mallory's sites (building-b/*), one of frank's (building-a).
DEVICES = [factory_device(1), factory_device(2), factory_device(3, "building-b/east"), factory_device(4, "building-a")]


def record_batch(path: Path, devices: list[FactoryDevice], *, now: int) -> None:
    """What ``ostiary factory batch`` leaves in the device store: a completed batch of ``devices``."""
    with SqliteDeviceStore(path, MasterKey(MASTER_KEY_RAW)) as store:
        store.add_batch(
            BatchRecord(batch_id=BATCH, model="L1", count=len(devices), site=None, created_at=now), b"k" * 32
        )
        store.add_many(devices, now=now)
        store.complete_batch(BATCH)


@contextmanager
def device_world(tmp_path: Path) -> Iterator[tuple[ConsentWorld, FlaskClient, SqliteDeviceStore]]:
    """The console world with a recorded batch of :data:`DEVICES`; frank manages building-a, mallory building-b/*.
    Also yields a store on the same file, to check what the console changed."""
    with console_world() as (world, client):
        path = tmp_path / DEVICE_DB_FILE
        record_batch(path, DEVICES, now=world.now)
        registry = DeviceRegistry(path, lambda: MasterKey(MASTER_KEY_RAW))
        world.server.console.device_registry = registry
        world.storage.set_manager_sites("frank", ["building-a"], actor="cli:test", now=world.now)
        world.storage.set_manager_sites("mallory", ["building-b/*"], actor="cli:test", now=world.now)
        check = SqliteDeviceStore(path, MasterKey(MASTER_KEY_RAW))
        try:
            yield world, client, check
        finally:
            check.close()
            registry.close()


def typed_loosely(enrolment_id: str) -> str:
    """How an installer might type it: lower case, spaces instead of hyphens."""
    return " " + enrolment_id.lower().replace("-", " ") + " "


def test_an_empty_device_store_says_no_batch_was_recorded(tmp_path: Path) -> None:
    """`ostiary as serve` creates the store at start (its bootstrap server opens it), so an admin can see an empty
    one: the page says what fills it, as when there is no store at all."""
    with console_world() as (world, client):
        path = tmp_path / DEVICE_DB_FILE
        SqliteDeviceStore(path, MasterKey(MASTER_KEY_RAW)).close()  # created, no batch
        registry = DeviceRegistry(path, lambda: MasterKey(MASTER_KEY_RAW))
        world.server.console.device_registry = registry
        assert sign_in(client, "root") == 303
        page = client.get("/console/devices")
        assert page.status_code == 200 and b"No factory batch was recorded yet" in page.data
        registry.close()


def test_without_a_factory_batch_the_page_says_so_and_creates_nothing() -> None:
    with console_world() as (world, client):
        path = world.server.console.device_registry.path  # type: ignore[union-attr]
        assert sign_in(client, "root") == 303
        page = client.get("/console/devices")
        assert page.status_code == 200 and b"No factory batch was recorded yet" in page.data
        assert b'href="/console/devices"' in page.data  # in the navigation
        claim = post_form(client, "/console/devices", "/console/devices/claim", {"enrolment_id": "x", "site": "a"})
        assert claim.status_code in (400, 409)  # type: ignore[attr-defined]
        api = client.get("/console/api/devices", headers=basic("root"))
        assert api.status_code == 200 and json.loads(api.data) == {
            "recorded": False,
            "devices": [],
            "page": 1,
            "has_next": False,
        }
        good = make_enrolment_id(bytes(10))
        refused = client.post(
            "/console/api/devices/claim", json={"enrolment_id": good, "site": "a"}, headers=basic("root")
        )
        assert refused.status_code == 409 and b"No factory batch" in refused.data
        assert not path.exists()


def test_a_manager_claims_a_device_typed_loosely_and_a_second_claim_is_refused(tmp_path: Path) -> None:
    with device_world(tmp_path) as (world, client, store):
        assert sign_in(client, "frank") == 303
        page = client.get("/console/devices")
        assert page.status_code == 200
        assert b"<option selected>building-a</option>" in page.data or b"<option>building-a</option>" in page.data
        assert b"L1-00000004" in page.data  # pre-assigned to building-a
        assert b"L1-00000001" not in page.data and b"L1-00000003" not in page.data  # unclaimed; another site
        form = {"enrolment_id": typed_loosely(DEVICES[0].enrolment_id), "site": "building-a"}
        claimed = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert claimed.status_code == 200  # type: ignore[attr-defined]
        assert b"Claimed L1-00000001" in claimed.data and b"for site building-a" in claimed.data  # type: ignore[attr-defined]
        record = store.get("L1-00000001")
        assert record is not None and record.site == "building-a" and record.assignment is Assignment.CLAIMED
        assert b"L1-00000001" in client.get("/console/devices").data
        audit = world.storage.list_audit(AuditQuery(action="device.claimed"))
        assert [(e.actor, e.audience) for e in audit] == [("user:frank", "building-a")]

        again = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert again.status_code == 409 and b"already claimed" in again.data  # type: ignore[attr-defined]
        post_form(client, "/console/devices", "/console/signout")
        assert sign_in(client, "mallory") == 303
        form = {"enrolment_id": DEVICES[0].enrolment_id, "site_other": "building-b/west"}
        theirs = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert theirs.status_code == 409 and b"already claimed" in theirs.data  # type: ignore[attr-defined]
        assert b"building-a" not in theirs.data  # type: ignore[attr-defined]  # which site won is not said
        assert store.get("L1-00000001").site == "building-a"  # type: ignore[union-attr]


def test_a_manager_cannot_claim_into_or_release_from_a_site_they_do_not_manage(tmp_path: Path) -> None:
    with device_world(tmp_path) as (_, client, store):
        assert sign_in(client, "frank") == 303
        form = {"enrolment_id": DEVICES[1].enrolment_id, "site_other": "building-b/west", "site": "building-a"}
        refused = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert refused.status_code == 403 and b"You do not manage this site" in refused.data  # type: ignore[attr-defined]
        assert store.get("L1-00000002").site is None  # type: ignore[union-attr]
        assert client.get("/console/devices/L1-00000003/release").status_code == 404  # mallory's device
        release = post_form(client, "/console/devices", "/console/devices/L1-00000003/release")
        assert release.status_code == 404  # type: ignore[attr-defined]
        unclaimed = post_form(client, "/console/devices", "/console/devices/L1-00000002/release")
        assert unclaimed.status_code == 404  # type: ignore[attr-defined]
        assert store.get("L1-00000003").site == "building-b/east"  # type: ignore[union-attr]
        assert b"L1-00000003" not in client.get("/console/devices?site=building-b/east").data


def test_a_mistyped_enrolment_id_is_explained_and_the_form_kept(tmp_path: Path) -> None:
    with device_world(tmp_path) as (_, client, store):
        assert sign_in(client, "frank") == 303
        good = DEVICES[1].enrolment_id
        i = next(i for i in range(len(good) - 1) if "-" not in good[i : i + 2] and good[i] != good[i + 1])
        swapped = good[:i] + good[i + 1] + good[i] + good[i + 2 :]
        for typed, text in (
            (swapped, b"a character is mistyped or two are swapped"),
            (good[:-2], b"four groups of four"),
            (good[:-1] + "U", b"not used in enrolment ids"),
        ):
            form = {"enrolment_id": typed, "site": "building-a"}
            response = post_form(client, "/console/devices", "/console/devices/claim", form)
            assert response.status_code == 400, typed  # type: ignore[attr-defined]
            assert b"Not an enrolment id" in response.data and text in response.data, typed  # type: ignore[attr-defined]
            assert f'value="{typed}"'.encode() in response.data  # type: ignore[attr-defined]
        unknown = make_enrolment_id(b"\xff" * 10)
        missing = post_form(client, "/console/devices", "/console/devices/claim", {"enrolment_id": unknown})
        assert missing.status_code == 400  # type: ignore[attr-defined]  # no site chosen
        missing = post_form(
            client, "/console/devices", "/console/devices/claim", {"enrolment_id": unknown, "site": "building-a"}
        )
        assert missing.status_code == 404 and b"No device has this enrolment id" in missing.data  # type: ignore[attr-defined]
        assert store.get("L1-00000002").site is None  # type: ignore[union-attr]


def test_release_revokes_the_locks_credentials(tmp_path: Path) -> None:
    with device_world(tmp_path) as (world, client, store):
        serial = "L1-00000004"  # pre-assigned to building-a, and bootstrapped:
        credentials = OperationalCredentials(world.storage, rotation_age=86400)
        credentials.key_for_delivery(serial, now=world.now, delivered=True)
        register(world.storage, audience=serial, endpoint=DEVICES[3].endpoint, lifetime=300, now=world.now - 120)
        world.storage.record(
            IssuedToken(
                cti=b"cti-of-lock-4",
                client_id="phone-app",
                audience=serial,
                scope="open",
                profile=AceProfile.COAP_OSCORE,
                iat=world.now,
                exp=world.now + 600,
                token_hash=b"\x01" + bytes(32),
                cnf=b"",
            )
        )
        assert sign_in(client, "frank") == 303
        listing = client.get("/console/devices").data
        assert b"bootstrapped" in listing and b"2 min ago" in listing
        confirm = client.get(f"/console/devices/{serial}/release")
        assert confirm.status_code == 200 and b"revoked" in confirm.data and b'id="release"' in confirm.data
        released = post_form(client, f"/console/devices/{serial}/release", f"/console/devices/{serial}/release")
        assert released.status_code == 200  # type: ignore[attr-defined]
        text = released.data.decode()  # type: ignore[attr-defined]
        assert f"Released {serial} from site building-a" in text and "1 token(s) revoked" in text
        record = store.get(serial)
        assert record is not None and record.site is None and record.assignment is Assignment.UNCLAIMED
        assert record.revoked_at == world.now
        rs = world.storage.get_resource_server(serial)
        assert rs is not None and not rs.enabled and rs.shared_key is None
        assert world.storage.get_by_cti(b"cti-of-lock-4").status.value == "revoked"  # type: ignore[union-attr]
        assert all(k.key is None for k in credentials.keys(serial))
        actions = {e.action for e in world.storage.list_audit(AuditQuery(audience=serial))}
        assert "resource_server.revoked" in actions
        entry = world.storage.list_audit(AuditQuery(action="device.released"))[0]
        assert entry.actor == "user:frank" and entry.audience == "building-a" and "1 tokens revoked" in entry.detail
        # Unclaimed now: frank no longer sees it, and it can be claimed again by its enrolment id.
        assert serial.encode() not in client.get("/console/devices").data
        again = post_form(client, "/console/devices", f"/console/devices/{serial}/release")
        assert again.status_code == 404  # type: ignore[attr-defined]
        form = {"enrolment_id": DEVICES[3].enrolment_id, "site": "building-a"}
        reclaimed = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert reclaimed.status_code == 200  # type: ignore[attr-defined]
        assert b"revoked" in reclaimed.data  # type: ignore[attr-defined]  # until it is bootstrapped again


def test_claim_and_release_need_the_csrf_token(tmp_path: Path) -> None:
    with device_world(tmp_path) as (_, client, store):
        assert sign_in(client, "frank") == 303
        for data in ({}, {"csrf_token": "x" * 40}):
            claim = client.post(
                "/console/devices/claim", data={**data, "enrolment_id": DEVICES[0].enrolment_id, "site": "building-a"}
            )
            assert claim.status_code == 403 and b"expired" in claim.data
            release = client.post("/console/devices/L1-00000004/release", data=data)
            assert release.status_code == 403
            assert_no_traceback(claim.data + release.data)
        assert store.get("L1-00000001").site is None  # type: ignore[union-attr]
        assert store.get("L1-00000004").site == "building-a"  # type: ignore[union-attr]


def test_admins_see_every_device_and_claim_for_any_site(tmp_path: Path) -> None:
    with device_world(tmp_path) as (_, client, store):
        assert sign_in(client, "root") == 303
        page = client.get("/console/devices").data
        assert all(d.serial.encode() in page for d in DEVICES)
        assert b"<option>building-a</option>" in page and b'id="claim-site-other"' in page
        form = {"enrolment_id": DEVICES[1].enrolment_id, "site": "building-a", "site_other": "warehouse"}
        claimed = post_form(client, "/console/devices", "/console/devices/claim", form)
        assert claimed.status_code == 200  # type: ignore[attr-defined]
        assert store.get("L1-00000002").site == "warehouse"  # type: ignore[union-attr]
        bad = post_form(client, "/console/devices", "/console/devices/claim", {**form, "site_other": "a b"})
        assert bad.status_code == 400 and b"invalid site" in bad.data  # type: ignore[attr-defined]
        only = client.get("/console/devices?site=warehouse").data
        assert b"L1-00000002" in only and b"L1-00000001" not in only


def test_json_api_lists_claims_and_releases_with_the_same_checks(tmp_path: Path) -> None:
    with device_world(tmp_path) as (_, client, store):
        assert client.get("/console/api/devices").status_code == 401
        mine = json.loads(client.get("/console/api/devices", headers=basic("frank")).data)
        assert mine["recorded"] is True and [d["serial"] for d in mine["devices"]] == ["L1-00000004"]
        assert mine["devices"][0]["assignment"] == "factory" and mine["devices"][0]["last_contact"] is None
        everything = json.loads(client.get("/console/api/devices", headers=basic("root")).data)
        assert [d["serial"] for d in everything["devices"]] == [d.serial for d in DEVICES]

        body = {"enrolment_id": typed_loosely(DEVICES[1].enrolment_id), "site": "building-b/west"}
        refused = client.post("/console/api/devices/claim", json=body, headers=basic("frank"))
        assert refused.status_code == 403
        claimed = client.post("/console/api/devices/claim", json=body, headers=basic("mallory"))
        assert claimed.status_code == 200
        assert json.loads(claimed.data)["serial"] == "L1-00000002"
        assert json.loads(claimed.data)["site"] == "building-b/west"
        again = client.post("/console/api/devices/claim", json=body, headers=basic("mallory"))
        assert again.status_code == 409 and "already claimed" in json.loads(again.data)["error_description"]
        typo = client.post("/console/api/devices/claim", json={**body, "enrolment_id": "abc"}, headers=basic("mallory"))
        assert typo.status_code == 400 and "Not an enrolment id" in json.loads(typo.data)["error_description"]

        other = client.post("/console/api/devices/L1-00000002/release", headers=basic("frank"))
        assert other.status_code == 404
        released = client.post("/console/api/devices/L1-00000002/release", headers=basic("mallory"))
        assert released.status_code == 200
        assert json.loads(released.data) == {
            "serial": "L1-00000002",
            "released_from": "building-b/west",
            "assignment": "unclaimed",
            "tokens_revoked": None,  # never bootstrapped
        }
        assert store.get("L1-00000002").site is None  # type: ignore[union-attr]
