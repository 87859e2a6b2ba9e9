"""resource_server.oscore_keys: the one-Extract derivation gives the RFC 8613 Appendix C keys byte for byte, and the
same keys as ace_core.oscore's three full HKDFs for every algorithm pair an OSCORE context may use."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from ace_core.oscore import AEAD_PARAMETERS, OscoreContextParameters
from ace_core.registry import CoseAlgorithm
from resource_server.oscore_keys import derive_keys
from tests.vectors_loader import VECTORS

C = json.loads((VECTORS / "rfc8613" / "appendix_c.json").read_text())
HKDFS = (CoseAlgorithm.HMAC_256_256, CoseAlgorithm.HMAC_384_384, CoseAlgorithm.HMAC_512_512)


def _hex(v: str | None) -> bytes | None:
    return None if v is None else bytes.fromhex(v)


@pytest.mark.parametrize("name", ["C.1", "C.2", "C.3"])
def test_rfc8613_appendix_c_keys(name: str) -> None:
    v: dict[str, Any] = C[name]
    params = OscoreContextParameters(
        master_secret=bytes.fromhex(C["master_secret"]),
        master_salt=bytes.fromhex(v["master_salt"]),
        sender_id=bytes.fromhex(v["sender_id"]),
        recipient_id=bytes.fromhex(v["recipient_id"]),
        id_context=_hex(v["id_context"]),
    )
    keys = derive_keys(params)
    assert (keys.sender_key.hex(), keys.recipient_key.hex(), keys.common_iv.hex()) == (
        v["sender_key"],
        v["recipient_key"],
        v["common_iv"],
    )


@pytest.mark.parametrize(("aead", "hkdf"), list(itertools.product(AEAD_PARAMETERS, HKDFS)))
@pytest.mark.parametrize("salt", [b"", b"\x9e\x7c\xa9\x22\x23\x78\x63\x40"])
def test_agrees_with_ace_core(aead: int, hkdf: int, salt: bytes) -> None:
    params = OscoreContextParameters(
        master_secret=bytes(range(16)),
        master_salt=salt,
        sender_id=b"\x01",
        recipient_id=b"",
        id_context=b"\x37\xcb\xf3\x21\x00\x17\xa2\xd3" if salt else None,
        aead_alg=aead,
        hkdf_alg=hkdf,
    )
    assert derive_keys(params) == (params.sender_key(), params.recipient_key(), params.common_iv())


def test_unusable_algorithms_are_refused() -> None:
    params = OscoreContextParameters(
        master_secret=b"s" * 16, master_salt=b"", sender_id=b"\x01", recipient_id=b"", hkdf_alg=-999
    )
    with pytest.raises(ValueError, match="unsupported"):
        derive_keys(params)
