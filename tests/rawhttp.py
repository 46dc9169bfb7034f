"""HTTP/1.1 over a raw socket, for shapes a client library would not send or would hide."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after the response

    def json(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.json.decode(self.body)
        return out


def connect(url: str, timeout: float = 10.0) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout)


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse:
    """One response (Content-Length or chunked), then whether the server closed the socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    closed = False
    if "content-length" in headers:
        size = int(headers["content-length"])
        while len(rest) < size:
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            rest += chunk
        body = rest[:size]
    elif headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                closed = True
                break
            rest += chunk
        body = _dechunk(rest)
    else:
        body = rest
    if not closed:
        closed = _closes(sock, 2.0)
    return RawResponse(status, headers, body, closed)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def _closes(sock: socket.socket, within: float) -> bool:
    """True when the peer closes the connection within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def request(url: str, raw: bytes, timeout: float = 10.0) -> RawResponse:
    """Sends `raw` (a whole request, head and body) and reads the response."""
    with connect(url, timeout) as sock:
        sock.sendall(raw)
        return read_response(sock, timeout)


def post(url: str, path: str, body: bytes, headers: dict[str, str]) -> RawResponse:
    """A POST with exactly `body` as its bytes (no re-encoding)."""
    host = urlsplit(url).netloc
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return request(url, head.encode("latin-1") + body)
