"""The trivial CoAP baseline: an aiocoap server with one POST resource answering 2.04 and a small payload.

It reads nothing but the request and does no work, so its rate is the ceiling of aiocoap (with the chosen
transport) on this machine. Stops cleanly on SIGTERM or SIGINT.

Run: ``python -m benchmarks.baselines.trivial_coap --port 15700 [--transport udp6|simplesocketserver]``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import aiocoap
import aiocoap.resource as resource

__all__ = ["PATH", "Echo", "main"]

PATH = "echo"
BODY = b'{"ok":true}'


class Echo(resource.Resource):  # type: ignore[misc]
    """POST: 2.04 Changed with a small JSON body."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CHANGED, payload=BODY)


async def serve(host: str, port: int, transport: str) -> None:
    site = resource.Site()
    site.add_resource([PATH], Echo())
    ctx = await aiocoap.Context.create_server_context(site, bind=(host, port), transports=[transport])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await ctx.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baselines.trivial_coap")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transport", default="udp6", choices=["udp6", "simplesocketserver"])
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.transport))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
