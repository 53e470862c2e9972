"""A local HTTP server on 127.0.0.1 that plays a vendor's API in a test.

The test supplies a handler: a function from the :class:`RecordedRequest` to a
:class:`FakeResponse`. Write it to follow the vendor's documented contract (status codes, error
bodies, ``429`` with ``Retry-After``, idempotency headers), then point the plugin's real client
(or the vendor's SDK) at :attr:`FakeServer.url`. Every request is recorded in
:attr:`FakeServer.requests`.

A response can also play the network's faults: ``FakeResponse(delay=3)`` answers three seconds
late (longer than the client's timeout: a timeout after the fake did its work), and
``FakeResponse(drop=True)`` closes the connection without answering (the client cannot know
whether the request had an effect).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.datastructures import Headers


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received. ``headers`` are case-insensitive."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Headers
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class FakeResponse:
    """What the fake answers. A ``dict`` or ``list`` body is sent as JSON.

    ``delay`` seconds pass before the answer is sent (the handler's work is already done);
    ``drop`` closes the connection without sending anything, after the delay.
    """

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, dict | list):
            headers.setdefault("Content-Type", "application/json")
            return json.dumps(self.body).encode(), headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode(), headers
        return self.body, headers


Handler = Callable[[RecordedRequest], FakeResponse]


class FakeServer:
    """An HTTP/1.1 server in a background thread on a free port of 127.0.0.1.

    A handler that raises makes the fake answer ``500``; the error is kept in :attr:`errors`
    (the ``portal_fake_server`` fixture fails the test with it).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self.in_flight = 0  # requests received and not answered yet
        self.max_in_flight = 0  # the most at any moment
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _make_request_handler(self))
        # a short poll interval: stopping the server (at every test's teardown) is quick
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="portal-fake-server",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def arrived(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def answered(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def requests_to(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """The recorded requests for ``path`` (and ``method``, when given)."""
        return [
            r
            for r in list(self.requests)
            if r.path == path and (method is None or r.method == method.upper())
        ]

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # many concurrent clients connect at once in a benchmark: the default backlog (5) would
    # drop their connection attempts and add a second of retransmission to some of them
    request_queue_size = 128


def _make_request_handler(fake: FakeServer) -> type[BaseHTTPRequestHandler]:
    class RequestHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every keep-alive answer
        disable_nagle_algorithm = True

        def _handle(self) -> None:
            fake.arrived()
            in_flight = True

            def answering() -> None:
                # before the first byte of the answer leaves: a client that counts its own
                # calls in flight (until it has the answer) never counts fewer than the fake
                nonlocal in_flight
                if in_flight:
                    in_flight = False
                    fake.answered()

            try:
                self._answer(answering)
            finally:
                answering()

        def _answer(self, answering: Callable[[], None]) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            request = RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=Headers(list(self.headers.items())),
                body=body,
            )
            fake.record(request)
            delay, drop = 0.0, False
            try:
                response = fake.handler(request)
                payload, headers = response.encoded()
                status, delay, drop = response.status, response.delay, response.drop
            except Exception:
                fake.errors.append(traceback.format_exc())
                payload, headers, status = b"fake server handler failed", {}, 500
            if delay > 0:
                time.sleep(delay)
            answering()
            if drop:
                self._drop()
                return
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # the client gave up waiting (a delayed answer past its timeout)
                self.close_connection = True

        def _drop(self) -> None:
            """Close the connection without a word: no status line, no headers."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads :attr:`FakeServer.requests` instead."""

    return RequestHandler
