"""Memory per stored token of the lock, and the in-process cost of a token upload, for ``bench_rs`` goal (c).

Run in a fresh process; builds what ``ostiary lock serve`` builds (a :class:`~resource_server.server.ResourceServer`
from the same :class:`~resource_server.config.RsConfig`, an :class:`~resource_server.aiocoap_site.AceSiteWrapper`
around the door lock's site) without a transport, and stores tokens the way the wrapper's ``/authz-info`` resource
does: :meth:`ResourceServer.handle_authz_info` then :meth:`AceSiteWrapper.install` (token verified, claims checked,
stored, OSCORE context derived and indexed).

Three phases, each on a fresh resource server:

1. **RSS** (no tracemalloc): resident set size before and after storing ``--tokens`` tokens, after a full
   collection; also times those uploads (store filling, no eviction).
2. **tracemalloc**: Python allocations still alive after storing the same tokens (collected garbage excluded),
   with the allocation sites that hold them.
3. **eviction**: with tracemalloc stopped and the store of phase 2 full, ``--evict`` more uploads, each evicting
   the oldest token and dropping its context, timed.

Payloads come from ``--payload-file`` (:func:`benchmarks.coap_load.write_payloads`): the first ``--tokens`` are
used in phases 1 and 2, the next ``--evict`` in phase 3. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import linecache
import logging
import os
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
    if len(first) < tokens or len(extra) < evict:
        raise ValueError(f"need {tokens + evict} payloads, got {len(payloads)}")
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
