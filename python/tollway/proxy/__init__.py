"""The request path: one `Proxy` per worker reads, admits, calls and settles each request."""

from tollway.proxy.handler import Proxy

__all__ = ["Proxy"]
