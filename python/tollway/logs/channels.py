"""Where alerts go: a Slack incoming webhook, a generic JSON webhook, or email over SMTP."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import aiohttp
import msgspec

from tollway.logs.events import Crossing

__all__ = ["ChannelError", "send"]


class ChannelError(Exception):
    """A delivery failed; `retry` says whether trying again may help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def payload(c: Crossing, event_id: int) -> dict[str, Any]:
    return {"event_id": event_id, **msgspec.to_builtins(c)}


async def send(
    channel: dict[str, Any], c: Crossing, event_id: int, session: aiohttp.ClientSession
) -> None:
    kind = channel["kind"]
    if kind == "email":
        await _email(channel, c)
        return
    body = {"text": c.message} if kind == "slack" else payload(c, event_id)
    try:
        async with session.post(
            channel["url"], json=body, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            await resp.read()
            if resp.status >= 300:
                # 4xx other than 408/429 will not get better by repeating it.
                retry = resp.status >= 500 or resp.status in (408, 429)
                raise ChannelError(f"{kind} channel answered {resp.status}", retry)
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise ChannelError(f"{kind} channel unreachable ({type(e).__name__})") from None


async def _email(channel: dict[str, Any], c: Crossing) -> None:
    import aiosmtplib  # loaded only by deployments that send email

    smtp = channel["smtp"]
    msg = EmailMessage()
    msg["From"] = channel["from"]
    msg["To"] = ", ".join(channel["to"])
    msg["Subject"] = f"[tollway] {c.kind} alert {c.alert}: {c.entity}"
    msg.set_content(c.message + "\n")
    try:
        await aiosmtplib.send(
            msg,
            hostname=smtp["host"],
            port=smtp.get("port", 587 if smtp.get("starttls", True) else 25),
            username=smtp.get("username"),
            password=smtp.get("password"),
            start_tls=bool(smtp.get("starttls", True)),
            timeout=smtp.get("timeout_ms", 10_000) / 1000,
        )
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as e:
        raise ChannelError(f"email channel failed ({type(e).__name__})") from None
