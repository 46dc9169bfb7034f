"""The `tollway` command: serve, check-config, mock-upstream, hash-key."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from tollway.config import ConfigError
from tollway.engine import compile_engine
from tollway.serve import supervise

__all__ = ["main"]

DEMO_KEY = "tollway-demo-key"


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _demo_mock() -> Iterator[str]:
    """Runs the bundled mock upstream for the demo; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "tollway.mock", "--port", str(port)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):  # noqa: S310 (http only)
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("tollway: the demo mock upstream did not start") from None
                time.sleep(0.1)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _demo_banner(host: str, port: int) -> str:
    base = f"http://{host}:{port}"
    py = (
        "from openai import OpenAI; "
        f"c = OpenAI(base_url='{base}/v1', api_key='{DEMO_KEY}'); "
        "print(c.chat.completions.create(model='mock/gpt-4o-mini', "
        "messages=[{'role': 'user', 'content': 'Hello'}]).choices[0].message.content)"
    )
    return "\n".join(
        [
            f"Tollway demo: gateway on {base}, bundled mock upstream, demo key '{DEMO_KEY}'.",
            "Try:",
            f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' \\",
            "    -H 'Content-Type: application/json' \\",
            '    -d \'{"model": "mock/gpt-4o-mini", '
            '"messages": [{"role": "user", "content": "Hello"}]}\'',
            f'  python -c "{py}"',
            "",
        ]
    )


def _serve(args: argparse.Namespace) -> int:
    config = args.config or os.environ.get("TOLLWAY_CONFIG")
    if config:
        return _run_granian(Path(config).resolve(), args, banner=None)
    demo = resources.files("tollway").joinpath("demo.yaml")
    with _demo_mock() as mock_url, resources.as_file(demo) as demo_path:
        os.environ["TOLLWAY_DEMO_MOCK_URL"] = mock_url
        host = args.host or "127.0.0.1"
        port = args.port or 8080
        return _run_granian(demo_path, args, banner=_demo_banner(host, port))


def _run_granian(config: Path, args: argparse.Namespace, banner: str | None) -> int:
    try:
        engine = compile_engine(config)
    except ConfigError as e:
        print(f"tollway: invalid config {config}:", file=sys.stderr)
        for err in e.errors:
            print(f"  {err}", file=sys.stderr)
        return 1
    for warning in engine.warnings:
        print(f"tollway: warning: {warning}", file=sys.stderr)
    settings = engine.settings
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    workers = args.workers or settings.workers
    if banner:
        print(banner, flush=True)
    return supervise(config, settings, host, port, workers)


def _check_config(args: argparse.Namespace) -> int:
    try:
        engine = compile_engine(args.path)
    except ConfigError as e:
        for err in e.errors:
            print(err)
        print(f"{len(e.errors)} error(s) in {args.path}", file=sys.stderr)
        return 1
    for warning in engine.warnings:
        print(f"warning: {warning}")
    noted = f", {len(engine.warnings)} warning(s)" if engine.warnings else ""
    print(f"{args.path}: OK ({len(engine.targets)} targets, {len(engine.keys)} keys{noted})")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().rstrip("\n") if args.key == "-" else args.key
    print(f"sha256:{hashlib.sha256(key.encode()).hexdigest()}")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tollway", description="A fast OpenAI-compatible LLM gateway.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway (no config: the built-in demo)")
    s.add_argument("--config", help="config file or directory (default: $TOLLWAY_CONFIG)")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)
    s.set_defaults(func=_serve)
    c = sub.add_parser("check-config", help="validate a config; print every error")
    c.add_argument("path")
    c.set_defaults(func=_check_config)
    sub.add_parser("mock-upstream", help="run the mock OpenAI/Anthropic provider", add_help=False)
    h = sub.add_parser("hash-key", help="print the sha256: form of a key for the config")
    h.add_argument("key", help="the key, or - to read it from stdin")
    h.set_defaults(func=_hash_key)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mock-upstream"]:
        from tollway.mock.serve import main as mock_main

        return mock_main(argv[1:])
    args = _parser().parse_args(argv)
    code: int = args.func(args)
    return code
