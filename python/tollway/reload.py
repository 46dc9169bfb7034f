"""Hot reload: each worker polls its config and swaps in a new engine when a valid change lands.

The new `Runtime` replaces the old one atomically (one attribute assignment); requests in
flight keep the runtime they started with. An invalid config is logged, with every error, and
ignored: the old one keeps serving. Polling, YAML parsing and compiling run in a worker
thread (the compile releases the GIL), so a reload never stalls requests on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tollway.config import ConfigError, config_fingerprint
from tollway.engine import Runtime, load_runtime

__all__ = ["watch_config"]

log = logging.getLogger("tollway.reload")


async def watch_config(
    path: str,
    current: Callable[[], Runtime],
    swap: Callable[[Runtime], None],
    interval_s: float = 1.0,
) -> None:
    """Polls `path` every `interval_s` (well inside the 5 s promise) until cancelled."""
    seen = await asyncio.to_thread(config_fingerprint, path)
    while True:
        await asyncio.sleep(interval_s)
        now = await asyncio.to_thread(config_fingerprint, path)
        if now == seen or not now:
            continue
        seen = now
        try:
            runtime = await asyncio.to_thread(load_runtime, path, current())
        except ConfigError as e:
            log.error(
                "config change in %s rejected; still serving the previous config:\n  %s",
                path,
                "\n  ".join(e.errors),
            )
            continue
        swap(runtime)
        log.info("config reloaded from %s", path)
        for warning in runtime.engine.warnings:
            log.warning("config warning: %s", warning)
