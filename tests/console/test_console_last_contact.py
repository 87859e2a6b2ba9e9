"""The console's lock list shows when each lock last contacted the AS (its LwM2M Register or Update, issue #7):
how long ago, with the time, or "not registered"; the JSON API gives the time."""

from __future__ import annotations

import re

from as_server.bootstrap.operational import register
from tests.console.helpers import console_world, sign_in
from tests.console.test_console_pages import basic


def test_locks_page_shows_last_contact() -> None:
    with console_world() as (world, client):
        locks = [rs.audience for rs in world.storage.list_resource_servers()]
        assert "lock-aif" in locks and len(locks) > 1
        register(world.storage, audience="lock-aif", endpoint="ep-aif", lifetime=300, now=world.now - 300)
        assert sign_in(client, "root") == 303
        page = client.get("/console/locks").data.decode()
        assert "<th>Last contact</th>" in page
        cells = re.findall(r'<td class="last-contact">(.*?)</td>', page)
        assert len(cells) == len(locks)
        row = dict(zip(sorted(locks), cells, strict=True))
        assert "5 min ago" in row["lock-aif"] and "<time datetime=" in row["lock-aif"]
        assert all(cell == "not registered" for audience, cell in row.items() if audience != "lock-aif")
        assert "Only locks that bootstrap" in page
        api = client.get("/console/api/locks", headers=basic("root")).get_json()
        contacts = {lock["audience"]: lock["last_contact"] for lock in api["locks"]}
        assert contacts["lock-aif"] == world.now - 300
        assert all(t is None for audience, t in contacts.items() if audience != "lock-aif")
