"""`/v1/analytics/*` and `/ui`: admin-key endpoints over the request log.

Queries run in a thread (`asyncio.to_thread`), so a slow query never stalls the requests the
same worker is proxying. Non-admin keys get 403; a bad parameter, 400 naming it.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from tollway.asgi import JSON, RequestHead, Scope, Send, send_error, send_json
from tollway.engine import Denial, Runtime
from tollway.errors import GatewayError
from tollway.logs.query import (
    BadParam,
    Dialect,
    encode_cursor,
    iso,
    parse_list,
    parse_summary,
    summary_rows,
)
from tollway.logs.row import JSON_COLUMNS, NAMES
from tollway.logs.writer import Store

__all__ = ["LIST_COLUMNS", "Analytics", "item_of"]

_encode = msgspec.json.Encoder().encode
LIST_COLUMNS = ", ".join(n for n in NAMES if n not in ("request_body", "response_body"))
_PREFIX = "/v1/analytics/"
# The page's own inline script and style; it talks only to this gateway.
_CSP = (b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        b"connect-src 'self'; img-src data:; frame-ancestors 'none'")  # fmt: skip
EventsReader = Callable[[dict[str, str]], list[dict[str, Any]]]


def _forbidden() -> GatewayError:
    return GatewayError(
        403, "This endpoint needs an admin key (admin: true)", "permission_error", "not_admin"
    )


class Analytics:
    """Serves the analytics API for one store (`clickhouse` says which SQL it speaks)."""

    def __init__(self, store: Store | None, table: str, clickhouse: bool = False,
                 events: EventsReader | None = None) -> None:  # fmt: skip
        self.store = store
        self.table = table
        self.clickhouse = clickhouse
        self.events = events

    @staticmethod
    def handles(path: str) -> bool:
        return path.startswith(_PREFIX) or path == "/ui" or path.startswith("/ui/")

    async def __call__(self, rt: Runtime, scope: Scope, send: Send) -> None:
        head = RequestHead(scope["headers"])
        path: str = scope["path"]
        try:
            if scope["method"] != "GET":
                raise GatewayError(405, "Method not allowed", "invalid_request_error",
                                   "method_not_allowed")  # fmt: skip
            if path == "/ui" or path.startswith("/ui/"):
                await _page(send, head.request_id)
                return
            key = rt.engine.authenticate(head.authorization)
            if isinstance(key, Denial):
                raise GatewayError(key.status, key.message, key.error_type, key.code)
            if not rt.keys[key].admin:
                raise _forbidden()
            params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            name = path[len(_PREFIX) :]
            if name == "requests":
                await self._list(params, send, head.request_id)
            elif name.startswith("requests/") and len(name) > 9:
                await self._one(name[9:], send, head.request_id)
            elif name == "summary":
                await self._summary(params, send, head.request_id)
            elif name == "events" and self.events is not None:
                data = await asyncio.to_thread(self.events, params)
                await _reply(send, head.request_id, {"data": data}, "json", data)
            else:
                raise GatewayError(404, "Unknown path", "invalid_request_error", "not_found")
        except BadParam as e:
            await send_error(send, GatewayError.bad_request(str(e), e.param), head.request_id)
        except GatewayError as e:
            await send_error(send, e, head.request_id)

    async def _run(self, sql: str, d: Dialect) -> tuple[list[str], list[tuple[Any, ...]]]:
        sql = sql.replace("{table}", self.table)
        if self.store is None:
            raise GatewayError(404, "The request log is switched off (request_logs.enabled)",
                               "invalid_request_error", "not_found")  # fmt: skip
        try:
            if self.clickhouse:
                return await asyncio.to_thread(self.store.query, sql, (), d.named)  # type: ignore[call-arg]
            return await asyncio.to_thread(self.store.query, sql, d.params)
        except Exception as e:
            raise GatewayError(503, f"The request log could not be read ({type(e).__name__})",
                               "api_error", "log_unavailable") from None  # fmt: skip

    async def _list(self, params: dict[str, str], send: Send, request_id: bytes) -> None:
        q = parse_list(params, LIST_COLUMNS, Dialect(self.clickhouse))
        names, rows = await self._run(q.sql, q.dialect)
        items = [item_of(names, r) for r in rows[: q.limit]]
        cursor = None
        if len(rows) > q.limit:
            last = items[-1]
            cursor = encode_cursor(int(last["ts"]), str(last["request_id"]))
        await _reply(send, request_id, {"data": items, "next_cursor": cursor}, q.fmt, items)

    async def _one(self, rid: str, send: Send, request_id: bytes) -> None:
        d = Dialect(self.clickhouse)
        sql = f"SELECT * FROM {{table}} WHERE request_id = {d.ph(rid)} ORDER BY ts DESC LIMIT 1"  # noqa: S608
        names, rows = await self._run(sql, d)
        if not rows:
            raise GatewayError(404, f"No logged request with id '{rid[:128]}'",
                               "invalid_request_error", "not_found")  # fmt: skip
        await _reply(send, request_id, item_of(names, rows[0]), "json", [])

    async def _summary(self, params: dict[str, str], send: Send, request_id: bytes) -> None:
        q = parse_summary(params, Dialect(self.clickhouse))
        names, rows = await self._run(q.sql, q.dialect)
        data = summary_rows(q, names, rows)
        await _reply(send, request_id, {"data": data}, q.fmt, data)


def item_of(names: list[str], row: tuple[Any, ...]) -> dict[str, Any]:
    item = dict(zip(names, row, strict=True))
    for col in JSON_COLUMNS.intersection(item):
        if isinstance(item[col], str):
            item[col] = msgspec.json.decode(item[col])
    item["time"] = iso(int(item["ts"]))
    return item


async def _reply(
    send: Send, request_id: bytes, body: Any, fmt: str, rows: list[dict[str, Any]]
) -> None:
    if fmt == "csv":
        out = io.StringIO()
        fields: list[str] = []
        for r in rows:
            fields.extend(k for k in r if k not in fields)
        w = csv.DictWriter(out, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: _encode(v).decode() if isinstance(v, list | dict) else v
                        for k, v in r.items()})  # fmt: skip
        headers = [(b"content-type", b"text/csv; charset=utf-8"), (b"x-request-id", request_id)]
        await send_json(send, 200, out.getvalue().encode(), headers)
        return
    await send_json(send, 200, _encode(body), [JSON, (b"x-request-id", request_id)])


async def _page(send: Send, request_id: bytes) -> None:
    html = resources.files("tollway.logs").joinpath("ui.html").read_bytes()
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"x-request-id", request_id),
               (b"cache-control", b"no-store"), (b"content-security-policy", _CSP)]  # fmt: skip
    await send_json(send, 200, html, headers)
