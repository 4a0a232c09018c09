"""A loopback HTTP server for the download tests: 127.0.0.1, port 0, a thread, bounded in time.

Tests register routes (``server.add(path, body, ...)``), read ``server.url(path)`` and count
``server.hits[path]``. A route can announce a longer ``Content-Length`` than it sends and close
early (a truncated transfer), answer with an error status for its first requests, or stall.
The server stops at the end of the test, or by itself after ``_LIFETIME_S`` whatever happens.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_LIFETIME_S = 60.0


@dataclass
class Route:
    body: bytes
    truncate_to: int | None = None  # send only this many bytes, after announcing len(body)
    fail_first: int = 0  # answer the first n requests with `fail_status`
    fail_status: int = 503
    delay_s: float = 0.0  # stall before answering


class LoopbackServer:
    """Serves registered byte strings; records how often each path was requested."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        routes, hits = self.routes, self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold a handler thread for long

            def do_GET(self) -> None:  # the stdlib's name
                hits[self.path] += 1
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404, "no such file")
                    return
                if route.delay_s:
                    time.sleep(route.delay_s)
                if hits[self.path] <= route.fail_first:
                    self.send_error(route.fail_status, "try later")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(route.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                payload = route.body if route.truncate_to is None else route.body[: route.truncate_to]
                try:
                    self.wfile.write(payload)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the client gave up first
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._deadline = threading.Timer(_LIFETIME_S, self.stop)
        self._deadline.daemon = True
        self._stopped = False

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._deadline.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._deadline.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def add(self, path: str, body: bytes, **behaviour: object) -> str:
        """Serve ``body`` at ``path``; returns its URL."""
        self.routes[path] = Route(body, **behaviour)  # type: ignore[arg-type]
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{path}"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    srv = LoopbackServer().start()
    try:
        yield srv
    finally:
        srv.stop()
