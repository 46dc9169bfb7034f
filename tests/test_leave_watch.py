"""The race of a stream against its client leaving (`tollway.proxy.leave`), in process."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

import pytest

from tollway.proxy.leave import TICK_S, LeaveWatch


class Client:
    """An ASGI `receive` whose pending call answers `http.disconnect` once the client left;
    with `closing`, the first call answers the body's closing message (Granian sends one
    after the body, which `read_body` does not wait for)."""

    def __init__(self, closing: bool = False) -> None:
        self.calls = 0
        self.closing = closing
        self.gone = asyncio.Event()

    async def receive(self) -> MutableMapping[str, Any]:
        self.calls += 1
        if self.closing and self.calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Delivery:
    def __init__(self, answered: bool = False) -> None:
        self.answered = answered


async def _work(seconds: float, ran: list[str]) -> None:
    try:
        await asyncio.sleep(seconds)
        ran.append("finished")
    except asyncio.CancelledError:
        ran.append("cancelled")
        raise


async def _watched_long_stream(client: Client, ran: list[str]) -> asyncio.Future[None]:
    """A stream still running after three ticks (its watch armed), as a task."""
    task = asyncio.ensure_future(LeaveWatch().run(_work(60, ran), client.receive, Delivery(), "m"))
    await asyncio.sleep(3 * TICK_S)
    return task


def test_a_stream_over_within_a_tick_never_watches_its_client() -> None:
    async def main() -> tuple[Client, list[str]]:
        client = Client()
        ran: list[str] = []
        await LeaveWatch().run(_work(0, ran), client.receive, Delivery(), "m")
        await asyncio.sleep(3 * TICK_S)
        return client, ran

    client, ran = asyncio.run(main())
    assert ran == ["finished"] and client.calls == 0


def test_a_client_leaving_a_long_stream_cancels_it() -> None:
    async def main() -> list[str]:
        client = Client()
        ran: list[str] = []
        task = await _watched_long_stream(client, ran)
        assert client.calls == 1, "a stream past two ticks is watched"
        client.gone.set()
        await task  # the request ends normally: the client left, nothing failed
        return ran

    assert asyncio.run(asyncio.wait_for(main(), 5)) == ["cancelled"]


def test_a_client_that_leaves_before_the_watch_is_armed_is_noticed_when_it_is() -> None:
    async def main() -> list[str]:
        client = Client()
        ran: list[str] = []
        client.gone.set()  # left at once
        await LeaveWatch().run(_work(60, ran), client.receive, Delivery(), "m")
        return ran

    assert asyncio.run(asyncio.wait_for(main(), 5)) == ["cancelled"]


def test_leaving_after_the_whole_answer_is_out_cancels_nothing() -> None:
    async def main() -> list[str]:
        client = Client()
        ran: list[str] = []
        client.gone.set()
        await LeaveWatch().run(_work(5 * TICK_S, ran), client.receive, Delivery(True), "m")
        return ran

    assert asyncio.run(main()) == ["finished"]


def test_a_cancel_that_is_not_the_client_leaving_goes_through() -> None:
    async def main() -> list[str]:
        client = Client()
        ran: list[str] = []
        task = await _watched_long_stream(client, ran)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return ran

    assert asyncio.run(main()) == ["cancelled"]


def test_the_ticker_stops_when_no_stream_runs() -> None:
    async def main() -> bool:
        watch = LeaveWatch()
        await watch.run(_work(0, []), Client().receive, Delivery(), "m")
        assert watch._ticker is not None
        await asyncio.sleep(60 * TICK_S)
        return watch._ticker is None

    assert asyncio.run(main())


def test_the_bodys_closing_message_is_not_the_client_leaving() -> None:
    async def main() -> list[str]:
        client = Client(closing=True)
        ran: list[str] = []
        task = await _watched_long_stream(client, ran)
        assert not task.done() and client.calls == 2, "watching again after the closing one"
        client.gone.set()
        await task
        return ran

    assert asyncio.run(asyncio.wait_for(main(), 5)) == ["cancelled"]
