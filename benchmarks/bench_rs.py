"""The lock (resource server) under load and its footprint, beside aiocoap baselines measured in the same run.

Every server runs in its own process, bound to 127.0.0.1 (ports below 32768); the load comes from
:mod:`benchmarks.coap_load` in another process: 32 raw-UDP clients, each with its own socket and one outstanding
NON request (closed loop), requests pre-encoded so that the server, not the client, is measured (library-notes
§5d). All CoAP servers use aiocoap's ``simplesocketserver`` transport, which is what
:func:`resource_server.aiocoap_site.serve` picks for a unicast bind address.

**Ours** is the reference door lock exactly as deployed: ``ostiary lock serve --config lock.toml`` (default log
level ``info``, to a log file), holding ``--stored`` tokens (default 10,000; ``max_tokens`` is set to that, so the
store stays full and each further upload evicts the oldest token). They are uploaded over CoAP before anything is
measured. The lock's rate limiter is configured out of the way (``rate_limit`` 10**9 per ``rate_window`` 1 ms):
all load comes from one address. Tokens are minted by the real AS code path (``as_server`` ``TokenEndpoint`` with
``MemoryStorage``, issuer ``coap://as.example``, audience ``front-door``, scope AIF ``[["/lock", PUT]]``,
COSE_Encrypt0 under an AS<->RS key made as ``ostiary as rs add`` makes it), so each carries fresh OSCORE input
material.

(a) **Token uploads per second**: ``POST /authz-info`` with ``{1: token, 40: nonce1, 43: ID1}``, every request a
different token (so every upload decrypts, checks claims, stores, evicts one token and derives and installs an
OSCORE context), against a trivial aiocoap POST resource (:mod:`benchmarks.baselines.trivial_coap`) given an
equally long payload. Goal: ours at least 60% of trivial.

(b) **OSCORE-protected lock requests per second**: ``PUT /lock "unlock"`` protected with OSCORE (pre-protected by
:mod:`benchmarks.oscore_wire`, every request a new Partial IV), from 32 contexts whose tokens the lock holds among
the stored ones (32 fresh tokens uploaded just before each run), against aiocoap's ``OscoreSiteWrapper`` around
the same door-lock site with 16 contexts in aiocoap's default ``CredentialsMap`` and no ACE checks
(:mod:`benchmarks.baselines.oscore_lock`; the 32 clients share its contexts two by two). A response counts only if
it decrypts and its inner code is 2.04. Goal: ours at least 90% of the baseline. Beside it, the same requests go
through both site wrappers in-process (no UDP) in interleaved batches, which a busy machine disturbs less.

(c) **Footprint**: lock memory per stored token (what the lock keeps of it, OSCORE context, indexes), measured in a
fresh process with tracemalloc (:mod:`benchmarks.rs_probe`; RSS delta beside it), goal at most 2 KiB; and the size of a
typical lock token from the real AS code path with a byte-by-byte breakdown, goal at most 128 B, beside the
equivalent JWTs (joserfc) and what could be dropped.

What-if rows (informative, ``--no-variants`` drops them): a second lock and a second OSCORE baseline, both at
``--log-level warning``, show what logging at INFO costs (the door's line in both; the lock logs granted requests
and accepted tokens at INFO only with ``audit_granted = true``, whose cost the in-process line of (b) shows).

Rounds interleave the contenders (rotating the order); each row reports the median over rounds and each ratio
goal also its per-round ratios and the ratio of server CPU per request, which a machine busy with other jobs
disturbs less than req/s (such goals are flagged CONTENDED). A row with any error (code other than 2.xx, failed
decryption, timeout) is INVALID, and so is every goal using it. PASS/FAIL is printed; the exit status is 0 either
way.

Run: ``python -m benchmarks.bench_rs [--seconds S] [--rounds N] [--stored N] [--quick] [--no-variants]
[--json FILE] [--keep]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from benchmarks import coap_load
from benchmarks._timing import fmt_rate
from benchmarks.baselines.oscore_lock import make_contexts
from benchmarks.bench_as import (
    BenchError,
    Ports,
    Row,
    Run,
    Server,
    _children_cpu,
    _fmt_ms,
    _machine_busy,
    _row_cells,
    _table,
    _wait_coap,
)
from benchmarks.oscore_wire import ClientContext

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_SECONDS = 10.0
DEFAULT_ROUNDS = 3
DEFAULT_STORED = 10_000
QUICK_SECONDS = 3.0
QUICK_ROUNDS = 1
QUICK_STORED = 2_000
#: Uploads into the full store timed by the memory probe (each evicts one token).
PROBE_EVICT = 2_000
QUICK_PROBE_EVICT = 500
CLIENTS = 32
#: Security contexts of the OSCORE baseline (the issue's "16 contexts"; library-notes §5d measured the same).
BASELINE_CONTEXTS = 16
#: Seconds of load at the start of every run that are not counted (coap_load --warmup).
COAP_WARMUP_SECONDS = 1.0
#: A request without a response after this many seconds is an error (and the client moves on).
COAP_TIMEOUT = 2.0
#: Upper bound on the pre-load of the stored tokens.
PRELOAD_TIMEOUT = 600.0
#: Servers bind from here upwards (below 32768, outside Linux's ephemeral range; away from bench_as's 18500+).
BASE_PORT = 18700
READY_TIMEOUT = 60.0

HOST = "127.0.0.1"
#: A realistic short issuer (an AS reachable as ``as.example``) and the audience of the reference lock.
ISSUER = "coap://as.example"
AS_URI = "coap://as.example/token"
AUDIENCE = "front-door"
CLIENT_ID = "bench-client"
#: One AIF entry: PUT on /lock (RFC 9237), what a client that opens the door gets.
SCOPE_SPEC = "/lock:PUT"
LOCK_PATH = "lock"
LOCK_PAYLOAD = b"unlock"
AUTHZ_INFO_PATH = "authz-info"
ACE_CBOR_FORMAT = 19
#: The lock's rate limiter, out of the way: all the load comes from one address.
RATE_LIMIT = 1_000_000_000
RATE_WINDOW = 0.001
#: Sizing of what is prepared per run: tokens minted for (a) and requests protected per context for (b) cover this
#: many times the highest rate seen so far (at least the floor), for the warm-up plus the window.
PREPARE_MARGIN = 1.4
UPLOAD_RATE_FLOOR = 1_000.0
OSCORE_RATE_FLOOR = 3_000.0
#: OSCORE Sender Sequence Numbers: run k uses k * SEQ_STRIDE and up (a new range above every earlier one).
SEQ_STRIDE = 1 << 20
NONCE1_LENGTH = 8
#: A ratio goal is flagged CONTENDED when a server used less than this share of one CPU (it was not the bottleneck)
#: or the rest of the machine more than BUSY_SHARE of one CPU during its runs (medians over the rounds).
SATURATED_SHARE = 0.80
BUSY_SHARE = 0.25
#: Goal thresholds.
MEMORY_GOAL_BYTES = 2048
TOKEN_GOAL_BYTES = 128

GOAL_TITLES = {
    "a": "token uploads: ours at least 60% of a trivial aiocoap POST resource",
    "b": "OSCORE lock requests: ours at least 90% of aiocoap OscoreSiteWrapper with 16 contexts",
    "c-memory": f"lock memory per stored token at most {MEMORY_GOAL_BYTES} B",
    "c-token": f"typical lock token (OSCORE profile, one AIF entry) at most {TOKEN_GOAL_BYTES} B",
}


# --------------------------------------------------------------------------------------------------------------
# tokens, minted by the real AS code path
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Minted:
    """A token and the OSCORE input material the AS gave the client with it (RFC 9203 §3.2)."""

    token: bytes
    material: Any  # ace_core.pop.OscoreMaterial


class Authority:
    """The AS's token endpoint (``as_server.endpoints.token.TokenEndpoint``) over ``MemoryStorage``, for minting lock
    tokens exactly as a deployment issues them.

    :param issuer: the AS ``issuer`` setting (the ``iss`` claim).
    :param shared_key: the AS<->RS key; ``None`` generates one as ``ostiary as rs add`` does.
    :param rs_kid: the ``kid`` of a generated AS<->RS key; ``None`` takes the one ``ostiary as rs add`` gives the
        first resource server of a deployment (``ostiary.as_cli.next_rs_kid``: ``01``).
    :param compact_claims: the RS's ``compact_claims`` option (default as ``as rs add``; ``--full-claims``: False).
    :param has_clock: the RS's ``has_clock`` option (default as ``as rs add``; ``--no-clock``: False).
    """

    def __init__(
        self,
        *,
        issuer: str = ISSUER,
        shared_key: Any = None,
        rs_kid: bytes | None = None,
        compact_claims: bool = True,
        has_clock: bool = True,
    ) -> None:
        from ace_core.keys import CoseKey
        from ace_core.registry import CoseAlgorithm
        from ostiary.as_cli import next_rs_kid

        self.issuer = issuer
        # What `ostiary as rs add` does (ostiary/as_cli.py): an AES-CCM-16-64-128 key with the smallest kid no other
        # RS's key has; for the deployment's first (or only) lock that is 01.
        kid = rs_kid if rs_kid is not None else next_rs_kid(())
        self.shared_key = shared_key or CoseKey.generate(CoseAlgorithm.AES_CCM_16_64_128, kid=kid)
        self.compact_claims = compact_claims
        self.has_clock = has_clock
        self._secret = secrets.token_urlsafe(16)

    def _endpoint(self) -> Any:
        from ace_core.scope import AifScope
        from as_server.auth import FailureRateLimiter
        from as_server.config import Settings
        from as_server.endpoints.token import TokenEndpoint
        from as_server.models import Client, ResourceServer, ScopeFormat
        from as_server.sealing import hash_secret
        from as_server.storage.memory import MemoryStorage
        from policies.builtin.allow_list import AllowList

        settings = Settings(home=Path("/nonexistent/bench-rs"), issuer=self.issuer)
        storage = MemoryStorage()  # a fresh one per batch, so that minting many tokens does not pile them up
        storage.add_resource_server(
            ResourceServer(
                audience=AUDIENCE,
                shared_key=self.shared_key,
                scope_format=ScopeFormat.AIF,
                resources=AifScope.parse_spec(SCOPE_SPEC).to_cbor(),
                compact_claims=self.compact_claims,
                has_clock=self.has_clock,
            )
        )
        storage.add_client(
            Client(client_id=CLIENT_ID, secret_hash=hash_secret(self._secret), audiences=frozenset({AUDIENCE}))
        )
        policy = AllowList.from_yaml(
            f'rules:\n  - client: {CLIENT_ID}\n    audience: {AUDIENCE}\n    scope: "{SCOPE_SPEC}"\n', source="bench"
        )
        return TokenEndpoint(settings=settings, storage=storage, policy=policy, limiter=FailureRateLimiter(settings))

    def mint(self, n: int) -> list[Minted]:
        """``n`` tokens for the lock, each with fresh OSCORE input material (``TokenEndpoint.handle``)."""
        from ace_core.messages import TokenRequest
        from ace_core.pop import Confirmation
        from ace_core.scope import AifScope

        endpoint = self._endpoint()
        request = TokenRequest(
            client_id=CLIENT_ID,
            client_secret=self._secret.encode(),
            audience=AUDIENCE,
            scope=AifScope.parse_spec(SCOPE_SPEC).to_cbor(),
        )
        out = []
        for _ in range(n):
            info = endpoint.handle(request, credentials=None, peer="192.0.2.1")
            cnf = Confirmation.from_cbor_map(dict(info.cnf or {}))
            out.append(Minted(info.access_token, cnf.osc))
        return out

    def key_hex(self) -> str:
        """The AS<->RS key as the lock's configuration takes it (COSE_Key hex, as ``ostiary as rs add`` prints)."""
        return str(self.shared_key.to_cbor().hex())


def upload_payload(token: bytes, nonce1: bytes, id1: bytes) -> bytes:
    """The ``/authz-info`` payload of RFC 9203 §4.1: ``{1: token, 40: nonce1, 43: ID1}`` (application/ace+cbor)."""
    from ace_core.messages import AuthzInfoRequest

    return AuthzInfoRequest(access_token=token, nonce1=nonce1, ace_client_recipientid=id1).to_cbor()


def upload_payloads(minted: Sequence[Minted]) -> list[bytes]:
    """One upload payload per token, each with its own nonce1 and a 1-byte ID1 (as the client SDK picks them)."""
    return [upload_payload(m.token, secrets.token_bytes(NONCE1_LENGTH), bytes([i % 256])) for i, m in enumerate(minted)]


def lock_config_text(authority: Authority, *, port: int, max_tokens: int) -> str:
    """The lock's TOML configuration (resource_server/config.py): ours, as benchmarked."""
    return "\n".join(
        [
            "# bench_rs: the reference door lock, as `ostiary lock init-config` writes it plus the bench's limits.",
            "[rs]",
            f'audience = "{AUDIENCE}"',
            f'issuer = "{authority.issuer}"',
            f'as_uri = "{AS_URI}"',
            f'keys = ["{authority.key_hex()}"]',
            'scope_format = "aif"',
            "has_clock = true",
            "max_token_size = 1024",
            f"max_tokens = {max_tokens}",
            "cnonce = false",
            f"rate_limit = {RATE_LIMIT}",
            f"rate_window = {RATE_WINDOW}",
            "",
            "[listen]",
            f'host = "{HOST}"',
            f"port = {port}",
            "",
        ]
    )


# --------------------------------------------------------------------------------------------------------------
# (c) the token's bytes
# --------------------------------------------------------------------------------------------------------------

_CLAIM_NAMES = {1: "iss", 2: "sub", 3: "aud", 4: "exp", 5: "nbf", 6: "iat", 7: "cti", 8: "cnf", 9: "scope"}
_CLAIM_NOTES = {
    "iss": "issuer URI",
    "aud": "audience",
    "exp": "NumericDate, 4-byte uint",
    "iat": "NumericDate, 4-byte uint; the lock never reads it",
    "cti": "random token id (revocation, introspection)",
    "cnf": "OSCORE_Input_Material {id, ms}",
    "scope": 'AIF [["/lock", PUT]] as a byte string',
    "ace_profile": "coap_oscore (2)",
}


def _claim_name(key: Any) -> str:
    from ace_core.registry import CwtClaim

    try:
        return CwtClaim(key).name.lower()
    except ValueError:
        return _CLAIM_NAMES.get(key, str(key))


def _decrypt_claims(token: bytes, key: Any) -> bytes:
    from ace_core import cose

    data = token[2:] if token[:2] == b"\xd8\x3d" else token
    payload, _obj, _key = cose.verify(data, cose.KeySet([key]))
    return payload


def token_breakdown(token: bytes, key: Any) -> list[tuple[str, int, str]]:
    """Every byte of a lock token (COSE_Encrypt0 in CWT tag 61), as (part, bytes, note) rows that sum to its size."""
    import cbor2

    rows: list[tuple[str, int, str]] = []
    rest = token
    if rest[:2] == b"\xd8\x3d":
        rows.append(("CWT tag 61", 2, "RFC 8392 §6; the AS tags tokens for the RFC 9770 token hash"))
        rest = rest[2:]
    outer = cbor2.loads(rest)
    if not (isinstance(outer, cbor2.CBORTag) and outer.tag == 16 and isinstance(outer.value, list)):
        raise ValueError("not a tagged COSE_Encrypt0")
    protected_bytes, unprotected, ciphertext = outer.value
    rows.append(("COSE_Encrypt0 tag 16 + array(3) heads", 2, ""))
    protected = cbor2.loads(protected_bytes)
    head = len(cbor2.dumps(protected_bytes)) - len(protected_bytes)
    rows.append(("protected header: bstr + map heads", head + 1, ""))
    names = {1: "alg", 4: "kid", 5: "IV"}
    for label, value in protected.items():
        size = len(cbor2.dumps(label)) + len(cbor2.dumps(value))
        what = names.get(label, str(label))
        note = {
            "alg": f"AES-CCM-16-64-128 ({value})",
            "kid": f"AS<->RS key id, {len(value)} B" if isinstance(value, bytes) else "",
            "IV": f"{len(value)}-byte nonce" if isinstance(value, bytes) else "",
        }.get(what, "")
        rows.append((f"  {what}", size, note))
    rows.append(("unprotected header {}", len(cbor2.dumps(unprotected)), "empty (RFC 9770 §3)"))
    rows.append(("ciphertext bstr head", len(cbor2.dumps(ciphertext)) - len(ciphertext), ""))
    claims_bytes = _decrypt_claims(token, key)
    rows.append(("AEAD tag", len(ciphertext) - len(claims_bytes), "AES-CCM-16-64-128: 8 bytes"))
    claims = cbor2.loads(claims_bytes)
    rows.append(("claims map head", len(claims_bytes) - sum(len(cbor2.dumps(k)) + len(cbor2.dumps(v)) for k, v in
                                                             claims.items()), f"{len(claims)} claims"))  # fmt: skip
    for label, value in claims.items():
        name = _claim_name(label)
        note = _CLAIM_NOTES.get(name, "")
        if name == "iss" or name == "aud":
            note += f' "{value}" ({len(value)} chars)'
        if name == "cnf":
            osc = value.get(4, {})
            note = "osc {" + ", ".join(f"{_OSC_NAMES.get(k, k)}: {len(v)} B" for k, v in osc.items()) + "}"
        if name == "cti":
            note += f", {len(value)} B"
        rows.append((f"  claim {name} ({label})", len(cbor2.dumps(label)) + len(cbor2.dumps(value)), note.strip()))
    total = sum(r[1] for r in rows)
    if total != len(token):
        rows.append(("(unaccounted)", len(token) - total, "breakdown does not add up"))
    return rows


_OSC_NAMES = {0: "id", 1: "version", 2: "ms", 3: "hkdf", 4: "alg", 5: "salt", 6: "contextId"}


def _reissue_without(token: bytes, authority: Authority, drop: Sequence[str], *, key: Any = None) -> bytes:
    """The token with some claims left out, protected as the AS protects it (Encrypt0, CWT tag 61), under ``key``
    (default: the authority's key)."""
    from ace_core import cwt

    claims = cwt.Claims.from_cbor(_decrypt_claims(token, authority.shared_key))
    claims = replace(claims, **dict.fromkeys(drop))
    return cwt.issue(claims, encrypt_key=key or authority.shared_key, cwt_tag=True)


@dataclass
class TokenAnatomy:
    """Goal (c), token size: the typical token, its bytes, what could go, and the JWT equivalents."""

    token: bytes
    breakdown: list[tuple[str, int, str]]
    variants: list[tuple[str, int, str]]  # (change, size after the changes so far, how)
    jwts: list[tuple[str, int, str]]
    upload_payload: int

    @property
    def size(self) -> int:
        return len(self.token)


def token_anatomy(authority: Authority) -> TokenAnatomy:
    """Mint one typical token with the real AS code path and take it apart (module docstring, goal (c)).

    The variants are the same token under the other resource-server options of ``ostiary as rs add``, and under
    changes the AS does not offer, each measured on its own against the typical token (not cumulatively).
    """
    minted = authority.mint(1)[0]
    token = minted.token
    breakdown = token_breakdown(token, authority.shared_key)
    key = authority.shared_key

    def minted_as(**options: Any) -> bytes:
        settings: dict[str, Any] = {"issuer": authority.issuer, "shared_key": key}
        settings.update(options)
        return bytes(Authority(**settings).mint(1)[0].token)

    variants: list[tuple[str, int, str]] = []
    before = Authority(issuer=authority.issuer, rs_kid=secrets.token_bytes(8), compact_claims=False)
    variants.append(
        (
            "for comparison: 8-byte random kid, iat and ace_profile in the token",
            len(before.mint(1)[0].token),
            "how `ostiary as rs add` registered locks before the per-RS token options",
        )
    )
    full = minted_as(compact_claims=False)
    variants.append(
        (
            "`as rs add --full-claims`: iat and ace_profile in the token",
            len(full),
            "compact claims (the default) leave out iat (the AS record keeps it; the lock never reads it) and "
            "ace_profile for an RS with one profile (RFC 9200 §5.8.4.3)",
        )
    )
    clockless = minted_as(has_clock=False)
    variants.append(
        (
            "`as rs add --no-clock`: exi and cti = audience || sequence number instead of exp and a random cti",
            len(clockless),
            "for a lock without a clock (RFC 9200 §5.10.3); the cti grows with the audience "
            f"({len(AUDIENCE)} chars + 1 byte up to sequence number 255)",
        )
    )
    short_iss = minted_as(issuer="coap://as")
    variants.append(
        (
            f'issuer "coap://as" instead of "{authority.issuer}"',
            len(short_iss),
            "AS setting `issuer` (and the lock's `issuer` to match): every character of iss is a byte of every token",
        )
    )
    no_kid = _reissue_without(token, authority, [], key=replace(key, kid=None))
    variants.append(
        (
            "no kid at all instead of the 1-byte kid",
            len(no_kid),
            "not offered: leave kid out of the protected header for an RS that holds one AS key "
            "(ace_core.cose.encrypt0 has include_kid); the lock's KeySet then tries its keys, as it does for any "
            "object without kid",
        )
    )
    # jwt_equivalents reads every claim of the full set (iat included), so it gets the --full-claims token.
    jwts = jwt_equivalents(full, authority)
    upload = len(upload_payload(token, bytes(NONCE1_LENGTH), b"\x01"))
    return TokenAnatomy(token, breakdown, variants, jwts, upload)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_equivalents(token: bytes, authority: Authority) -> list[tuple[str, int, str]]:
    """The same claims as a JWT (JSON claim names, RFC 7519; ``cnf``/``osc`` as in RFC 9203 §3.2.1 JSON),
    compact serialization, built with joserfc."""
    import cbor2
    from joserfc import jwe, jws
    from joserfc.jwk import ECKey, OctKey

    claims = cbor2.loads(_decrypt_claims(token, authority.shared_key))
    osc = claims[8][4]
    doc: dict[str, Any] = {
        "iss": claims[1],
        "aud": claims[3],
        "exp": claims[4],
        "iat": claims[6],
        "jti": _b64(claims[7]),
        "cnf": {"osc": {_OSC_NAMES[k]: _b64(v) if isinstance(v, bytes) else v for k, v in osc.items()}},
        "scope": cbor2.loads(claims[9]),  # AIF as JSON (application/aif+json, RFC 9237 §4): [["/lock", 4]]
        "ace_profile": "coap_oscore",
    }
    plaintext = json.dumps(doc, separators=(",", ":")).encode()
    kid = _b64(authority.shared_key.kid or b"")
    out = []
    gcm = jwe.encrypt_compact(
        {"alg": "dir", "enc": "A128GCM", "kid": kid}, plaintext, OctKey.generate_key(128), algorithms=["dir", "A128GCM"]
    )
    out.append(("JWE dir + A128GCM (compact)", len(gcm), "the equivalent: AEAD under the AS<->RS key, ms stays secret"))
    cbc = jwe.encrypt_compact(
        {"alg": "dir", "enc": "A128CBC-HS256", "kid": kid},
        plaintext,
        OctKey.generate_key(256),
        algorithms=["dir", "A128CBC-HS256"],
    )
    out.append(("JWE dir + A128CBC-HS256 (compact)", len(cbc), "JOSE's mandatory-to-implement content encryption"))
    hs = jws.serialize_compact({"alg": "HS256", "kid": kid}, plaintext, OctKey.generate_key(256))
    out.append(("JWS HS256 (compact)", len(hs), "reference only: ms readable by anyone holding the token"))
    es = jws.serialize_compact({"alg": "ES256", "kid": kid}, plaintext, ECKey.generate_key("P-256"))
    out.append(("JWS ES256 (compact)", len(es), "reference only: ms readable by anyone holding the token"))
    out.append(("JSON claims alone", len(plaintext), "what every JWT above carries, before base64url"))
    return out


# --------------------------------------------------------------------------------------------------------------
# targets and measurements
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One measured row."""

    key: str
    title: str
    server: str
    kind: str  # "upload-trivial" | "upload-ours" | "oscore-baseline" | "oscore-ours"
    reference: str | None = None  # the row its "vs baseline" column divides by
    informative: bool = False  # a what-if row, in no goal
    note: str | None = None
    prepared: list[str] = field(default_factory=list)  # remarks from preparing its runs (e.g. payloads reused)


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


@dataclass(frozen=True)
class Options:
    """What to run (from the command line)."""

    seconds: float
    rounds: int
    stored: int
    probe_evict: int
    variants: bool = True


class Bench:
    """One benchmark run: servers, pre-load, targets, measurements. :meth:`close` stops every server."""

    def __init__(self, opts: Options, workdir: Path, log: TextIO) -> None:
        self.opts = opts
        self.workdir = workdir
        self.log = log
        self.ports = Ports(BASE_PORT)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        for name in [k for k in self.env if k.startswith("OSTIARY_")]:
            del self.env[name]
        self.authority = Authority()
        self.servers: dict[str, Server] = {}
        self.port: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.targets: list[Target] = []
        self.runs: list[Run] = []
        self.validation: dict[str, str] = {}
        self.checks: list[str] = []
        self.memory: dict[str, Any] | None = None
        self.memory_error: str | None = None
        self.anatomy: TokenAnatomy | None = None
        self.anatomy_error: str | None = None
        self.preload: dict[str, dict[str, Any]] = {}
        self.best_rate: dict[str, float] = {}
        self.oscore_runs = 0
        self.baseline_clients: list[ClientContext] = []
        self.sample_payload = b""
        self.minted_total = 0

    def say(self, text: str) -> None:
        print(f"  {text}", file=self.log, flush=True)

    # -- set-up ---------------------------------------------------------------------------------------------

    def mint_payloads(self, n: int) -> list[bytes]:
        payloads = upload_payloads(self.authority.mint(n))
        self.minted_total += n
        return payloads

    def footprint(self) -> None:
        """Goal (c): the token's bytes (in-process) and the memory probe (a fresh process), before any server runs."""
        self.say("goal (c): minting a typical token with the AS code path and taking it apart ...")
        try:
            self.anatomy = token_anatomy(self.authority)
        except Exception as exc:  # the AS code is being changed by others: report, do not abort the bench
            self.anatomy_error = f"{type(exc).__name__}: {exc}"
            self.say(f"token anatomy failed: {self.anatomy_error}")
        n, evict = self.opts.stored, self.opts.probe_evict
        self.say(f"in-process probe: {n:,} tokens stored in a fresh lock process (+{evict:,} evicting), wrappers ...")
        config = self.workdir / "probe.toml"
        config.write_text(lock_config_text(self.authority, port=0, max_tokens=n))
        payloads = self.workdir / "probe-payloads.bin"
        coap_load.write_payloads(payloads, self.mint_payloads(n + evict + 1))
        argv = [sys.executable, "-m", "benchmarks.rs_probe", "--config", str(config), "--payload-file",
                str(payloads), "--tokens", str(n), "--evict", str(evict),
                "--log-file", str(self.workdir / "probe.log")]  # fmt: skip
        proc = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            self.memory_error = f"in-process probe failed ({proc.returncode}): {proc.stderr.strip()[-600:]}"
            self.say(self.memory_error)
            return
        self.memory = json.loads(proc.stdout)

    def start(self) -> None:
        """Start the locks and the baselines at once, then wait for each (bounded)."""
        keys = ["lock", "trivial", "oscore-baseline"]
        if self.opts.variants:
            keys += ["lock-quiet", "oscore-baseline-quiet"]
        for key in keys:
            self.port[key] = self.ports.take()
        servers, self.baseline_clients = make_contexts(BASELINE_CONTEXTS)
        contexts_file = self.workdir / "baseline-contexts.json"
        contexts_file.write_text(json.dumps(servers))
        py = sys.executable
        for key in keys:
            log = self.workdir / f"{key}.log"
            quiet = ["--log-level", "warning"] if key.endswith("-quiet") else []
            if key.startswith("lock"):
                toml = self.workdir / f"{key}.toml"
                toml.write_text(lock_config_text(self.authority, port=self.port[key], max_tokens=self.opts.stored))
                argv = [py, "-m", "ostiary", "lock", "serve", "--config", str(toml), *quiet]
                name = "ostiary lock serve" + (" --log-level warning" if quiet else "")
            elif key == "trivial":
                argv = [py, "-m", "benchmarks.baselines.trivial_coap", "--host", HOST, "--port", str(self.port[key]),
                        "--transport", "simplesocketserver"]  # fmt: skip
                name = "trivial aiocoap POST"
            else:
                argv = [py, "-m", "benchmarks.baselines.oscore_lock", "--host", HOST, "--port", str(self.port[key]),
                        "--contexts", str(contexts_file), *quiet]  # fmt: skip
                name = "aiocoap OscoreSiteWrapper" + (" --log-level warning" if quiet else "")
            self.servers[key] = Server(name, argv, self.env, log)
        self.say("starting servers ...")
        for server in self.servers.values():
            server.start()
        deadline = time.perf_counter() + READY_TIMEOUT
        for key, server in self.servers.items():
            try:
                _wait_coap(server, self.port[key], deadline)
                server.refresh_pids()
            except BenchError as exc:
                self.failed[key] = str(exc)
                self.say(str(exc))

    def preload_locks(self) -> None:
        """Pre-load every lock that started; a lock whose pre-load fails makes its targets n/a."""
        for key in [k for k in self.servers if k.startswith("lock") and k not in self.failed]:
            try:
                self.preload[key] = self._preload(key)
            except (BenchError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                self.failed[key] = f"pre-load failed: {exc}"
                self.say(self.failed[key])

    def _preload(self, key: str) -> dict[str, Any]:
        """Upload ``stored`` tokens over CoAP (the lock's store is then full); records RSS and CPU of the lock."""
        n = self.opts.stored
        self.say(f"pre-loading {self.servers[key].name} with {n:,} tokens over CoAP (/authz-info) ...")
        payloads = self.mint_payloads(n)
        self.sample_payload = self.sample_payload or payloads[0]
        path = self.workdir / f"preload-{key}.bin"
        coap_load.write_payloads(path, payloads)
        server = self.servers[key]
        assert server.proc is not None
        server.refresh_pids()
        rss0, cpu0 = _rss(server.proc.pid), server.cpu()
        doc = self._load([
            "--path", AUTHZ_INFO_PATH, "--content-format", str(ACE_CBOR_FORMAT), "--payload-file", str(path),
            "--max-requests", str(n), "--warmup", "0", "--duration", str(PRELOAD_TIMEOUT), "--clients", str(CLIENTS),
        ], self.port[key], timeout=PRELOAD_TIMEOUT + 60)  # fmt: skip
        rss1, cpu1 = _rss(server.proc.pid), server.cpu()
        ok = doc["ok_total"]
        if ok != n or doc["errors"]:
            raise BenchError(f"{ok:,} of {n:,} uploads accepted, errors {doc['errors']}")
        rate = ok / doc["duration"] if doc["duration"] else 0.0
        return {
            "tokens": n,
            "accepted": ok,
            "errors": doc["errors"],
            "seconds": doc["duration"],
            "rate": rate,
            "rss_before": rss0,
            "rss_after": rss1,
            "server_cpu_ms_per_upload": (cpu1 - cpu0) * 1e3 / ok if ok else None,
        }

    def build_targets(self) -> None:
        n = self.opts.stored
        quiet = " [--log-level warning]"
        self.targets = [
            Target("a-trivial", "trivial aiocoap POST", "trivial", "upload-trivial"),
            Target("a-ours", f"ours /authz-info ({n:,} stored, evicting)", "lock", "upload-ours",
                   reference="a-trivial"),
            Target("b-baseline", f"aiocoap OscoreSiteWrapper, {BASELINE_CONTEXTS} contexts", "oscore-baseline",
                   "oscore-baseline"),
            Target("b-ours", f"ours PUT /lock ({n:,} stored tokens)", "lock", "oscore-ours", reference="b-baseline"),
        ]  # fmt: skip
        if self.opts.variants:
            self.targets += [
                Target("a-ours-quiet", "ours /authz-info" + quiet, "lock-quiet", "upload-ours", reference="a-trivial",
                       informative=True),
                Target("b-baseline-quiet", "aiocoap OscoreSiteWrapper" + quiet, "oscore-baseline-quiet",
                       "oscore-baseline", informative=True),
                Target("b-ours-quiet", "ours PUT /lock" + quiet, "lock-quiet", "oscore-ours",
                       reference="b-baseline-quiet", informative=True),
            ]  # fmt: skip
        for t in self.targets:
            if t.server in self.failed:
                t.note = f"server not usable ({self.failed[t.server].splitlines()[0][:150]})"

    # -- one run ----------------------------------------------------------------------------------------------

    def _load(self, args: list[str], port: int, *, timeout: float) -> dict[str, Any]:
        argv = [sys.executable, "-m", "benchmarks.coap_load", "--host", HOST, "--port", str(port),
                "--timeout", str(COAP_TIMEOUT), *args]  # fmt: skip
        proc = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, env=self.env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise BenchError(f"coap_load failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        return dict(json.loads(proc.stdout))

    def _oscore_clients(self, t: Target) -> list[ClientContext]:
        """The client contexts of an OSCORE run: the baseline's fixed ones, or 32 fresh tokens uploaded to the lock."""
        if t.kind == "oscore-baseline":
            return self.baseline_clients
        from ace_core.messages import AuthzInfoResponse
        from ace_core.oscore import Role, context_parameters

        clients = []
        for i, minted in enumerate(self.authority.mint(CLIENTS)):
            nonce1, id1 = secrets.token_bytes(NONCE1_LENGTH), bytes([i])
            answer = coap_load.exchange(
                HOST,
                self.port[t.server],
                path=AUTHZ_INFO_PATH,
                payload=upload_payload(minted.token, nonce1, id1),
                content_format=ACE_CBOR_FORMAT,
                timeout=COAP_TIMEOUT,
            )
            if answer is None or answer[0] != 0x41:  # 2.01 Created
                code = "no answer" if answer is None else coap_load.code_text(answer[0])
                raise BenchError(f"uploading a client token: {code}")
            response = AuthzInfoResponse.from_cbor(answer[1])
            params = context_parameters(
                minted.material,
                nonce1=nonce1,
                nonce2=response.nonce2,
                client_recipient_id=id1,
                server_recipient_id=response.ace_server_recipientid,
                role=Role.CLIENT,
            )
            clients.append(ClientContext.from_params(params))
        self.minted_total += CLIENTS
        return clients

    def _request_args(self, t: Target, seconds: float, *, validating: bool) -> list[str]:
        """coap_load arguments for one run of ``t`` (tokens minted / contexts prepared for it)."""
        span = seconds + (0.0 if validating else COAP_WARMUP_SECONDS)
        clients = 1 if validating else CLIENTS
        if t.kind == "upload-trivial":
            from benchmarks.baselines.trivial_coap import PATH

            payload = self.sample_payload.hex()
            return ["--path", PATH, "--content-format", str(ACE_CBOR_FORMAT), "--payload-hex", payload]
        if t.kind == "upload-ours":
            rate = self.best_rate.get(t.key) or self.preload.get(t.server, {}).get("rate") or UPLOAD_RATE_FLOOR
            n = math.ceil(max(UPLOAD_RATE_FLOOR, rate) * PREPARE_MARGIN * span) + 100
            path = self.workdir / f"uploads-{t.key}.bin"
            coap_load.write_payloads(path, self.mint_payloads(n))
            return ["--path", AUTHZ_INFO_PATH, "--content-format", str(ACE_CBOR_FORMAT), "--payload-file", str(path)]
        contexts = self._oscore_clients(t)
        rate = max(OSCORE_RATE_FLOOR, self.best_rate.get(t.key, 0.0))
        per_context = math.ceil(rate * PREPARE_MARGIN * span / min(clients, len(contexts))) + 10
        path = self.workdir / f"oscore-{t.key}.json"
        path.write_text(
            json.dumps(
                {
                    "contexts": [c.to_json() for c in contexts],
                    "code": 3,  # PUT
                    "path": LOCK_PATH,
                    "payload_hex": LOCK_PAYLOAD.hex(),
                }
            )
        )
        self.oscore_runs += 1
        base = self.oscore_runs * SEQ_STRIDE
        return ["--path", LOCK_PATH, "--oscore-file", str(path), "--seq-base", str(base),
                "--per-context", str(per_context)]  # fmt: skip

    def validate(self) -> None:
        """One short, checked run per target (1 client, 0.3 s); a failing target becomes n/a."""
        for t in self.targets:
            if t.note is not None:
                continue
            try:
                doc = self._load(
                    [*self._request_args(t, 0.3, validating=True), "--clients", "1", "--duration", "0.3",
                     "--warmup", "0"], self.port[t.server], timeout=120,
                )  # fmt: skip
                self.validation[t.key] = self._describe(t, doc)
            except (BenchError, ValueError, subprocess.TimeoutExpired) as exc:
                t.note = f"validation failed: {str(exc)[:200]}"
                self.say(f"{t.title}: {t.note}")

    @staticmethod
    def _describe(t: Target, doc: dict[str, Any]) -> str:
        if doc["ok_total"] == 0 or doc["first_payload_hex"] is None or doc["errors"]:
            raise BenchError(f"no clean success (first {doc['first_code']}, errors {doc['errors']})")
        payload = bytes.fromhex(doc["first_payload_hex"])
        what = f"{doc['ok_total']} x {doc['first_code']}"
        if t.kind == "upload-ours":
            from ace_core.messages import AuthzInfoResponse

            answer = AuthzInfoResponse.from_cbor(payload)
            return f"{what}, AuthzInfoResponse nonce2 {len(answer.nonce2)} B, ID2 {answer.ace_server_recipientid.hex()}"
        if t.kind.startswith("oscore"):
            return f"{what} (inner code, decrypted), payload {payload!r}, {doc['protected_inline']} protected inline"
        return f"{what}, payload {payload!r}"

    def measure_one(self, t: Target, round_: int) -> Run:
        seconds = self.opts.seconds
        server = self.servers[t.server]
        args = self._request_args(t, seconds, validating=False)
        server.refresh_pids()
        cpu0, gen0, busy0, wall0 = server.cpu(), _children_cpu(), _machine_busy(), time.perf_counter()
        doc = self._load(
            [*args, "--clients", str(CLIENTS), "--duration", str(seconds), "--warmup", str(COAP_WARMUP_SECONDS)],
            self.port[t.server],
            timeout=seconds + 120,
        )
        wall = time.perf_counter() - wall0
        server_cpu, loadgen_cpu = server.cpu() - cpu0, _children_cpu() - gen0
        if doc["payload_reuses"]:
            t.prepared.append(f"round {round_}: {doc['payload_reuses']:,} uploads reused a token (too few minted)")
        if doc["protected_inline"]:
            t.prepared.append(f"round {round_}: {doc['protected_inline']:,} requests protected during the run")
        if doc["next_sequence"] is not None and doc["next_sequence"] - int(args[args.index("--seq-base") + 1]) >= (
            SEQ_STRIDE
        ):
            raise BenchError("a run used more OSCORE sequence numbers than its range")
        self.best_rate[t.key] = max(self.best_rate.get(t.key, 0.0), doc["rate"])
        errors = {k: v for k, v in doc["errors"].items() if v}
        return Run(
            target=t.key,
            round=round_,
            rate=doc["rate"],
            requests=doc["requests"],
            p50_ms=doc["p50_ms"],
            p99_ms=doc["p99_ms"],
            errors=errors,
            served=doc["ok_total"] + sum(errors.values()),
            server_cpu_s=server_cpu,
            loadgen_cpu_s=loadgen_cpu,
            other_cpu_s=max(0.0, _machine_busy() - busy0 - server_cpu - loadgen_cpu),
            # The load generator's set-up (pre-protection) is not load: leave it out of the CPU shares.
            wall_s=max(1e-9, wall - doc["setup_s"]),
        )

    def measure(self) -> None:
        """``rounds`` rounds; each runs every live target once, starting one further along the list each time."""
        for r in range(1, self.opts.rounds + 1):
            live = [t for t in self.targets if t.note is None]
            if not live:
                return
            shift = (r - 1) % len(live)
            for t in live[shift:] + live[:shift]:
                self.say(f"round {r}/{self.opts.rounds}: {t.title} ({self.opts.seconds:g} s) ...")
                try:
                    run = self.measure_one(t, r)
                except (BenchError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError) as exc:
                    t.note = f"measurement failed: {str(exc)[:200]}"
                    self.say(f"  {t.note}")
                    continue
                self.runs.append(run)
                self.say(
                    f"  {run.rate:,.0f}/s p50 {_fmt_ms(run.p50_ms)} ms p99 {_fmt_ms(run.p99_ms)} ms errors "
                    f"{run.errors or 0} server CPU {run.server_cpu_s / run.wall_s:.0%}"
                )
        for server in self.servers.values():
            if server.proc is not None and not server.alive():
                self.say(f"warning: {server.name} exited during the measurements:\n{server.log_tail()}")

    def preload_rss_per_token(self) -> float | None:
        """RSS growth of the lock process over the pre-load, per token (includes aiocoap's exchange state)."""
        pre = self.preload.get("lock")
        if not pre or pre.get("rss_before") is None or pre.get("rss_after") is None:
            return None
        return float(pre["rss_after"] - pre["rss_before"]) / pre["tokens"]

    def close(self) -> None:
        self.say("stopping servers ...")
        for server in self.servers.values():
            server.stop()

    def rows(self) -> dict[str, Row]:
        return {t.key: Row(t, [r for r in self.runs if r.target == t.key]) for t in self.targets}  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------------------
# goals and report
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Goal:
    """A ratio goal (ours / baseline >= need) or a limit goal (value <= need)."""

    key: str
    need: float
    ours: Row | None = None
    baseline: Row | None = None
    value: float | None = None  # limit goals
    unit: str = ""
    detail: str = ""
    informative: bool = False  # a what-if line: shown as (pass)/(fail), not counted

    @property
    def is_ratio(self) -> bool:
        return self.value is None and self.ours is not None

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or not self.ours.rate or not self.baseline.rate:
            return None
        return self.ours.rate / self.baseline.rate

    @property
    def cpu_ratio(self) -> float | None:
        """Baseline's server CPU per request / ours: the throughput ratio of a run where both servers saturate."""
        if self.ours is None or self.baseline is None or not self.ours.cpu_ms or not self.baseline.cpu_ms:
            return None
        return self.baseline.cpu_ms / self.ours.cpu_ms

    @property
    def contended(self) -> bool:
        """Whether a server did not saturate its CPU, or other processes took a large share of the machine."""
        for row in (self.ours, self.baseline):
            if row is None or not row.available:
                continue
            share, other = row.cpu_share, row.other_share
            if (share is not None and share < SATURATED_SHARE) or (other is not None and other > BUSY_SHARE):
                return True
        return False

    @property
    def paired(self) -> list[float]:
        if self.ours is None or self.baseline is None:
            return []
        base = {r.round: r.rate for r in self.baseline.runs}
        return [r.rate / base[r.round] for r in self.ours.runs if base.get(r.round)]

    @property
    def status(self) -> str:
        if self.ours is not None or self.baseline is not None:
            if self.ratio is None:
                return "n/a"
            assert self.ours is not None and self.baseline is not None
            if not (self.ours.valid and self.baseline.valid):
                return "INVALID"
            return "PASS" if self.ratio >= self.need else "FAIL"
        if self.value is None:
            return "n/a"
        return "PASS" if self.value <= self.need else "FAIL"

    def line(self) -> str:
        title = GOAL_TITLES[self.key]
        status = f"({self.status.lower()})" if self.informative else self.status
        head = f"  {status:<7} goal {self.key}: {title}"
        if self.ours is not None or self.baseline is not None:
            if self.ratio is None:
                return head + ": not measured"
            assert self.ours is not None and self.baseline is not None
            paired = self.paired
            spread = f" [rounds {min(paired):.2f}-{max(paired):.2f}]" if len(paired) > 1 else ""
            borderline = " BORDERLINE" if paired and min(paired) < self.need <= max(paired) else ""
            cpu = ""
            if self.cpu_ratio is not None:
                assert self.ours.cpu_ms is not None and self.baseline.cpu_ms is not None
                verdict = "PASS" if self.cpu_ratio >= self.need else "FAIL"
                cpu = (
                    f"\n          server CPU per request {self.ours.cpu_ms:.3f} ms vs {self.baseline.cpu_ms:.3f} ms: "
                    f"CPU/request ratio {self.cpu_ratio:.2f} ({verdict} by that measure)"
                )
            contended = ""
            if self.contended:
                contended = (
                    "\n          CONTENDED: a server was below "
                    f"{SATURATED_SHARE:.0%} CPU or the rest of the machine used over {BUSY_SHARE:.0%} of a CPU: the "
                    "req/s ratio depends on who got the CPU; the CPU/request ratios are the steadier measure"
                )
            detail = f"\n          {self.detail}" if self.detail else ""
            return (
                f"{head}\n          {fmt_rate(self.ours.rate)}/s vs {fmt_rate(self.baseline.rate)}/s: ratio "
                f"{self.ratio:.2f}{spread} (need >= {self.need:.2f}){borderline}{cpu}{detail}{contended}"
            )
        if self.value is None:
            return head + f": not measured {self.detail}".rstrip()
        return f"{head}\n          {self.value:,.0f} {self.unit} (need <= {self.need:,.0f}){self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "goal": self.key,
            "title": GOAL_TITLES[self.key],
            "status": self.status,
            "need": self.need,
            "ratio": self.ratio,
            "paired_ratios": self.paired,
            "cpu_ratio": self.cpu_ratio,
            "contended": self.contended if self.ours is not None else None,
            "ours_rate": self.ours.rate if self.ours else None,
            "baseline_rate": self.baseline.rate if self.baseline else None,
            "value": self.value,
            "unit": self.unit,
        }


def _goals(bench: Bench, rows: dict[str, Row]) -> list[Goal]:
    memory = bench.memory
    anatomy = bench.anatomy
    mem_value = memory["traced_bytes_per_token"] if memory else None
    mem_detail = (
        f"; tracemalloc, {memory['tokens']:,} tokens; RSS delta {memory['rss_bytes_per_token']:,.0f} B/token"
        if memory
        else f"({bench.memory_error})"
        if bench.memory_error
        else ""
    )
    jwe = anatomy.jwts[0] if anatomy else None
    tok_detail = f"; the equivalent {jwe[0]}: {jwe[1]} B" if anatomy and jwe else ""
    implied = implied_ratio(bench, rows)
    return [
        Goal("a", 0.6, ours=rows.get("a-ours"), baseline=rows.get("a-trivial")),
        Goal(
            "b",
            0.9,
            ours=rows.get("b-ours"),
            baseline=rows.get("b-baseline"),
            detail="" if implied is None else f"in-process estimate (site wrappers + common transport): {implied:.2f}",
        ),
        Goal("c-memory", MEMORY_GOAL_BYTES, value=mem_value, unit="B per stored token", detail=mem_detail),
        Goal(
            "c-token",
            TOKEN_GOAL_BYTES,
            value=float(anatomy.size) if anatomy else None,
            unit="B",
            detail=tok_detail if anatomy else f"({bench.anatomy_error})" if bench.anatomy_error else "",
        ),
    ]


def _text_table(headers: list[str], rows: list[list[str]], numeric: frozenset[int] = frozenset({1})) -> str:
    """Like bench_as's table, but only the ``numeric`` columns right-aligned (the others hold text)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return " | ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in pairs)

    return "\n".join([line(headers).rstrip(), "-+-".join("-" * w for w in widths), *(line(r).rstrip() for r in rows)])


def implied_ratio(bench: Bench, rows: dict[str, Row], level: str = "as configured") -> float | None:
    """The (b) ratio a server-bound run would show, from the in-process site-wrapper costs (probe phase 4) plus a
    transport cost common to both servers, taken as the trivial CoAP server's CPU per request (UDP, parsing,
    deduplication and a trivial render)."""
    probe = (bench.memory or {}).get("wrappers", {}).get(level)
    trivial = rows.get("a-trivial")
    if not probe or trivial is None or not trivial.cpu_ms:
        return None
    transport = trivial.cpu_ms * 1e3
    return float((transport + probe["baseline"]) / (transport + probe["ours"]))


def _wrapper_lines(bench: Bench, rows: dict[str, Row]) -> list[str]:
    wrappers = (bench.memory or {}).get("wrappers")
    if not wrappers:
        return []
    calls = wrappers["calls_per_request"]
    out = ["  in-process, site wrapper only (the same PUT /lock through each wrapper's render_to_pipe, no UDP; "
           "interleaved batches, median):"]  # fmt: skip
    levels = (
        ("as configured", "logging at INFO (as deployed)"),
        ("audit_granted", "INFO with audit_granted = true (ours logs every granted request)"),
        ("warning", "logging at WARNING"),
    )
    for level, label in levels:
        w = wrappers.get(level)
        if w is None:
            continue
        implied = implied_ratio(bench, rows, level)
        extra = f"; implied server-bound ratio {implied:.2f}" if implied is not None else ""
        bad = f"; {w['failed']} FAILED" if w["failed"] else ""
        out.append(
            f"    {label}: ours {w['ours']:,.0f} us vs aiocoap {w['baseline']:,.0f} us per request "
            f"(+{w['ours'] - w['baseline']:,.0f} us){extra}{bad}"
        )
    out.append(
        f"    Python function calls per request (cProfile): ours {calls['ours']:,.0f} vs aiocoap "
        f"{calls['baseline']:,.0f} (+{calls['ours'] / calls['baseline'] - 1:.0%})"
    )
    out.append(
        "    (implied ratio = (T + aiocoap) / (T + ours), T = the trivial CoAP server's CPU per request in (a): "
        "the transport work both servers share; steadier than req/s on a busy machine)"
    )
    return out


def _what_if(rows: dict[str, Row]) -> list[Goal]:
    """The ratio goals again with both sides at ``--log-level warning`` (informative)."""
    pairs = (("a", 0.6, "a-ours-quiet", "a-trivial"), ("b", 0.9, "b-ours-quiet", "b-baseline-quiet"))
    return [
        Goal(key, need, ours=rows.get(o), baseline=rows.get(b), informative=True)
        for key, need, o, b in pairs
        if o in rows and rows[o].available
    ]


_HEADERS = [
    "contender",
    "req/s",
    "min-max",
    "vs baseline",
    "p50 ms",
    "p99 ms",
    "srv CPU ms/req",
    "srv CPU",
    "other CPU",
    "errors",
]


def _report(bench: Bench, rows: dict[str, Row]) -> str:
    opts = bench.opts
    out: list[str] = []
    rounds = f"req/s = median of {opts.rounds} run(s) of {opts.seconds:g} s; p50/p99 = median of the runs' percentiles"

    def cells(prefix: str) -> list[list[str]]:
        chosen = [t for t in bench.targets if t.key.startswith(prefix)]
        out_rows = []
        for t in chosen:
            cell = _row_cells(rows[t.key], rows.get(t.reference or t.key))
            if t.informative:
                cell[0] = "(what-if) " + cell[0]
            out_rows.append(cell)
        return out_rows

    out.append(f"(a) Token uploads, POST /authz-info ({CLIENTS} clients, one outstanding NON request each; {rounds})")
    out.append(_table(_HEADERS, cells("a-")))
    out.append("")
    out.append(f"(b) OSCORE-protected PUT /lock ({CLIENTS} clients, pre-protected NON requests; same columns)")
    out.append(_table(_HEADERS, cells("b-")))
    out += _wrapper_lines(bench, rows)
    out.append("")

    out.append("(c) Lock memory per stored token (what the lock keeps of the token, its OSCORE context, indexes)")
    memory = bench.memory
    if memory is None:
        out.append(f"  n/a: {bench.memory_error or 'not measured'}")
    else:
        n = memory["tokens"]
        out.append(
            _table(
                ["measure", "bytes/token", f"total for {n:,}"],
                [
                    ["tracemalloc (live Python allocations)", f"{memory['traced_bytes_per_token']:,.0f}",
                     f"{memory['traced_bytes'] / 2**20:,.1f} MiB"],
                    ["RSS delta, probe process", f"{memory['rss_bytes_per_token']:,.0f}",
                     f"{memory['rss_bytes'] / 2**20:,.1f} MiB"],
                ]
                + (
                    [["RSS delta, `ostiary lock serve` over the pre-load", f"{bench.preload_rss_per_token():,.0f}",
                      f"{(bench.preload_rss_per_token() or 0) * n / 2**20:,.1f} MiB"]]
                    if bench.preload_rss_per_token() is not None
                    else []
                ),
            )
        )  # fmt: skip
        out.append("  where the bytes are (tracemalloc, allocation site of each live block, per stored token):")
        out.append(
            _text_table(
                ["site", "B/token", "blocks/token", "source line"],
                [
                    [s["site"], f"{s['bytes_per_token']:,.0f}", f"{s['blocks_per_token']:.1f}", s.get("code", "")[:70]]
                    for s in memory["sites"]
                ],
                numeric=frozenset({1, 2}),
            )
        )
        out.append(
            f"  in-process upload cost (handle_authz_info + install, no CoAP, INFO logging to a file): "
            f"{memory['fill_us_per_upload']:,.0f} us into a filling store, "
            f"{memory['evict_us_per_upload'] or 0:,.0f} us into a full one (evicting the oldest token)"
        )
        parts = memory.get("upload_parts_us")
        if parts:
            out.append(
                f"  of which, timed alone for the same tokens: token verification (ace_core cwt.verify_token: COSE, "
                f"AES-CCM, claims) {parts['verify_token']:,.0f} us, OSCORE key derivation (4 x HMAC-SHA-256) "
                f"{parts['derive_keys']:,.0f} us, AuthzInfoRequest decoding {parts['decode_request']:,.0f} us; the "
                "rest is the lock's bookkeeping (store, eviction, security context)"
            )
    out.append("")

    out.append("(c) A typical lock token (real AS code path: TokenEndpoint + MemoryStorage)")
    anatomy = bench.anatomy
    if anatomy is None:
        out.append(f"  n/a: {bench.anatomy_error or 'not measured'}")
    else:
        out.append(
            f'  {anatomy.size} bytes (issuer {ISSUER!r}, audience {AUDIENCE!r}, scope AIF [["/lock", PUT]], '
            f"COSE_Encrypt0 AES-CCM-16-64-128); the /authz-info upload payload around it is {anatomy.upload_payload} B"
        )
        out.append(_text_table(["part", "bytes", "note"], [[p, str(b), n] for p, b, n in anatomy.breakdown]))
        out.append(f"  what could go to reach {TOKEN_GOAL_BYTES} B (cumulative; the AS itself is unchanged here):")
        out.append(
            _text_table(
                ["change", "token bytes", "how"],
                [[c, str(s) + (" <= 128" if s <= TOKEN_GOAL_BYTES else ""), h] for c, s, h in anatomy.variants],
            )
        )
        out.append("  the same claims as a JWT (JSON names, RFC 9203 §3.2.1 osc members base64url; joserfc):")
        out.append(
            _text_table(
                ["form", "bytes", "vs CWT", "note"],
                [[f, str(s), f"{s / anatomy.size:.2f}x", n] for f, s, n in anatomy.jwts],
                numeric=frozenset({1, 2}),
            )
        )
    out.append("")

    goals = _goals(bench, rows)
    out.append("Goals")
    out += [g.line() for g in goals]
    bad = [g for g in goals if g.status in ("FAIL", "INVALID")]
    if bad:
        out.append(f"*** {len(bad)} GOAL(S) NOT MET: " + ", ".join(f"goal {g.key} {g.status}" for g in bad) + " ***")
    elif all(g.status == "PASS" for g in goals):
        out.append("All goals pass.")
    else:
        out.append("Some goals could not be evaluated (n/a).")
    out.append(
        "(ratio = ratio of the medians; [rounds a-b] = the ratio within each round; BORDERLINE: the rounds straddle "
        "the goal, so a rerun may flip the verdict; CPU/request ratio = baseline's server CPU per request / ours: the "
        "throughput ratio a server-bound run would show)"
    )
    whatif = _what_if(rows)
    if whatif:
        out.append("What-if (informative, no goal): both at `--log-level warning` (neither logs the door's line)")
        out += [g.line() for g in whatif]
    out.append("")

    out.append("Checks")
    for key, pre in bench.preload.items():
        out.append(
            f"  pre-load of {bench.servers[key].name}: {pre['accepted']:,} of {pre['tokens']:,} uploads accepted "
            f"(2.01) in {pre['seconds']:.1f} s ({pre['rate']:,.0f}/s, {pre['server_cpu_ms_per_upload']:.2f} ms lock "
            f"CPU each); errors: {pre['errors'] or 'none'}"
        )
    for key, text in bench.validation.items():
        title = next(t.title for t in bench.targets if t.key == key)
        out.append(f"  validation {title}: {text}")
    for t in bench.targets:
        for remark in t.prepared:
            out.append(f"  {t.title}: {remark}")
    out.append(f"  tokens minted by the AS code path for this run: {bench.minted_total:,}")
    out.append("")

    out += [
        "Notes",
        "a. Processes: every server is its own process (ours: `python -m ostiary lock serve --config lock.toml`, log "
        "level info to a file, as deployed); the load generator (benchmarks/coap_load.py) is another, started per "
        "run. Servers are idle while the others are measured. All CoAP servers use aiocoap's simplesocketserver "
        "transport (what resource_server.aiocoap_site.serve picks for 127.0.0.1). The machine's CPUs are shared "
        "by server and load generator alike for every row; 'other CPU' is what the rest of the machine used.",
        f"b. Load: {CLIENTS} UDP sockets, each with one outstanding NON request (the server answers NON), fresh "
        f"Message ID and Token per request; unanswered after {COAP_TIMEOUT:g} s = error (the client moves on); the "
        f"first {COAP_WARMUP_SECONDS:g} s of each run are not counted.",
        f"c. The lock holds {opts.stored:,} tokens with their OSCORE contexts throughout (max_tokens = "
        f"{opts.stored:,}, pre-loaded over CoAP, all unexpired): in (a) each upload supersedes nothing but evicts "
        "the oldest token and drops its context (the cost of that is in the (c) in-process line); in (b) 32 fresh "
        "tokens are uploaded "
        "before each run and their contexts carry the load. rate_limit 10**9 per 1 ms window: the limiter still runs "
        "but never refuses (every request comes from 127.0.0.1).",
        "d. Tokens: minted by as_server's TokenEndpoint with MemoryStorage (client_credentials, audience front-door, "
        f'scope AIF [["/lock", PUT]], issuer {ISSUER}, 3600 s), COSE_Encrypt0 AES-CCM-16-64-128 under an AS<->RS '
        "key made as `ostiary as rs add` makes it, CWT tag 61; each with fresh OSCORE input material (id 6 B, ms "
        "16 B); each upload a distinct token with its own nonce1 (8 B) and a 1-byte ID1.",
        "e. (a) baseline: benchmarks/baselines/trivial_coap.py (POST /echo answering 2.04 with 11 bytes), sent the "
        "same payload bytes as one of ours (it ignores them).",
        "f. (b): requests are PUT /lock 'unlock' (the door's own resource: it records the access and logs 'door "
        "unlocked by ...'), protected ahead of the run by benchmarks/oscore_wire.py (checked byte for byte against "
        "aiocoap in tests/test_bench_rs_helpers.py); each context's requests carry increasing Partial IVs (a fresh "
        "range per run). Baseline: benchmarks/baselines/oscore_lock.py, aiocoap's OscoreSiteWrapper + default "
        f"CredentialsMap (linear find_oscore) with {BASELINE_CONTEXTS} MemoryOscoreContext contexts around the same "
        "door-lock site and the same logging set-up; its 32 clients share the 16 contexts two by two, drawing "
        "Partial IVs from one counter per context. A response is a success only if it decrypts and its inner code "
        "is 2.04.",
        "g. In-process probe (benchmarks/rs_probe.py, in a fresh process before the servers start): it builds the "
        "lock's ResourceServer and AceSiteWrapper from the same configuration and stores tokens as /authz-info does "
        "(handle_authz_info + install). (c) memory: tracemalloc counts what is still allocated after a full "
        "collection (the goal's figure); RSS deltas are coarser (allocator arenas), and the `ostiary lock serve` "
        "one also holds aiocoap's per-message deduplication state (EXCHANGE_LIFETIME, ~247 s, responses included). "
        "(b) site wrappers: one more token gives a client context; pre-protected PUT /lock requests go through "
        f"AceSiteWrapper ({opts.stored:,} tokens held) and through aiocoap's OscoreSiteWrapper (16 contexts, another "
        "door) via aiocoap's Pipe, batches interleaved, every response decrypted and checked.",
        "h. srv CPU ms/req: the server's CPU time per answered request; srv CPU: its CPU use during the run (100% = "
        "one core; the load generator's preparation is left out of the run's wall time).",
        "i. What-if rows (--no-variants leaves them out): a second lock, the same CLI with `--log-level warning`, "
        "pre-loaded alike, and the OSCORE baseline at `--log-level warning` too (so neither logs the door's line). "
        "They show what logging at INFO costs: per lock request the door's 'door unlocked by ...' (both servers); "
        "the lock's own per-upload and per-request audit lines ('accepted token', 'authorized PUT /lock ...') are "
        "DEBUG unless the lock's configuration sets audit_granted = true (resource_server/config.py), and removals "
        "('token removed', 'dropped the security context') are DEBUG. The in-process line of (b) shows what "
        "audit_granted costs per request.",
    ]
    return "\n".join(out)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("aiocoap", "cryptography", "cbor2", "joserfc"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "resource_server", "ace_core", "as_server"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        out["tree"] = head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["tree"] = "unknown"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_rs",
        description="The lock under load (token uploads, OSCORE requests) and its footprint, against same-run "
        "aiocoap baselines.",
    )
    parser.add_argument("--seconds", type=float, help=f"seconds per run (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--rounds", type=int, help=f"runs per contender, interleaved (default {DEFAULT_ROUNDS})")
    parser.add_argument("--stored", type=int, help=f"tokens the lock holds (default {DEFAULT_STORED:,})")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_SECONDS:g} s runs, {QUICK_ROUNDS} round, --stored {QUICK_STORED:,}",
    )
    parser.add_argument(
        "--no-variants", action="store_true", help="leave out the what-if rows (both sides at --log-level warning)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the raw results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configurations)")
    args = parser.parse_args(argv)
    opts = Options(
        variants=not args.no_variants,
        seconds=args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS),
        rounds=args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS),
        stored=args.stored or (QUICK_STORED if args.quick else DEFAULT_STORED),
        probe_evict=QUICK_PROBE_EVICT if args.quick else PROBE_EVICT,
    )
    if opts.seconds < 1 or opts.rounds < 1 or opts.stored < CLIENTS:
        parser.error(f"--seconds must be >= 1, --rounds >= 1, --stored >= {CLIENTS}")

    versions = _versions()
    load = os.getloadavg()[0]
    print("bench_rs: the lock (ACE resource server) under load and its footprint, against same-run aiocoap baselines")
    print(
        ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.2f}"
    )
    print(
        f"{CLIENTS} raw-UDP clients, one NON request outstanding each; {opts.rounds} round(s) of {opts.seconds:g} s "
        f"per contender, interleaved; the lock holds {opts.stored:,} tokens."
    )
    print(flush=True)

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench_rs-"))
    bench = Bench(opts, workdir, sys.stderr)
    try:
        bench.footprint()
        bench.start()
        bench.preload_locks()
        bench.build_targets()
        bench.validate()
        bench.measure()
    finally:
        bench.close()

    rows = bench.rows()
    print(_report(bench, rows))
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        anatomy = bench.anatomy
        doc = {
            "benchmark": "bench_rs",
            "versions": versions,
            "load_average": load,
            "options": opts.__dict__,
            "clients": CLIENTS,
            "targets": {
                key: {
                    "title": row.target.title,
                    "note": row.target.note,
                    "validation": bench.validation.get(key),
                    "rate": row.rate,
                    "p50_ms": row.p50,
                    "p99_ms": row.p99,
                    "errors": row.errors,
                    "valid": row.valid,
                    "server_cpu_ms_per_request": row.cpu_ms,
                }
                for key, row in rows.items()
            },
            "runs": [r.as_dict() for r in bench.runs],
            "preload": bench.preload,
            "memory": bench.memory,
            "token": None
            if anatomy is None
            else {
                "bytes": anatomy.size,
                "hex": anatomy.token.hex(),
                "breakdown": anatomy.breakdown,
                "variants": anatomy.variants,
                "jwts": anatomy.jwts,
                "upload_payload_bytes": anatomy.upload_payload,
            },
            "goals": [g.as_dict() for g in _goals(bench, rows)],
            "what_if": [g.as_dict() for g in _what_if(rows)],
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        print(f"wrote {args.json}")
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
