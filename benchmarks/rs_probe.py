"""In-process measurements of the lock for ``bench_rs``: memory per stored token (goal (c)), the cost of a token
upload, and the cost of one OSCORE request in the site wrapper, ours against aiocoap's (goal (b)), without transport.

Run in a fresh process; builds what ``ostiary lock serve`` builds (a :class:`~resource_server.server.ResourceServer`
from the same :class:`~resource_server.config.RsConfig`, an :class:`~resource_server.aiocoap_site.AceSiteWrapper`
around the door lock's site) without a transport, and stores tokens the way the wrapper's ``/authz-info`` resource
does: :meth:`ResourceServer.handle_authz_info` then :meth:`AceSiteWrapper.install` (token verified, claims checked,
stored, OSCORE context derived and indexed).

Four phases (1 and 2 each on a fresh resource server):

1. **RSS** (no tracemalloc): resident set size before and after storing ``--tokens`` tokens, after a full
   collection; also times those uploads (store filling, no eviction).
2. **tracemalloc**: Python allocations still alive after storing the same tokens (collected garbage excluded),
   with the allocation sites that hold them.
3. **eviction**: with tracemalloc stopped and the store of phase 2 full, ``--evict`` more uploads, each evicting
   the oldest token and dropping its context, timed; then the parts of an upload that are not the lock's own
   bookkeeping, each timed alone for the same payloads (request decoding, token verification, key derivation).
4. **site wrappers**: one more token uploaded into that full store gives a client context; the same kind of
   pre-protected ``PUT /lock`` requests then go through our :class:`AceSiteWrapper` and through aiocoap's
   ``OscoreSiteWrapper`` with 16 contexts around another door (:mod:`benchmarks.baselines.oscore_lock`), driven
   through aiocoap's ``Pipe`` as the server would, in interleaved batches (median per request); at the logging
   level given, then the same with our wrapper's ``audit_granted`` on (an INFO line per granted request), then
   with logging at WARNING; plus the Python function calls per request (cProfile, exact).
   Everything before ``render_to_pipe`` (UDP, message parsing, deduplication) is left out: it is the same for both.

Payloads come from ``--payload-file`` (:func:`benchmarks.coap_load.write_payloads`): the first ``--tokens`` are
used in phases 1 and 2, the next ``--evict`` in phase 3, one more in phase 4. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import linecache
import logging
import math
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.coap_load import read_payloads

__all__ = ["main", "measure"]

PEER = "127.0.0.1"
ACE_CBOR = 19
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def _lock(config: Any) -> tuple[Any, Any]:
    from resource_server.aiocoap_site import AceSiteWrapper, resource_site
    from resource_server.examples.door_lock import DoorLock
    from resource_server.server import ResourceServer

    rs = ResourceServer(config)
    door = DoorLock(uptime=rs.monotonic)
    return rs, AceSiteWrapper(resource_site(door.resources()), rs)


def _upload(rs: Any, wrapper: Any, payloads: list[bytes]) -> float:
    """Store every payload as the lock's /authz-info resource does; returns the seconds it took."""
    started = time.perf_counter()
    for payload in payloads:
        result = rs.handle_authz_info(payload, ACE_CBOR, peer=PEER)
        if result.context is not None:
            wrapper.install(result.token)
    return time.perf_counter() - started


def measure(config: Any, payloads: list[bytes], tokens: int, evict: int, top: int = 16) -> dict[str, Any]:
    """The three phases (module docstring); returns what the JSON output holds."""
    first, extra = payloads[:tokens], payloads[tokens : tokens + evict]
    if len(first) < tokens or len(extra) < evict or len(payloads) < tokens + evict + 1:
        raise ValueError(f"need {tokens + evict + 1} payloads, got {len(payloads)}")
    out: dict[str, Any] = {"tokens": tokens}

    # 1. RSS, and the time to fill the store.
    gc.collect()
    rs, wrapper = _lock(config)
    rss0 = _rss()
    seconds = _upload(rs, wrapper, first)
    gc.collect()
    rss1 = _rss()
    if len(rs.store) != tokens or wrapper.contexts != tokens:
        raise RuntimeError(f"stored {len(rs.store)} tokens, {wrapper.contexts} contexts, expected {tokens}")
    out["rss_bytes"] = rss1 - rss0
    out["rss_bytes_per_token"] = (rss1 - rss0) / tokens
    out["fill_us_per_upload"] = seconds * 1e6 / tokens
    wrapper.close()
    del rs, wrapper
    gc.collect()

    # 2. tracemalloc.
    rs, wrapper = _lock(config)
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    _upload(rs, wrapper, first)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    diff = after.compare_to(before, "lineno")
    total = sum(stat.size_diff for stat in diff)
    out["traced_bytes"] = total
    out["traced_bytes_per_token"] = total / tokens
    root = str(Path(__file__).resolve().parent.parent)
    sites = []
    for stat in sorted(diff, key=lambda s: s.size_diff, reverse=True)[:top]:
        frame = stat.traceback[0]
        name = frame.filename.removeprefix(root + os.sep)
        if "site-packages" in name:
            name = name.split("site-packages" + os.sep, 1)[1]
        elif name.startswith(sys.prefix) or name.startswith(sys.base_prefix):
            name = "<stdlib>/" + Path(name).name
        sites.append(
            {
                "site": f"{name}:{frame.lineno}",
                "code": linecache.getline(frame.filename, frame.lineno).strip(),
                "bytes_per_token": stat.size_diff / tokens,
                "blocks_per_token": stat.count_diff / tokens,
            }
        )
    out["sites"] = sites

    # 3. uploads into the full store: every one evicts the oldest token and drops its context.
    seconds = _upload(rs, wrapper, extra)
    if len(rs.store) != tokens:
        raise RuntimeError(f"store holds {len(rs.store)} tokens after eviction, expected {tokens}")
    out["evict_us_per_upload"] = seconds * 1e6 / evict if evict else None
    out["evicted"] = evict
    out["upload_parts_us"] = _upload_parts(config, extra) if extra else None

    # 4. one OSCORE request through each site wrapper.
    out["wrappers"] = asyncio.run(_wrappers(rs, wrapper, payloads[tokens + evict]))
    return out


#: Passes over the payloads per part in :func:`_upload_parts` (the fastest counts).
PART_PASSES = 3


def _upload_parts(config: Any, payloads: list[bytes]) -> dict[str, float]:
    """What parts of an upload cost on their own, per upload (us), for the same payloads as phase 3: decoding the
    ``AuthzInfoRequest``, verifying the token (ace_core ``cwt.verify_token``: COSE decoding, AES-CCM decryption,
    claims decoding and checks) and deriving the OSCORE keys (:func:`resource_server.oscore_keys.derive_keys`:
    four HMAC-SHA-256). The rest of an upload is the lock's own bookkeeping (store, eviction, context install)."""
    from ace_core import cwt
    from ace_core.messages import AuthzInfoRequest
    from ace_core.oscore import Role, context_parameters
    from resource_server.oscore_keys import derive_keys

    now = time.time()
    requests = [AuthzInfoRequest.from_cbor(p, max_size=config.max_token_size) for p in payloads]

    def verify(token: bytes) -> Any:
        return cwt.verify_token(
            token,
            config.keys,
            now=now,
            audience=None,
            issuer=config.issuer,
            leeway=config.leeway,
            require_expiry=True,
            max_size=config.max_token_size,
        )

    params = []
    for request in requests:
        osc = verify(request.access_token).claims.cnf.osc
        params.append(
            context_parameters(
                osc,
                nonce1=request.nonce1 or b"",
                nonce2=bytes(8),
                client_recipient_id=request.ace_client_recipientid or b"",
                server_recipient_id=b"\x00\x01",
                role=Role.SERVER,
            )
        )
    parts = {
        "decode_request": lambda: [AuthzInfoRequest.from_cbor(p, max_size=config.max_token_size) for p in payloads],
        "verify_token": lambda: [verify(r.access_token) for r in requests],
        "derive_keys": lambda: [derive_keys(p) for p in params],
    }
    out = {}
    for name, run in parts.items():
        best = math.inf
        for _ in range(PART_PASSES):
            started = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - started)
        out[name] = best * 1e6 / len(payloads)
    return out


#: Requests per timed batch and batches per wrapper in phase 4; requests profiled for the call counts.
BATCH = 400
BATCHES = 7
PROFILED = 300
BASELINE_CONTEXTS = 16
PIV_STRIDE = 1 << 20


class _Remote:
    """What aiocoap's transport attaches to an incoming request (the attributes the sites read)."""

    hostinfo = "127.0.0.1:40000"
    hostinfo_local = "127.0.0.1:5683"
    uri_base = "coap://127.0.0.1:40000"
    uri_base_local = "coap://127.0.0.1:5683"
    scheme = "coap"
    is_multicast = False
    is_multicast_locally = False
    maximum_block_size_exp = 6
    maximum_payload_size = 1024
    blockwise_key = ("127.0.0.1", 40000)
    authenticated_claims: list[Any] = []


async def _wrappers(rs: Any, ours: Any, payload: bytes) -> dict[str, Any]:
    import aiocoap
    import aiocoap.pipe

    from ace_core import cwt
    from ace_core.messages import AuthzInfoRequest, AuthzInfoResponse
    from ace_core.oscore import Role, context_parameters
    from benchmarks.baselines import oscore_lock
    from benchmarks.coap_load import encode_message, encode_options
    from benchmarks.oscore_wire import ClientContext
    from resource_server.examples.door_lock import DoorLock

    # Our client context: upload one more token, and derive the client side as a client would (RFC 9203 §4.3);
    # the OSCORE input material comes out of the token (this process holds the AS<->RS key).
    result = rs.handle_authz_info(payload, ACE_CBOR, peer=PEER)
    ours.install(result.token)
    request = AuthzInfoRequest.from_cbor(payload)
    claims = cwt.verify(request.access_token, rs.config.keys, now=time.time(), audience=None)
    answer = AuthzInfoResponse.from_cbor(result.payload)
    assert claims.cnf is not None and claims.cnf.osc is not None and request.nonce1 and request.ace_client_recipientid
    ours_client = ClientContext.from_params(
        context_parameters(
            claims.cnf.osc,
            nonce1=request.nonce1,
            nonce2=answer.nonce2,
            client_recipient_id=request.ace_client_recipientid,
            server_recipient_id=answer.ace_server_recipientid,
            role=Role.CLIENT,
        )
    )
    servers, clients = oscore_lock.make_contexts(BASELINE_CONTEXTS)
    base, _ = oscore_lock.site(oscore_lock.server_contexts(servers), DoorLock(uptime=time.monotonic))
    sites = {"baseline": (base, clients[BASELINE_CONTEXTS // 2]), "ours": (ours, ours_client)}
    inner = encode_options([(11, b"lock")])
    log = logging.getLogger("ostiary.bench.probe")
    used = {"baseline": 0, "ours": 0}

    def prepare(name: str, n: int) -> list[tuple[Any, bytes]]:
        client = sites[name][1]
        first = used[name] + 1
        used[name] += n
        out = []
        for seq in range(first, first + n):
            protected = client.protect_request(seq, 3, inner, b"unlock")  # 3: PUT
            datagram = encode_message(1, 2, seq & 0xFFFF, b"tk", [(9, protected.option)], protected.ciphertext)
            out.append((protected, datagram))
        return out

    async def drive(name: str, requests: list[tuple[Any, bytes]]) -> tuple[float, int]:
        site, client = sites[name]
        messages = [aiocoap.Message.decode(datagram, _Remote()) for _, datagram in requests]
        events: list[list[Any]] = [[] for _ in messages]
        started = time.perf_counter()
        for message, got in zip(messages, events, strict=True):
            pipe = aiocoap.pipe.Pipe(message, log)
            pipe.on_event(lambda event, got=got: (got.append(event), False)[1])
            await site.render_to_pipe(pipe)
        elapsed = time.perf_counter() - started
        ok = 0
        for (protected, _), got in zip(requests, events, strict=True):
            response = got[0].message if got and got[0].message is not None else None
            if response is None or response.opt.oscore is None:
                continue
            plaintext = client.unprotect_response(protected, response.opt.oscore, bytes(response.payload))
            ok += plaintext[:1] == bytes([0x44])  # inner 2.04 Changed
        return elapsed, ok

    out: dict[str, Any] = {}
    root = logging.getLogger()
    level = root.level
    audit = ours.audit_granted
    # "audit_granted": as configured, plus an INFO line per granted request (the lock's `audit_granted = true`).
    for label, lvl, granted in (
        ("as configured", level, audit),
        ("audit_granted", level, True),
        ("warning", logging.WARNING, audit),
    ):
        root.setLevel(lvl)
        ours.audit_granted = granted
        rates: dict[str, list[float]] = {"baseline": [], "ours": []}
        failed = 0
        await drive("baseline", prepare("baseline", BATCH))  # warm-up
        await drive("ours", prepare("ours", BATCH))
        for b in range(BATCHES):
            for name in ("baseline", "ours") if b % 2 == 0 else ("ours", "baseline"):
                requests = prepare(name, BATCH)
                gc.collect()
                elapsed, ok = await drive(name, requests)
                failed += BATCH - ok
                rates[name].append(elapsed * 1e6 / BATCH)
        out[label] = {name: statistics.median(v) for name, v in rates.items()} | {"failed": failed}
    root.setLevel(level)
    ours.audit_granted = audit
    calls = {}
    for name in ("baseline", "ours"):
        requests = prepare(name, PROFILED)
        profile = cProfile.Profile()
        profile.enable()
        await drive(name, requests)
        profile.disable()
        calls[name] = sum(v[1] for v in pstats.Stats(profile).stats.values()) / PROFILED  # type: ignore[attr-defined]
    out["calls_per_request"] = calls
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rs_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the lock's TOML configuration")
    parser.add_argument("--payload-file", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--evict", type=int, default=2_000)
    parser.add_argument("--log-file", type=Path, help="log as `ostiary lock serve` does (INFO), to this file")
    args = parser.parse_args(argv)
    from resource_server.config import load_config

    if args.log_file is not None:
        logging.basicConfig(
            level=logging.INFO,
            format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
            datefmt="%Y-%m-%d %H:%M:%S %z",
            filename=args.log_file,
        )
    config = load_config(args.config).rs
    result = measure(config, read_payloads(args.payload_file), args.tokens, args.evict)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
