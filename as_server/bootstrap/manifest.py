"""The factory batch manifest: one row per device for the production line (label printing, flashing, QA), in CSV
(RFC 4180, with a header row) and in JSON Lines, with the same fields.

A row has no secret *key material*: serial number, model, Endpoint Client Name, enrolment id, PSK identity,
pre-assigned site, batch id and the name of the device's bundle in the batch's ``bundles.zip``. The PSK is only
ever in the sealed bundle (:mod:`.bundle`). The enrolment id, though, claims an unclaimed device, so a manifest is
written mode 0600 and belongs to whoever prints the labels.

>>> row = ManifestRow(serial="L1-00000001", model="L1", endpoint="urn:dev:ops:ostiary-L1-00000001",
...                   enrolment_id="000G-40R4-0M30-E202", psk_identity="bs-aaaaaaaaaaaaaaaa", site=None,
...                   batch="L1-20260323-153012-0000", bundle="L1-00000001.bundle")
>>> parse_manifest_csv(csv_header() + csv_line(row)) == [row]
True
>>> parse_manifest_jsonl(jsonl_line(row)) == [row]
True
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

from ace_core.errors import WireFormatError
from ace_core.lwm2m.identifiers import (
    ENDPOINT_PREFIX,
    MAX_PSK_IDENTITY_BYTES,
    EnrolmentIdError,
    InvalidName,
    check_batch_id,
    check_model,
    check_site,
    parse_enrolment_id,
    parse_serial,
)

__all__ = [
    "FIELDS",
    "ManifestError",
    "ManifestRow",
    "ManifestWriter",
    "csv_header",
    "csv_line",
    "jsonl_line",
    "parse_manifest_csv",
    "parse_manifest_jsonl",
]

#: Column names, in order (CSV header and JSON member names).
FIELDS: Final = ("serial", "model", "endpoint", "enrolment_id", "psk_identity", "site", "batch", "bundle")
#: Parsers refuse larger inputs (a 100,000-device manifest is about 16 MB).
MAX_MANIFEST_SIZE: Final = 256 * 1024 * 1024
_MAX_FIELD = 1024


class ManifestError(WireFormatError):
    """A manifest that does not parse; the message names the line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestRow:
    """One device in a batch manifest (see the module documentation)."""

    serial: str
    model: str
    endpoint: str
    enrolment_id: str
    psk_identity: str
    site: str | None
    batch: str
    bundle: str

    def values(self) -> tuple[str, ...]:
        """The fields in :data:`FIELDS` order, an unassigned site as the empty string."""
        return (
            self.serial,
            self.model,
            self.endpoint,
            self.enrolment_id,
            self.psk_identity,
            self.site or "",
            self.batch,
            self.bundle,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> ManifestRow:
        """Build and check a row from a mapping of :data:`FIELDS` (other keys are ignored).

        :raises ManifestError: a missing field, a value of the wrong type or form.
        """
        values: dict[str, str] = {}
        for name in FIELDS:
            value = data.get(name)
            if name == "site" and value is None:
                value = ""
            if not isinstance(value, str):
                raise ManifestError(f"field {name!r} missing or not text")
            if len(value) > _MAX_FIELD:
                raise ManifestError(f"field {name!r} longer than {_MAX_FIELD} characters")
            values[name] = value
        try:
            model, _sequence = parse_serial(values["serial"])
            check_model(values["model"])
            if model != values["model"]:
                raise ManifestError("serial number and model disagree")
            if not values["endpoint"].startswith(ENDPOINT_PREFIX) or not values["endpoint"].isprintable():
                raise ManifestError(f"endpoint must start with {ENDPOINT_PREFIX!r}")
            enrolment_id = parse_enrolment_id(values["enrolment_id"])
            identity = values["psk_identity"]
            if not identity.isascii() or not identity.isprintable() or not 0 < len(identity) <= MAX_PSK_IDENTITY_BYTES:
                raise ManifestError(f"psk_identity must be 1-{MAX_PSK_IDENTITY_BYTES} printable ASCII characters")
            site = check_site(values["site"]) if values["site"] else None
            check_batch_id(values["batch"])
            _check_bundle_name(values["bundle"])
        except (InvalidName, EnrolmentIdError) as exc:
            raise ManifestError(str(exc)) from None
        return cls(
            serial=values["serial"],
            model=values["model"],
            endpoint=values["endpoint"],
            enrolment_id=enrolment_id,
            psk_identity=identity,
            site=site,
            batch=values["batch"],
            bundle=values["bundle"],
        )


def _check_bundle_name(name: str) -> None:
    """A member name in the batch's archive: printable ASCII, no path separators."""
    if not name or not name.isascii() or not name.isprintable() or "/" in name or "\\" in name or name in (".", ".."):
        raise ManifestError("bundle must be a member name in bundles.zip (no directories)")


class ManifestWriter:
    """Writes a manifest's CSV and JSON Lines files side by side: the CSV header at once, then rows."""

    __slots__ = ("_csv", "_jsonl")

    def __init__(self, csv_file: TextIO, jsonl_file: TextIO) -> None:
        self._csv = csv.writer(csv_file, lineterminator="\r\n")
        self._jsonl = jsonl_file
        self._csv.writerow(FIELDS)

    def write(self, rows: Sequence[ManifestRow]) -> None:
        """Append ``rows`` to both files."""
        self._csv.writerows(row.values() for row in rows)
        self._jsonl.write("".join(jsonl_line(row) for row in rows))


def csv_header() -> str:
    """The CSV header line (CRLF-terminated, RFC 4180 §2)."""
    return _csv_text(FIELDS)


def csv_line(row: ManifestRow) -> str:
    """One CSV record (CRLF-terminated)."""
    return _csv_text(row.values())


def _csv_text(values: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


_JSON = json.JSONEncoder(separators=(",", ":"))


def jsonl_line(row: ManifestRow) -> str:
    """One JSON Lines record; ``site`` is ``null`` when the device is not pre-assigned."""
    record: dict[str, str | None] = dict(zip(FIELDS, row.values(), strict=True))
    record["site"] = row.site
    return _JSON.encode(record) + "\n"


def _check_size(text: str) -> None:
    if not isinstance(text, str):
        raise ManifestError("a manifest is text")
    if len(text) > MAX_MANIFEST_SIZE:
        raise ManifestError(f"larger than {MAX_MANIFEST_SIZE} characters")


def parse_manifest_csv(text: str) -> list[ManifestRow]:
    """The rows of a CSV manifest. Columns may come in any order; unknown columns are ignored.

    :raises ManifestError: naming the line of the first problem.
    """
    _check_size(text)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[ManifestRow] = []
    try:
        header = next(reader, None)
        if header is None:
            raise ManifestError("line 1: empty manifest (no header row)")
        missing = [name for name in FIELDS if name not in header]
        if missing or len(set(header)) != len(header):
            raise ManifestError(f"line 1: the header must name each of {', '.join(FIELDS)} once")
        for record in reader:
            line = reader.line_num
            if not record:
                continue
            if len(record) != len(header):
                raise ManifestError(f"line {line}: {len(record)} fields, the header has {len(header)}")
            try:
                rows.append(ManifestRow.from_mapping(dict(zip(header, record, strict=True))))
            except ManifestError as exc:
                raise ManifestError(f"line {line}: {exc}") from None
    except csv.Error as exc:
        raise ManifestError(f"line {reader.line_num}: malformed CSV: {exc}") from None
    return rows


def parse_manifest_jsonl(text: str) -> list[ManifestRow]:
    """The rows of a JSON Lines manifest (one object per line; blank lines are skipped).

    :raises ManifestError: naming the line of the first problem.
    """
    _check_size(text)
    rows: list[ManifestRow] = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"line {number}: not JSON ({type(exc).__name__})") from None
        if not isinstance(obj, dict):
            raise ManifestError(f"line {number}: not a JSON object")
        try:
            rows.append(ManifestRow.from_mapping(obj))
        except ManifestError as exc:
            raise ManifestError(f"line {number}: {exc}") from None
    return rows
