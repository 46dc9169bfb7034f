"""Vertex AI (`provider: vertex`): Gemini models under a Google Cloud project, called with
OAuth access tokens of a service account (or Application Default Credentials).

Tokens are minted and refreshed by `google-auth` in a worker thread, never on the event loop,
and cached until shortly before they expire; a token near its end is renewed in the
background while requests keep using it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Final, Literal
from urllib.parse import quote

import msgspec

from tollway.providers import CloudTarget, Endpoints
from tollway.providers import google as g
from tollway.providers.gemini import is_embeddings
from tollway.upstream import UpstreamClient, UpstreamError, UpstreamResponse

__all__ = ["DEFAULT_REGION", "GoogleToken", "VertexProvider", "vertex_base_url"]

DEFAULT_REGION: Final = "us-central1"
SCOPES: Final = ("https://www.googleapis.com/auth/cloud-platform",)
# A token is renewed in the background this long before it expires, and waited for after.
_RENEW_S: Final = 300.0
_MIN_LEFT_S: Final = 30.0

_encode = msgspec.json.Encoder().encode
_log = logging.getLogger("tollway.providers.vertex")


def vertex_base_url(region: str) -> str:
    if region == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{region}-aiplatform.googleapis.com"


class GoogleToken:
    """An OAuth access token source for one account (see the module docstring)."""

    def __init__(self, info: Mapping[str, Any] | None, file: str | None) -> None:
        self._info = info
        self._file = file
        self._creds: Any = None
        self._token: str | None = None
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None
        self._renewing: asyncio.Future[None] | None = None

    def _mint(self) -> None:
        """Blocking: runs in a worker thread."""
        import google.auth
        import google.auth.transport.requests
        from google.oauth2 import service_account

        if self._creds is None:
            if self._info is not None:
                self._creds = service_account.Credentials.from_service_account_info(
                    dict(self._info), scopes=SCOPES
                )
            elif self._file is not None:
                self._creds = service_account.Credentials.from_service_account_file(
                    self._file, scopes=SCOPES
                )
            else:
                self._creds, _ = google.auth.default(scopes=SCOPES)
        self._creds.refresh(google.auth.transport.requests.Request())
        expiry = self._creds.expiry  # a naive UTC datetime, or None
        lifetime = 3600.0
        if expiry is not None:
            lifetime = expiry.replace(tzinfo=UTC).timestamp() - time.time()
        self._token, self._expires = self._creds.token, time.monotonic() + lifetime

    async def _refresh(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._token is not None and self._expires - time.monotonic() > _RENEW_S:
                return
            try:
                await asyncio.to_thread(self._mint)
            except Exception as e:
                # The reason without the key: google-auth's messages name files and URLs only.
                _log.warning("vertex: could not get an access token: %s", type(e).__name__)
                raise UpstreamError("connect") from None

    def _renewed(self, fut: asyncio.Future[None]) -> None:
        self._renewing = None
        if not fut.cancelled():
            fut.exception()  # logged in _refresh; the current token stays in use

    async def headers(self, url: str, headers: Mapping[str, str], body: bytes) -> dict[str, str]:
        left = self._expires - time.monotonic()
        if self._token is None or left < _MIN_LEFT_S:
            await self._refresh()
        elif left < _RENEW_S and self._renewing is None:
            self._renewing = asyncio.ensure_future(self._refresh())
            self._renewing.add_done_callback(self._renewed)
        return {**headers, "authorization": f"Bearer {self._token}"}

    async def post(
        self,
        client: UpstreamClient,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout_s: float,
    ) -> UpstreamResponse:
        return await client.post(url, await self.headers(url, headers, body), body, timeout_s)


def _service_account(target: CloudTarget) -> Mapping[str, Any] | None:
    text = target.service_account_json
    if not text:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        raise ValueError(f"{target.account}: service_account_json is not valid JSON") from None
    if not isinstance(info, dict):
        raise ValueError(f"{target.account}: service_account_json must be a JSON object")
    return info


@dataclass(frozen=True, slots=True)
class VertexProvider:
    name: str = "vertex"
    stream_format: Literal["gemini"] = "gemini"
    # One token source per account, shared by its models.
    _tokens: dict[tuple[str | None, str | None, str], GoogleToken] = field(default_factory=dict)

    def endpoints(self, target: CloudTarget) -> Endpoints:
        region = target.region or DEFAULT_REGION
        base = (target.base_url or vertex_base_url(region)).rstrip("/")
        project = quote(target.project or "", safe="")
        model = (
            f"{base}/v1/projects/{project}/locations/{quote(region, safe='')}"
            f"/publishers/google/models/{quote(target.model_id, safe='')}"
        )
        key = (target.service_account_json, target.service_account_file, target.account)
        token = self._tokens.get(key)
        if token is None:
            token = GoogleToken(_service_account(target), target.service_account_file)
            self._tokens[key] = token
        headers = {"content-type": "application/json", **dict(target.headers)}
        return Endpoints(
            f"{model}:generateContent",
            f"{model}:predict",
            headers,
            stream_url=f"{model}:streamGenerateContent?alt=sse",
            auth=token,
        )

    def request_body(self, openai_body: dict[str, Any], model_id: str) -> bytes:
        if is_embeddings(openai_body):
            texts = g.to_embeddings_request(openai_body, model_id)["requests"]
            instances = [{"content": r["content"]["parts"][0]["text"]} for r in texts]
            req: dict[str, Any] = {"instances": instances}
            if openai_body.get("dimensions"):
                req["parameters"] = {"outputDimensionality": openai_body["dimensions"]}
            return _encode(req)
        return _encode(g.to_request(openai_body))

    def response_body(
        self, status: int, body: bytes, model: str, request: dict[str, Any] | None = None
    ) -> bytes:
        if not 200 <= status < 300:
            return g.from_error(status, body)
        if request is not None and is_embeddings(request):
            return g.from_embeddings(body, model, request)
        return g.from_response(body, model)
