"""Device stores after a bootstrap and at the end of a device's life (issue #7, docs/bootstrap-design.md
"Revocation"): ``mark_provisioned`` clears a release's revocation, ``decommission`` refuses the device for good; both
backends alike, and a device file of schema version 1 (before ``decommissioned_at``) still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from as_server.bootstrap.device_db import DEVICE_DB_FILE, SCHEMA_VERSION
from as_server.bootstrap.devices import BootstrapRefusal, EditableDeviceStore, UnknownDevice
from tests.bootstrap.test_factory_store import NOW, device, open_sqlite, recorded, store  # noqa: F401 - fixture

EP1 = "urn:dev:ops:ostiary-L1-00000001"


def test_mark_provisioned_clears_the_revocation_of_a_release(store: EditableDeviceStore) -> None:  # noqa: F811
    recorded(store, [device(1, site="building-a")])
    released = store.release("L1-00000001", now=NOW + 1)
    assert released.revoked_at == NOW + 1
    store.claim(device(1).enrolment_id, "building-b", now=NOW + 2)
    provisioned = store.mark_provisioned("L1-00000001", now=NOW + 3)
    assert provisioned.revoked_at is None and provisioned.released_at == NOW + 1
    assert store.get("L1-00000001") == provisioned
    assert store.mark_provisioned("L1-00000001", now=NOW + 4) == provisioned  # idempotent
    with pytest.raises(UnknownDevice):
        store.mark_provisioned("L1-00000099", now=NOW)


def test_decommission_is_permanent_and_idempotent(store: EditableDeviceStore) -> None:  # noqa: F811
    recorded(store, [device(1, site="building-a"), device(2)])
    identity = device(1).psk_identity
    assert store.bootstrap_psk(identity) == device(1).psk
    gone = store.decommission("L1-00000001", now=NOW + 5)
    assert gone.decommissioned_at == NOW + 5 and gone.revoked_at == NOW + 5 and gone.site == "building-a"
    assert store.bootstrap_psk(identity) is None
    assert store.bootstrap_target(EP1) is BootstrapRefusal.DECOMMISSIONED
    assert store.bootstrap_target(EP1, psk_identity=identity) is BootstrapRefusal.DECOMMISSIONED
    # A wrong identity is still named as such (the order of the checks).
    assert store.bootstrap_target(EP1, psk_identity=device(2).psk_identity) is BootstrapRefusal.IDENTITY_MISMATCH
    store.mark_provisioned("L1-00000001", now=NOW + 6)  # cannot bring it back
    again = store.decommission("L1-00000001", now=NOW + 9)
    assert again.decommissioned_at == NOW + 5 and again.revoked_at is None  # the first time stays
    assert store.bootstrap_target(EP1) is BootstrapRefusal.DECOMMISSIONED
    # Released and claimed again by its enrolment id: refused, it is out of service.
    store.release("L1-00000001", now=NOW + 10)
    with pytest.raises(UnknownDevice):
        store.claim(device(1).enrolment_id, "building-c", now=NOW + 11)
    assert store.bootstrap_psk(device(2).psk_identity) == device(2).psk  # the others are untouched
    with pytest.raises(UnknownDevice):
        store.decommission("L1-00000099", now=NOW)


def test_a_schema_version_1_file_still_opens(tmp_path: Path) -> None:
    path = tmp_path / DEVICE_DB_FILE
    with open_sqlite(path) as made:
        recorded(made, [device(1, site="building-a")])
    with sqlite3.connect(path) as conn:  # what version 1 wrote: no decommissioned_at
        conn.execute("ALTER TABLE devices DROP COLUMN decommissioned_at")
        conn.execute("UPDATE meta SET value = '1' WHERE name = 'schema'")
    conn.close()
    with open_sqlite(path) as upgraded:
        record = upgraded.get("L1-00000001")
        assert record is not None and record.site == "building-a" and record.decommissioned_at is None
        assert upgraded.bootstrap_psk(device(1).psk_identity) == device(1).psk
        assert upgraded.decommission("L1-00000001", now=NOW).decommissioned_at == NOW
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.close()
    with open_sqlite(path) as reopened:
        assert reopened.bootstrap_target(EP1) is BootstrapRefusal.DECOMMISSIONED
