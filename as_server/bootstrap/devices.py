"""The device registry of the bootstrap server: every device the factory made, its bootstrap credentials and who
owns it (issue #7, "Factory side" and "Ownership").

Storage is split as Leshan splits its ``BootstrapConfigStore``/``EditableBootstrapConfigStore`` (STYLE §2, §3.6
rule 7): :class:`DeviceStore` is what the bootstrap server reads (the PSK for a DTLS handshake, where to bootstrap
an endpoint into), :class:`EditableDeviceStore` adds what the factory and the operators change (batches, claims,
releases). Backends: :class:`MemoryDeviceStore` here, :class:`~as_server.bootstrap.device_db.SqliteDeviceStore`
(a SQLite file of its own, secrets sealed under the master key); a SQLAlchemy backend can replace the latter
behind the same Protocols. Stores return frozen records and never the PSK except through
:meth:`DeviceStore.bootstrap_psk`.

**Uniqueness is enforced, not assumed.** A store refuses a device whose serial number, Endpoint Client Name, PSK
identity, PSK or enrolment id another device (recorded or in the same call) already has, and adds nothing of
that call: :class:`DuplicateDeviceError` names each conflicting device and field, so the factory draws those
values again (:mod:`.factory`). With a sound random source a collision never happens (80 to 128 random bits);
the check is what turns "never" from a probability into a guarantee, and what catches a broken generator.

**Ownership.** A device is pre-assigned to a site at manufacture (:attr:`Assignment.FACTORY`), or unclaimed
until someone presents its enrolment id (:meth:`EditableDeviceStore.claim`: the first claim wins, atomically;
every later one is refused). :meth:`~EditableDeviceStore.release` returns it to unclaimed and records that its
operational credentials are revoked (``revoked_at``), which the bootstrap server honours when it next sees the
device. :meth:`DeviceStore.bootstrap_target` is the bootstrap server's single question: which site may this
endpoint be bootstrapped into, or why not.

**Batches.** Devices are recorded while their batch is *pending*; the factory completes the batch once every
bundle and the manifest are written, or discards it (and its devices) on failure. A pending batch's devices
cannot be claimed or bootstrapped, so a batch killed half-way leaves nothing usable behind
(``ostiary factory discard-batch`` removes it).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Protocol

from ace_core.lwm2m.identifiers import enrolment_digest

__all__ = [
    "DEVICE_FIELDS",
    "AlreadyClaimed",
    "Assignment",
    "BatchRecord",
    "BatchStateError",
    "BootstrapRefusal",
    "Conflict",
    "DeviceRecord",
    "DeviceStore",
    "DeviceStoreError",
    "DuplicateDeviceError",
    "EditableDeviceStore",
    "FactoryDevice",
    "MemoryDeviceStore",
    "NotClaimed",
    "UnknownDevice",
    "decide_bootstrap_target",
    "device_state",
    "find_conflicts",
]

#: The fields that must be unique across all devices, as :class:`Conflict` names them.
DEVICE_FIELDS: Final = ("serial", "endpoint", "psk_identity", "psk", "enrolment_id")


class Assignment(Enum):
    """How a device came to belong to its site (or that it does not)."""

    UNCLAIMED = "unclaimed"
    #: Pre-assigned at manufacture (``ostiary factory batch --site``).
    FACTORY = "factory"
    #: Claimed by its enrolment id (``ostiary factory claim``).
    CLAIMED = "claimed"


class BootstrapRefusal(Enum):
    """Why :meth:`DeviceStore.bootstrap_target` refuses to bootstrap an endpoint into a site."""

    UNKNOWN_ENDPOINT = "no device has this endpoint name"
    IDENTITY_MISMATCH = "the endpoint name belongs to another device than the PSK identity"
    BATCH_INCOMPLETE = "the device's factory batch did not complete"
    UNCLAIMED = "the device is not assigned to a site (claim it with its enrolment id)"
    #: Permanently out of service (``ostiary as rs revoke --decommission``, issue #7): its bootstrap identity is
    #: refused.
    DECOMMISSIONED = "the device is decommissioned"


@dataclass(frozen=True, slots=True, kw_only=True)
class FactoryDevice:
    """A device as the factory generates it, secrets included: the input of :meth:`EditableDeviceStore.add_many`.

    Never returned by a store; ``psk`` and ``enrolment_id`` are left out of ``repr`` so they cannot reach a log.
    """

    serial: str
    model: str
    endpoint: str
    psk_identity: bytes
    psk: bytes = field(repr=False)
    #: Canonical form (:func:`~ace_core.lwm2m.identifiers.parse_enrolment_id`).
    enrolment_id: str = field(repr=False)
    batch_id: str
    #: The site it is pre-assigned to, or ``None`` (unclaimed).
    site: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """What a store knows about a device (no secrets)."""

    serial: str
    model: str
    endpoint: str
    psk_identity: bytes
    batch_id: str
    created_at: int
    site: str | None
    assignment: Assignment
    #: When it was pre-assigned or claimed (``None`` while unclaimed).
    assigned_at: int | None = None
    #: When it was last released.
    released_at: int | None = None
    #: When its operational credentials were last revoked (by a release); the bootstrap server issues new ones
    #: before the device serves again, and clears this when it does (:meth:`EditableDeviceStore.mark_provisioned`).
    revoked_at: int | None = None
    #: When it was decommissioned (permanent: its bootstrap PSK is refused from then on).
    decommissioned_at: int | None = None


def device_state(record: DeviceRecord, rs_enabled: bool | None) -> str:
    """The lock's state as the console's Devices page and ``ostiary factory list`` show it: ``decommissioned``,
    ``revoked`` (released, or its keys revoked), ``bootstrapped`` (the AS has its resource server, enabled) or ``not
    bootstrapped``.

    :param rs_enabled: whether the AS's resource server of that name (the serial) is enabled; ``None``: it has none.
    """
    if record.decommissioned_at is not None:
        return "decommissioned"
    if record.revoked_at is not None or rs_enabled is False:
        return "revoked"
    if rs_enabled:
        return "bootstrapped"
    return "not bootstrapped"


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchRecord:
    """A factory batch: what was made, when, and whether it completed."""

    batch_id: str
    model: str
    count: int
    site: str | None
    created_at: int
    complete: bool = False


@dataclass(frozen=True, slots=True)
class Conflict:
    """One refused device of an :meth:`~EditableDeviceStore.add_many` call: its index and the duplicate field."""

    index: int
    #: One of :data:`DEVICE_FIELDS`.
    field: str


class DeviceStoreError(Exception):
    """Base of the device stores' refusals."""


class DuplicateDeviceError(DeviceStoreError):
    """Some devices repeat a unique value; nothing of the call was stored. ``conflicts`` lists them all."""

    def __init__(self, conflicts: Sequence[Conflict]) -> None:
        self.conflicts = tuple(conflicts)
        fields = sorted({c.field for c in self.conflicts})
        super().__init__(f"{len(self.conflicts)} device(s) repeat a unique value ({', '.join(fields)})")


class UnknownDevice(DeviceStoreError, LookupError):
    """No device (of a completed batch) has this serial number, endpoint name or enrolment id."""


class AlreadyClaimed(DeviceStoreError):
    """The device already belongs to a site: the first claim won (the message names no site)."""


class NotClaimed(DeviceStoreError):
    """The device is not assigned to a site, so there is nothing to release."""


class BatchStateError(DeviceStoreError):
    """The batch does not exist, or is not in the state the change needs (e.g. discarding a completed batch)."""


class DeviceStore(Protocol):
    """What the bootstrap server reads."""

    def get(self, serial: str) -> DeviceRecord | None:
        """The device with this serial number."""
        ...

    def by_endpoint(self, endpoint: str) -> DeviceRecord | None:
        """The device with this LwM2M Endpoint Client Name."""
        ...

    def by_identity(self, psk_identity: bytes) -> DeviceRecord | None:
        """The device with this bootstrap PSK identity."""
        ...

    def by_enrolment_id(self, enrolment_id: str) -> DeviceRecord | None:
        """The device with this enrolment id (canonical form)."""
        ...

    def bootstrap_psk(self, psk_identity: bytes) -> bytes | None:
        """The bootstrap PSK for a DTLS handshake by ``psk_identity``; ``None`` if unknown or its batch is pending.

        Claimed or not: the handshake authenticates the device; :meth:`bootstrap_target` then decides.
        """
        ...

    def bootstrap_target(self, endpoint: str, *, psk_identity: bytes | None = None) -> str | BootstrapRefusal:
        """The site to bootstrap ``endpoint`` into, or why not (:func:`decide_bootstrap_target`).

        :param psk_identity: the identity the DTLS handshake authenticated; it must be this endpoint's.
        """
        ...

    def bootstrap_credentials(self, psk_identity: bytes) -> tuple[bytes, str] | None:
        """:meth:`bootstrap_psk` with the serial number of the device it belongs to, in one read (the DTLS
        handshake's lookup, issue #7)."""
        ...

    def bootstrap_device(
        self, endpoint: str, *, psk_identity: bytes | None = None
    ) -> tuple[DeviceRecord | None, str | BootstrapRefusal]:
        """:meth:`bootstrap_target` with the device's record (``None`` for an unknown endpoint), in one read (a
        Bootstrap-Pack needs both, issue #7)."""
        ...

    def list_devices(
        self,
        *,
        site: str | None = None,
        unclaimed: bool = False,
        batch_id: str | None = None,
        limit: int | None = None,
    ) -> Sequence[DeviceRecord]:
        """Devices by serial number, optionally only a site's, only unclaimed ones, or one batch's."""
        ...

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """A factory batch."""
        ...

    def list_batches(self) -> Sequence[BatchRecord]:
        """Every batch, oldest first."""
        ...

    def bundle_key(self, batch_id: str) -> bytes | None:
        """The AES-256-GCM key the batch's bundles are sealed under (:mod:`.bundle`)."""
        ...

    def mark_provisioned(self, serial: str, *, now: int) -> DeviceRecord:
        """A bootstrap of the device succeeded (issue #7): its new operational credentials replace the revoked
        ones, so ``revoked_at`` is cleared. The one write the bootstrap server makes here.

        :raises UnknownDevice: no device has this serial number.
        """
        ...


class EditableDeviceStore(DeviceStore, Protocol):
    """What the factory and the operators change."""

    def reserve_serials(self, model: str, count: int) -> int:
        """Reserve ``count`` consecutive serial sequence numbers of ``model``; returns the first.

        Atomic: concurrent batches of one model never get overlapping ranges. Numbers are never handed out twice,
        even if a batch is discarded.
        """
        ...

    def add_batch(self, batch: BatchRecord, bundle_key: bytes) -> None:
        """Record a new, pending batch and its bundle key. :raises BatchStateError: the id exists."""
        ...

    def add_many(self, devices: Sequence[FactoryDevice], *, now: int) -> None:
        """Record devices of a pending batch, all or none.

        :raises DuplicateDeviceError: listing every device that repeats a unique value (nothing is stored).
        :raises BatchStateError: a device's batch does not exist or is not pending.
        """
        ...

    def complete_batch(self, batch_id: str) -> None:
        """Mark a pending batch complete: its devices can now be claimed and bootstrapped."""
        ...

    def discard_batch(self, batch_id: str) -> int:
        """Delete a pending batch and its devices; returns how many devices. :raises BatchStateError: complete."""
        ...

    def claim(self, enrolment_id: str, site: str, *, now: int) -> DeviceRecord:
        """Assign the unclaimed device with this enrolment id to ``site``; the first claim wins.

        :raises UnknownDevice: no device of a completed batch has this enrolment id.
        :raises AlreadyClaimed: it already belongs to a site (pre-assigned, or claimed before).
        """
        ...

    def release(self, serial: str, *, now: int) -> DeviceRecord:
        """Return a device to unclaimed and revoke its operational credentials (``revoked_at = now``).

        :raises UnknownDevice: no device of a completed batch has this serial number.
        :raises NotClaimed: it is not assigned to a site.
        """
        ...

    def decommission(self, serial: str, *, now: int) -> DeviceRecord:
        """Take the device out of service for good (``decommissioned_at = now``, and ``revoked_at`` if unset):
        :meth:`DeviceStore.bootstrap_psk` no longer knows its identity and :meth:`DeviceStore.bootstrap_target`
        answers :attr:`BootstrapRefusal.DECOMMISSIONED`; it cannot be claimed. Idempotent (the first time stays).

        :raises UnknownDevice: no device has this serial number.
        """
        ...


def decide_bootstrap_target(
    record: DeviceRecord | None, *, batch_complete: bool, psk_identity: bytes | None
) -> str | BootstrapRefusal:
    """The rule every store's :meth:`~DeviceStore.bootstrap_target` applies, in this order: the endpoint must be
    known, belong to the authenticated identity, not be decommissioned, come from a completed batch, and be assigned
    to a site."""
    if record is None:
        return BootstrapRefusal.UNKNOWN_ENDPOINT
    if psk_identity is not None and psk_identity != record.psk_identity:
        return BootstrapRefusal.IDENTITY_MISMATCH
    if record.decommissioned_at is not None:
        return BootstrapRefusal.DECOMMISSIONED
    if not batch_complete:
        return BootstrapRefusal.BATCH_INCOMPLETE
    if record.site is None:
        return BootstrapRefusal.UNCLAIMED
    return record.site


def find_conflicts(
    devices: Sequence[FactoryDevice], taken: Mapping[str, Container[Any]] | None = None
) -> list[Conflict]:
    """Devices of ``devices`` that repeat a unique value of an earlier one in the sequence or of ``taken``
    (field name -> values already recorded, enrolment ids as :func:`enrolment_digest`)."""
    seen: dict[str, set[object]] = {name: set() for name in DEVICE_FIELDS}
    conflicts: list[Conflict] = []
    for index, device in enumerate(devices):
        values = _unique_values(device)
        for name in DEVICE_FIELDS:
            value = values[name]
            if value in seen[name] or (taken is not None and value in taken[name]):
                conflicts.append(Conflict(index, name))
                break
        for name in DEVICE_FIELDS:
            seen[name].add(values[name])
    return conflicts


def _unique_values(device: FactoryDevice) -> dict[str, object]:
    return {
        "serial": device.serial,
        "endpoint": device.endpoint,
        "psk_identity": device.psk_identity,
        "psk": device.psk,
        "enrolment_id": enrolment_digest(device.enrolment_id),
    }


@dataclass(slots=True)
class _Device:
    record: DeviceRecord
    psk: bytes
    enrolment: bytes  # enrolment_digest


class MemoryDeviceStore:
    """The Protocols in dictionaries, for tests and single-process use. Thread-safe (one lock around every
    operation). PSKs are held in clear: nothing here is at rest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._by_endpoint: dict[str, str] = {}
        self._by_identity: dict[bytes, str] = {}
        self._by_enrolment: dict[bytes, str] = {}
        self._psks: set[bytes] = set()
        self._batches: dict[str, tuple[BatchRecord, bytes]] = {}
        self._serials: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"MemoryDeviceStore(devices={len(self._devices)}, batches={len(self._batches)})"

    # -- reading -------------------------------------------------------------------------------------------------

    def _visible(self, serial: str | None) -> _Device | None:
        device = None if serial is None else self._devices.get(serial)
        if device is None or not self._batches[device.record.batch_id][0].complete:
            return None
        return device

    def get(self, serial: str) -> DeviceRecord | None:
        with self._lock:
            device = self._devices.get(serial)
            return None if device is None else device.record

    def by_endpoint(self, endpoint: str) -> DeviceRecord | None:
        with self._lock:
            return self._record(self._by_endpoint.get(endpoint))

    def by_identity(self, psk_identity: bytes) -> DeviceRecord | None:
        with self._lock:
            return self._record(self._by_identity.get(psk_identity))

    def by_enrolment_id(self, enrolment_id: str) -> DeviceRecord | None:
        with self._lock:
            return self._record(self._by_enrolment.get(enrolment_digest(enrolment_id)))

    def _record(self, serial: str | None) -> DeviceRecord | None:
        device = None if serial is None else self._devices.get(serial)
        return None if device is None else device.record

    def bootstrap_psk(self, psk_identity: bytes) -> bytes | None:
        found = self.bootstrap_credentials(psk_identity)
        return None if found is None else found[0]

    def bootstrap_target(self, endpoint: str, *, psk_identity: bytes | None = None) -> str | BootstrapRefusal:
        return self.bootstrap_device(endpoint, psk_identity=psk_identity)[1]

    def bootstrap_credentials(self, psk_identity: bytes) -> tuple[bytes, str] | None:
        with self._lock:
            device = self._visible(self._by_identity.get(psk_identity))
            if device is None or device.record.decommissioned_at is not None:
                return None
            return device.psk, device.record.serial

    def bootstrap_device(
        self, endpoint: str, *, psk_identity: bytes | None = None
    ) -> tuple[DeviceRecord | None, str | BootstrapRefusal]:
        with self._lock:
            device = self._devices.get(self._by_endpoint.get(endpoint, ""))
            if device is None:
                return None, decide_bootstrap_target(None, batch_complete=False, psk_identity=psk_identity)
            complete = self._batches[device.record.batch_id][0].complete
            decision = decide_bootstrap_target(device.record, batch_complete=complete, psk_identity=psk_identity)
            return device.record, decision

    def list_devices(
        self,
        *,
        site: str | None = None,
        unclaimed: bool = False,
        batch_id: str | None = None,
        limit: int | None = None,
    ) -> Sequence[DeviceRecord]:
        with self._lock:
            found = [
                d.record
                for d in self._devices.values()
                if (site is None or d.record.site == site)
                and (not unclaimed or d.record.site is None)
                and (batch_id is None or d.record.batch_id == batch_id)
            ]
        found.sort(key=lambda r: r.serial)
        return found if limit is None else found[:limit]

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        with self._lock:
            entry = self._batches.get(batch_id)
            return None if entry is None else entry[0]

    def list_batches(self) -> Sequence[BatchRecord]:
        with self._lock:
            return sorted((b for b, _ in self._batches.values()), key=lambda b: (b.created_at, b.batch_id))

    def bundle_key(self, batch_id: str) -> bytes | None:
        with self._lock:
            entry = self._batches.get(batch_id)
            return None if entry is None else entry[1]

    # -- changing ------------------------------------------------------------------------------------------------

    def reserve_serials(self, model: str, count: int) -> int:
        if count < 1:
            raise ValueError("reserve at least one serial number")
        with self._lock:
            first = self._serials.get(model, 0) + 1
            self._serials[model] = first + count - 1
            return first

    def add_batch(self, batch: BatchRecord, bundle_key: bytes) -> None:
        with self._lock:
            if batch.batch_id in self._batches:
                raise BatchStateError(f"batch {batch.batch_id} exists")
            self._batches[batch.batch_id] = (dataclasses.replace(batch, complete=False), bundle_key)

    def add_many(self, devices: Sequence[FactoryDevice], *, now: int) -> None:
        with self._lock:
            for device in devices:
                entry = self._batches.get(device.batch_id)
                if entry is None or entry[0].complete:
                    raise BatchStateError(f"batch {device.batch_id} does not exist or is complete")
            taken: dict[str, Container[Any]] = {
                "serial": self._devices,
                "endpoint": self._by_endpoint,
                "psk_identity": self._by_identity,
                "psk": self._psks,
                "enrolment_id": self._by_enrolment,
            }
            conflicts = find_conflicts(devices, taken)
            if conflicts:
                raise DuplicateDeviceError(conflicts)
            for device in devices:
                record = DeviceRecord(
                    serial=device.serial,
                    model=device.model,
                    endpoint=device.endpoint,
                    psk_identity=device.psk_identity,
                    batch_id=device.batch_id,
                    created_at=now,
                    site=device.site,
                    assignment=Assignment.UNCLAIMED if device.site is None else Assignment.FACTORY,
                    assigned_at=None if device.site is None else now,
                )
                enrolment = enrolment_digest(device.enrolment_id)
                self._devices[device.serial] = _Device(record, device.psk, enrolment)
                self._by_endpoint[device.endpoint] = device.serial
                self._by_identity[device.psk_identity] = device.serial
                self._by_enrolment[enrolment] = device.serial
                self._psks.add(device.psk)

    def complete_batch(self, batch_id: str) -> None:
        with self._lock:
            entry = self._batches.get(batch_id)
            if entry is None:
                raise BatchStateError(f"no batch {batch_id}")
            self._batches[batch_id] = (dataclasses.replace(entry[0], complete=True), entry[1])

    def discard_batch(self, batch_id: str) -> int:
        with self._lock:
            entry = self._batches.get(batch_id)
            if entry is None:
                raise BatchStateError(f"no batch {batch_id}")
            if entry[0].complete:
                raise BatchStateError(f"batch {batch_id} is complete; release its devices instead")
            doomed = [d for d in self._devices.values() if d.record.batch_id == batch_id]
            for device in doomed:
                record = device.record
                del self._devices[record.serial]
                del self._by_endpoint[record.endpoint]
                del self._by_identity[record.psk_identity]
                del self._by_enrolment[device.enrolment]
                self._psks.discard(device.psk)
            del self._batches[batch_id]
            return len(doomed)

    def claim(self, enrolment_id: str, site: str, *, now: int) -> DeviceRecord:
        with self._lock:
            device = self._visible(self._by_enrolment.get(enrolment_digest(enrolment_id)))
            if device is None or device.record.decommissioned_at is not None:
                raise UnknownDevice("no device has this enrolment id")
            if device.record.site is not None:
                raise AlreadyClaimed(f"device {device.record.serial} is already claimed")
            device.record = dataclasses.replace(
                device.record, site=site, assignment=Assignment.CLAIMED, assigned_at=now
            )
            return device.record

    def release(self, serial: str, *, now: int) -> DeviceRecord:
        with self._lock:
            device = self._visible(serial)
            if device is None:
                raise UnknownDevice(f"no device {serial}")
            if device.record.site is None:
                raise NotClaimed(f"device {serial} is not assigned to a site")
            device.record = dataclasses.replace(
                device.record,
                site=None,
                assignment=Assignment.UNCLAIMED,
                assigned_at=None,
                released_at=now,
                revoked_at=now,
            )
            return device.record

    def mark_provisioned(self, serial: str, *, now: int) -> DeviceRecord:
        with self._lock:
            device = self._devices.get(serial)
            if device is None:
                raise UnknownDevice(f"no device {serial}")
            device.record = dataclasses.replace(device.record, revoked_at=None)
            return device.record

    def decommission(self, serial: str, *, now: int) -> DeviceRecord:
        with self._lock:
            device = self._devices.get(serial)
            if device is None:
                raise UnknownDevice(f"no device {serial}")
            record = device.record
            if record.decommissioned_at is None:
                device.record = dataclasses.replace(
                    record, decommissioned_at=now, revoked_at=now if record.revoked_at is None else record.revoked_at
                )
            return device.record
