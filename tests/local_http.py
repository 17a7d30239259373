"""A test HTTP server on 127.0.0.1 in a thread of its own (weights and CelebA downloads are tested
against it: no internet)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Protocol, TypeVar


class Serving(Protocol):
    httpd: ThreadingHTTPServer


S = TypeVar("S", bound=Serving)


def serve_in_thread(served: S) -> Iterator[S]:
    """Yield `served` while its `httpd` answers in a daemon thread; shut it down afterwards (a fixture body:
    `yield from serve_in_thread(MyServer())`)."""
    thread = threading.Thread(target=served.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.httpd.shutdown()
        served.httpd.server_close()
        thread.join(5)
