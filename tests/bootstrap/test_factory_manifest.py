"""Batch manifests (issue #7): CSV and JSON Lines with the same rows, no key material, and parsers that fail only
with :class:`ManifestError` naming the line."""

from __future__ import annotations

import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from as_server.bootstrap.manifest import (
    FIELDS,
    ManifestError,
    ManifestRow,
    ManifestWriter,
    csv_header,
    csv_line,
    jsonl_line,
    parse_manifest_csv,
    parse_manifest_jsonl,
)

FUZZ = settings(max_examples=400, deadline=None)


def _row(n: int = 1, site: str | None = None) -> ManifestRow:
    return ManifestRow(
        serial=f"L1-{n:08d}",
        model="L1",
        endpoint=f"urn:dev:ops:ostiary-L1-{n:08d}",
        enrolment_id="000G-40R4-0M30-E202",
        psk_identity="bs-aaaaaaaaaaaaaaaa",
        site=site,
        batch="L1-20260323-153012-0000",
        bundle=f"L1-{n:08d}.bundle",
    )


def test_fields_hold_no_key_material() -> None:
    assert FIELDS == ("serial", "model", "endpoint", "enrolment_id", "psk_identity", "site", "batch", "bundle")
    assert not any("psk" == f or "key" in f or "secret" in f for f in FIELDS)


def test_writer_writes_both_formats_with_the_same_rows() -> None:
    rows = [_row(1), _row(2, site="building-a")]
    csv_file, jsonl_file = io.StringIO(), io.StringIO()
    ManifestWriter(csv_file, jsonl_file).write(rows)
    assert csv_file.getvalue() == csv_header() + "".join(csv_line(r) for r in rows)
    assert csv_file.getvalue().splitlines()[0] == ",".join(FIELDS)
    assert parse_manifest_csv(csv_file.getvalue()) == rows
    assert parse_manifest_jsonl(jsonl_file.getvalue()) == rows
    first = json.loads(jsonl_file.getvalue().splitlines()[0])
    assert first["site"] is None and list(first) == list(FIELDS)
    assert list(csv.DictReader(io.StringIO(csv_file.getvalue())))[1]["site"] == "building-a"


def test_csv_columns_in_any_order_extra_columns_ignored() -> None:
    row = _row(3)
    header = ["note", *reversed(FIELDS)]
    values = ["hello", *reversed(row.values())]
    text = ",".join(header) + "\r\n" + ",".join(values) + "\r\n"
    assert parse_manifest_csv(text) == [row]


def test_enrolment_ids_are_normalised() -> None:
    data = {**json.loads(jsonl_line(_row())), "enrolment_id": "000g 40r4 0m30 e202"}
    assert parse_manifest_jsonl(json.dumps(data))[0].enrolment_id == "000G-40R4-0M30-E202"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("serial", "L1-1", "serial"),
        ("model", "L2", "disagree"),
        ("endpoint", "lock-1", "urn:dev:ops"),
        ("enrolment_id", "000G-40R4-0M30-E203", "check failed"),
        ("psk_identity", "x" * 33, "psk_identity"),
        ("site", "a b", "site"),
        ("batch", "", "batch"),
        ("bundle", "../x.bundle", "member name"),
        ("bundle", "dir/x.bundle", "member name"),
    ],
)
def test_bad_values_name_the_line(field: str, value: str, message: str) -> None:
    data = json.loads(jsonl_line(_row()))
    data[field] = value
    text = jsonl_line(_row(1)) + "\n" + json.dumps(data) + "\n"
    with pytest.raises(ManifestError, match=rf"^line 3: .*{message}"):
        parse_manifest_jsonl(text)
    record = [data[f] or "" for f in FIELDS]
    with pytest.raises(ManifestError, match=rf"^line 3: .*{message}"):
        parse_manifest_csv(csv_header() + csv_line(_row(1)) + ",".join(record) + "\r\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: empty"),
        ("serial,model\r\n", "line 1: the header"),
        (",".join(FIELDS + ("serial",)) + "\r\n", "line 1: the header"),
        (csv_header() + "a,b\r\n", "line 2: 2 fields"),
        (csv_header() + '"unterminated\r\n', "line"),
    ],
)
def test_csv_structure_errors(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest_csv(text)


@pytest.mark.parametrize(("text", "message"), [("{", "line 1: not JSON"), ("\n[1]", "line 2: not a JSON object")])
def test_jsonl_structure_errors(text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest_jsonl(text)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_csv_parser(text: str) -> None:
    for candidate in (text, csv_header() + text):
        try:
            rows = parse_manifest_csv(candidate)
        except ManifestError as exc:
            assert str(exc).startswith("line ")
        else:
            assert all(isinstance(r, ManifestRow) for r in rows)


@FUZZ
@given(st.text(max_size=400))
def test_fuzz_jsonl_parser(text: str) -> None:
    try:
        parse_manifest_jsonl(text)
    except ManifestError as exc:
        assert str(exc).startswith("line ")


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), st.one_of(st.text(max_size=30), st.none(), st.integers())))
def test_fuzz_jsonl_objects(obj: dict[str, object]) -> None:
    try:
        parse_manifest_jsonl(json.dumps({**json.loads(jsonl_line(_row())), **obj}))
    except ManifestError as exc:
        assert str(exc).startswith("line 1: ")
