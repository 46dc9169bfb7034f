"""The performance floor: a bare Granian + aiohttp pass-through that Tollway is measured against."""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

UPSTREAM_ENV = "BARE_PROXY_UPSTREAM"
# The same provider credential Tollway adds, so both proxies send the same request upstream.
UPSTREAM_HEADERS = {"content-type": "application/json", "authorization": "Bearer mock-provider-key"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            # limit=0: no pool cap, so 32 concurrent clients never queue inside aiohttp.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
            scope["state"]["session"] = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=600)
            )
            await send({"type": "lifespan.startup.complete"})
        await scope["state"]["session"].close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    session: aiohttp.ClientSession = scope["state"]["session"]
    url = os.environ[UPSTREAM_ENV] + scope["path"]
    async with session.request(
        scope["method"], url, data=bytes(body), headers=UPSTREAM_HEADERS
    ) as r:
        content_type = r.headers.get("content-type", "application/json").encode()
        await send(
            {
                "type": "http.response.start",
                "status": r.status,
                "headers": [(b"content-type", content_type)],
            }
        )
        if content_type.startswith(b"text/event-stream"):
            # Relay each chunk as it arrives, like the gateway's streaming path.
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": await r.read()})


def main() -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:9001")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    # Workers are separate processes that import this file afresh: they read the URL from env.
    os.environ[UPSTREAM_ENV] = args.upstream.rstrip("/")
    Granian(
        f"{os.path.abspath(__file__)}:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        http=HTTPModes.http1,
        websockets=False,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
