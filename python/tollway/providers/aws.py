"""AWS credentials and SigV4 request signing for Bedrock.

Credentials come from the account (`aws_access_key_id`, `aws_secret_access_key`,
`aws_session_token`), else the standard chain: `AWS_*` environment variables, then a profile of
the shared config files (`aws_profile`, `AWS_PROFILE` or `default`), through botocore when it is
installed (SSO, assumed roles, instance roles) or read directly when not. They are resolved once,
in a worker thread, at the first request. Each request is then signed in Rust (AWS's `aws-sigv4`
crate): one call of a few microseconds.
"""

from __future__ import annotations

import asyncio
import configparser
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from tollway.providers.fanout import post_parts
from tollway.upstream import UpstreamError

if TYPE_CHECKING:
    from tollway.providers import CloudTarget
    from tollway.upstream import UpstreamClient, UpstreamResponse

__all__ = ["AwsCredentials", "SigV4Auth", "default_region"]

_log = logging.getLogger("tollway.providers.aws")


@dataclass(frozen=True, slots=True)
class AwsCredentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:
        return "AwsCredentials(..)"  # never print a secret


def _config_files() -> tuple[Path, Path]:
    home = Path.home() / ".aws"
    creds = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or str(home / "credentials")
    config = os.environ.get("AWS_CONFIG_FILE") or str(home / "config")
    return Path(creds), Path(config)


def _profile_section(profile: str) -> dict[str, str]:
    """The profile's keys from the credentials file, then the config file."""
    creds_file, config_file = _config_files()
    out: dict[str, str] = {}
    for path, section in ((config_file, f"profile {profile}"), (creds_file, profile)):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path)
        except configparser.Error:
            continue
        if profile == "default" and path == config_file and parser.has_section("default"):
            section = "default"
        if parser.has_section(section):
            out.update(parser.items(section))
    return out


def default_region(profile: str | None) -> str:
    """The region of the standard chain: environment, then the profile, then us-east-1."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    return _profile_section(name).get("region") or "us-east-1"


def resolve_credentials(profile: str | None) -> AwsCredentials | None:
    """The standard chain (blocking: call it in a worker thread)."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret and profile is None:
        return AwsCredentials(key, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    name = profile or os.environ.get("AWS_PROFILE") or "default"
    try:
        import botocore.session
    except ImportError:
        section = _profile_section(name)
        key, secret = section.get("aws_access_key_id"), section.get("aws_secret_access_key")
        if key and secret:
            return AwsCredentials(key, secret, section.get("aws_session_token"))
        return None
    session: Any = botocore.session.Session(profile=profile)
    found = session.get_credentials()
    if found is None:
        return None
    frozen = found.get_frozen_credentials()
    return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token)


class SigV4Auth:
    """Signs each request of one account for `service` in `region`. Credentials from the
    chain (possibly temporary: SSO, roles) are looked up again in the background every
    `REFRESH_S`, while requests keep signing with the current ones."""

    REFRESH_S: Final = 600.0

    def __init__(
        self,
        target: CloudTarget,
        region: str,
        service: str,
        credentials: AwsCredentials | None,
    ) -> None:
        self._sign = target.sigv4_headers
        self.region = region
        self.service = service
        self._creds = credentials
        self._static = credentials is not None  # the account's own keys never change
        self._resolved_at = 0.0
        self._profile = target.aws_profile
        self._account = target.account
        self._lock: asyncio.Lock | None = None
        self._refreshing: asyncio.Future[AwsCredentials] | None = None

    async def _resolve(self) -> AwsCredentials:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._creds is None or self._stale():
                try:
                    found = await asyncio.to_thread(resolve_credentials, self._profile)
                except Exception as e:
                    _log.warning("bedrock: credential lookup failed: %s", type(e).__name__)
                    found = None
                if found is not None:
                    self._creds, self._resolved_at = found, time.monotonic()
                if self._creds is None:
                    _log.warning("bedrock: no AWS credentials for account %r", self._account)
                    raise UpstreamError("connect")
            return self._creds

    def _stale(self) -> bool:
        return not self._static and time.monotonic() - self._resolved_at > self.REFRESH_S

    def _refreshed(self, fut: asyncio.Future[AwsCredentials]) -> None:
        self._refreshing = None
        if not fut.cancelled():
            fut.exception()  # logged in _resolve; the current credentials stay in use

    async def headers(self, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        creds = self._creds
        if creds is None:
            creds = await self._resolve()
        elif self._refreshing is None and self._stale():
            self._refreshing = asyncio.ensure_future(self._resolve())
            self._refreshing.add_done_callback(self._refreshed)
        signed = self._sign(
            "POST",
            url,
            list(headers.items()),
            body,
            self.region,
            self.service,
            creds.access_key_id,
            creds.secret_access_key,
            creds.session_token,
        )
        return {**headers, **dict(signed)}

    async def post(
        self,
        client: UpstreamClient,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> UpstreamResponse:
        if url.endswith("/invoke"):
            # InvokeModel batches: one signed call per line (`bedrock_embed.to_invoke`).
            parts = body.split(b"\n")
            return await post_parts(client, url, headers, parts, timeout_s, self.headers)
        return await client.post(url, await self.headers(url, headers, body), body, timeout_s)
