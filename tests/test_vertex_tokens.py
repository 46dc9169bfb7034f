"""Vertex access tokens: minted off the event loop, cached, renewed in the background before
they expire, and a failed mint is an upstream failure (never a crash, never a secret)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tollway.providers.vertex import GoogleToken
from tollway.upstream import UpstreamError


class FakeToken(GoogleToken):
    """Mints `tok-<n>` valid for `lifetime` seconds; records the thread it ran on."""

    def __init__(self, lifetime: float) -> None:
        super().__init__(None, None)
        self.lifetime = lifetime
        self.minted = 0
        self.threads: set[int] = set()
        self.fail = False

    def _mint(self) -> None:
        self.threads.add(threading.get_ident())
        if self.fail:
            raise RuntimeError("private key rejected")
        time.sleep(0.01)
        self.minted += 1
        self._token, self._expires = f"tok-{self.minted}", time.monotonic() + self.lifetime


def test_one_mint_for_concurrent_requests_off_the_loop() -> None:
    async def main() -> list[dict[str, str]]:
        token = FakeToken(3600)
        got = await asyncio.gather(*(token.headers("u", {"a": "b"}, b"") for _ in range(5)))
        assert token.minted == 1
        assert threading.get_ident() not in token.threads
        return got

    for headers in asyncio.run(main()):
        assert headers == {"a": "b", "authorization": "Bearer tok-1"}


def test_a_token_near_its_end_is_renewed_without_waiting() -> None:
    async def main() -> None:
        token = FakeToken(120)  # inside the 5-minute renewal window, outside the 30 s floor
        first = await token.headers("u", {}, b"")
        second = await token.headers("u", {}, b"")  # starts a background renewal
        assert first == second == {"authorization": "Bearer tok-1"}
        await asyncio.sleep(0.2)
        assert token.minted == 2
        assert (await token.headers("u", {}, b""))["authorization"] == "Bearer tok-2"

    asyncio.run(main())


def test_a_failed_mint_is_an_upstream_connect_error(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        token = FakeToken(3600)
        token.fail = True
        with pytest.raises(UpstreamError) as e:
            await token.headers("u", {}, b"")
        assert e.value.kind == "connect"

    asyncio.run(main())
    assert "RuntimeError" in caplog.text and "private key" not in caplog.text
