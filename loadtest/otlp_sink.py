"""A local OTLP/HTTP receiver that accepts and discards trace exports, to measure OTEL's cost."""

from __future__ import annotations

import argparse
import os
from typing import Any

# An empty protobuf message is zero bytes: a valid ExportTraceServiceResponse (nothing rejected).
PROTOBUF = [("content-type", "application/x-protobuf")]


async def app(scope: Any, proto: Any) -> None:
    if scope.path == "/healthz":
        proto.response_bytes(200, [("content-type", "text/plain")], b"ok")
        return
    await proto()  # drain the body so the exporter's connection stays reusable
    proto.response_bytes(200, PROTOBUF, b"")


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    Granian(
        f"{os.path.abspath(__file__)}:app",
        address=args.host,
        port=args.port,
        interface=Interfaces.RSGI,
        websockets=False,
        log_access=False,
    ).serve()


if __name__ == "__main__":
    main()
