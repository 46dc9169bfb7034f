"""The mock OpenAI/Anthropic upstream server: `python -m tollway.mock`."""

# Only the standard library, msgspec and granian are imported (here and in tollway.mock), so
# the mock runs before the rest of the package or its Rust extension is built.

from __future__ import annotations

import argparse
import os

from tollway.mock import (
    SETTINGS_ENV,
    ASGIApp,
    MockApp,
    MockSettings,
    create_app,
    settings_from_env,
    settings_to_env,
)

__all__ = [
    "SETTINGS_ENV",
    "ASGIApp",
    "MockApp",
    "MockSettings",
    "app_from_env",
    "create_app",
    "main",
    "parse_settings",
    "settings_from_env",
    "settings_to_env",
]

# Seconds Granian waits for open requests on shutdown; `mock-hang` requests would otherwise
# keep it waiting for ever.
_KILL_TIMEOUT_S = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tollway mock-upstream",
        description="Fast mock provider (OpenAI, Anthropic, Gemini, Vertex AI and Bedrock "
        "APIs). Models named mock-status-<code>, mock-reset-before, mock-reset-mid, "
        "mock-truncated, mock-hang or mock-slow-<ms> inject faults; GET/DELETE /_mock/requests "
        "shows/clears what this worker received.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9001)
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
    p.add_argument("--tokens", type=int, default=16, help="tokens per answer")
    p.add_argument("--itl-ms", type=float, default=0.0, help="delay between streamed tokens")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--fail-status", type=int, help="fail API requests with this HTTP status")
    p.add_argument(
        "--fail-rate", type=float, help="fraction of requests that fail, spread evenly (1.0)"
    )
    p.add_argument("--fail-first", type=int, metavar="N", help="only the first N fail, per worker")
    return p


def parse_settings(argv: list[str] | None = None) -> MockSettings:
    """The settings the command line asks for; exits with a usage error when they are invalid."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.fail_status is None and (args.fail_rate is not None or args.fail_first is not None):
        parser.error("--fail-rate and --fail-first need --fail-status")
    try:
        return MockSettings(
            host=args.host,
            port=args.port,
            workers=max(args.workers, 1),
            latency_ms=args.latency_ms,
            tokens=args.tokens,
            itl_ms=args.itl_ms,
            fail_status=args.fail_status,
            fail_rate=1.0 if args.fail_rate is None else args.fail_rate,
            fail_first=args.fail_first,
        )
    except ValueError as e:
        parser.error(str(e))


def app_from_env() -> ASGIApp:
    """Granian's factory in each worker: the app for the settings `main` put in the env."""
    return create_app(settings_from_env())


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    from granian import Granian
    from granian.constants import Interfaces, Loops

    # Workers are separate processes; the environment is how settings reach them.
    os.environ[SETTINGS_ENV] = settings_to_env(settings)
    Granian(
        target="tollway.mock.serve:app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        log_access=False,
        respawn_failed_workers=True,
        workers_kill_timeout=_KILL_TIMEOUT_S,
        # Granian's own metrics port (9090) would clash with the gateway's.
        metrics_enabled=False,
    ).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
