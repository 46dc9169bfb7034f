"""Cloud credentials per request: Vertex access tokens minted off the event loop, cached and
renewed in the background before they expire; AWS credentials from the standard chain; a
failure is an upstream failure (never a crash, never a secret in a log)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tollway.providers.aws import AwsCredentials, SigV4Auth, default_region, resolve_credentials
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


class _Target:
    """What SigV4Auth reads of a target; signs by echoing the key id it was given."""

    account = "aws"
    aws_profile: str | None = None

    def sigv4_headers(self, method: str, url: str, headers: Any, body: bytes, *rest: Any) -> Any:
        region, service, key_id = rest[:3]
        return [("authorization", f"{key_id}/{region}/{service}")]


def test_aws_credentials_from_env_and_shared_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-env")
    assert resolve_credentials(None) == AwsCredentials("AKIDENV", "secret-env", None)
    assert "secret" not in repr(resolve_credentials(None))
    creds = tmp_path / "credentials"
    creds.write_text("[work]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s-file\n")
    config = tmp_path / "config"
    config.write_text("[profile work]\nregion = eu-central-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    found = resolve_credentials("work")
    assert found is not None and found.access_key_id == "AKIDFILE"
    assert default_region("work") == "eu-central-1"

    async def main() -> dict[str, str]:
        target = _Target()
        target.aws_profile = "work"
        auth = SigV4Auth(target, "eu-central-1", "bedrock", None)  # type: ignore[arg-type]
        return await auth.headers("https://x/model/m/converse", {"a": "b"}, b"{}")

    headers = asyncio.run(main())
    assert headers == {"a": "b", "authorization": "AKIDFILE/eu-central-1/bedrock"}
