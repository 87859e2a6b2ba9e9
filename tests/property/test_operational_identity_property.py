"""Operational PSK identities (issue #7, docs/bootstrap-design.md "Names"): ``audience#generation`` round-trips
through :func:`~as_server.bootstrap.operational.parse_operational_identity`, and any other bytes parse to ``None``
or to something that formats back to exactly those bytes (so one identity names one key, never two)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from as_server.bootstrap.operational import MAX_IDENTITY_BYTES, parse_operational_identity
from as_server.models import OperationalKey

audiences = st.text(min_size=1, max_size=20).filter(lambda a: len(a.encode()) <= 20)
generations = st.integers(min_value=1, max_value=10**9)


@given(audiences, generations)
def test_identities_round_trip(audience: str, generation: int) -> None:
    identity = OperationalKey(audience=audience, generation=generation, created_at=0).identity
    assert len(identity) <= MAX_IDENTITY_BYTES
    assert parse_operational_identity(identity) == (audience, generation)


@given(st.binary(max_size=40))
def test_any_bytes_parse_to_none_or_to_exactly_themselves(identity: bytes) -> None:
    parsed = parse_operational_identity(identity)
    if parsed is not None:
        audience, generation = parsed
        assert audience and generation >= 1
        assert f"{audience}#{generation}".encode() == identity


@given(audiences, st.text(alphabet="0123456789+- ", min_size=1, max_size=6))
def test_generation_must_be_canonical_decimal(audience: str, number: str) -> None:
    parsed = parse_operational_identity(f"{audience}#{number}".encode())
    canonical = number.isdigit() and number[0] != "0"
    assert (parsed is not None) == canonical
    if parsed is not None:
        assert parsed == (audience, int(number))
