"""A fault-injecting HTTP proxy in front of the moto S3 server, for storage fault tests.

boto3 talks HTTP/1.1 to the proxy (in the test process, or in a real worker through
``TAGGER_S3_ENDPOINT_URL=proxy.url``) and every request is forwarded to moto unless a rule
matching its object key says otherwise. Rules can be added and cleared while it runs::

    proxy.add_rule("a.jpg", SlowDown(), times=2)  # 503 SlowDown twice, then the object
    proxy.add_rule("b.jpg", Deny())  # 403 AccessDenied, every time
    proxy.add_rule("c.jpg", StallBody(seconds=5))  # headers + half the body, then silence
    proxy.add_rule("d.jpg", ResetBody(), times=1)  # half the body, then a TCP RST
    proxy.add_rule("poison.jpg", Hook(lambda key: os.kill(pid, signal.SIGKILL)), times=1)
    assert proxy.hits("b.jpg") == 1

Tests use the ``fault_proxy`` fixture (function scope, needs ``s3_endpoint``). Either
``from tests.faultproxy import fault_proxy  # noqa: F401`` (and ``# noqa: F811`` on each
test taking it), or, lint-clean, ``from tests import faultproxy`` and then
``fault_proxy = faultproxy.fault_proxy`` at module level.
"""

from __future__ import annotations

import http.client
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

# Per-connection headers: not forwarded. "Expect" too: the proxy has already answered
# "100 Continue" itself and sends upstream the whole body at once.
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorResponse:
    """Answer with an S3 XML error instead of forwarding the request."""

    status: int
    code: str
    message: str


@dataclass(frozen=True)
class SlowDown(ErrorResponse):
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."


@dataclass(frozen=True)
class Deny(ErrorResponse):
    status: int = 403
    code: str = "AccessDenied"
    message: str = "Access Denied"


@dataclass(frozen=True)
class StallBody:
    """Forward, send the headers and ``fraction`` of the body, then go silent for
    ``seconds`` (make it longer than the client's read timeout) and close."""

    seconds: float = 5.0
    fraction: float = 0.5


@dataclass(frozen=True)
class ResetBody:
    """Forward, send the headers and ``fraction`` of the body, then reset the connection
    (SO_LINGER 0 and close: the client sees ECONNRESET mid-body)."""

    fraction: float = 0.5


@dataclass(frozen=True)
class Hook:
    """Call ``fn(key)`` in the proxy before forwarding the request (to kill a worker on a
    chosen key, say). If ``fn`` raises, the connection is dropped without an answer."""

    fn: Callable[[str], None]


Action = ErrorResponse | StallBody | ResetBody | Hook


@dataclass
class Rule:
    """``action`` for requests whose key contains ``match`` (and whose method is
    ``method``, if set), the next ``times`` times, or always when ``times`` is None."""

    match: str
    action: Action
    times: int | None = None
    method: str | None = None
    fired: int = 0

    def applies(self, method: str, key: str) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        return self.match in key and (self.method is None or self.method == method)


# --- the proxy -------------------------------------------------------------------------


class FaultProxy:
    """A threaded HTTP/1.1 proxy on a free 127.0.0.1 port forwarding to ``upstream``."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._requests: list[tuple[str, str]] = []
        self._stopping = threading.Event()  # releases stalled handlers on stop()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def add_rule(
        self, match: str, action: Action, *, times: int | None = None, method: str | None = None
    ) -> Rule:
        """Apply ``action`` to requests whose key contains ``match``; the earliest added
        rule that still applies wins. A body fault on a HEAD passes it through."""
        rule = Rule(match, action, times, method.upper() if method else None)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def hits(self, key_substring: str = "", *, method: str | None = None) -> int:
        """How many requests (of ``method``, if given) named a key containing the text."""
        with self._lock:
            return sum(
                key_substring in key and (method is None or m == method.upper())
                for m, key in self._requests
            )

    @property
    def requests(self) -> list[tuple[str, str]]:
        """(method, key) of every request seen, in order; the key is "bucket/object"."""
        with self._lock:
            return list(self._requests)

    def _arrived(self, method: str, key: str) -> Action | None:
        """Record the request; the action of the first rule that applies, if any."""
        with self._lock:
            self._requests.append((method, key))
            for rule in self._rules:
                if rule.applies(method, key):
                    rule.fired += 1
                    return rule.action
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stalled handlers must not hold up stop()
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that hung up (or was killed): expected in fault tests
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive connections, as boto3 uses them
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        key = unquote(urlsplit(self.path).path).lstrip("/")
        body = self._request_body()
        action = proxy._arrived(self.command, key)
        if isinstance(action, Hook):
            action.fn(key)
        if isinstance(action, ErrorResponse):
            self._send_error(action, key)
            return
        status, headers, payload = self._forward(body)
        if isinstance(action, StallBody | ResetBody) and payload:
            self._send_head(status, headers, len(payload))
            self.wfile.write(payload[: int(len(payload) * action.fraction)])
            self.close_connection = True
            if isinstance(action, StallBody):
                proxy._stopping.wait(action.seconds)
            else:
                self._reset()
            return
        self._send_head(status, headers, None if self.command == "HEAD" else len(payload))
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _request_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else None

    def _forward(self, body: bytes | None) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.server.proxy.upstream, timeout=30)
        try:
            # The Host header is passed on as boto3 signed it (moto reads path-style from it).
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            payload = resp.read()
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
            return resp.status, headers, payload
        finally:
            conn.close()

    def _send_head(self, status: int, headers: list[tuple[str, str]], length: int | None) -> None:
        self.send_response_only(status)
        for name, value in headers:
            if length is None or name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send_error(self, error: ErrorResponse, key: str) -> None:
        request_id = f"faultproxy-{id(self):x}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(error.code)}</Code><Message>{escape(error.message)}</Message>"
            f"<Resource>/{escape(key)}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)]
        self._send_head(error.status, headers, len(xml))
        if self.command != "HEAD":
            self.wfile.write(xml)

    def _reset(self) -> None:
        # With a zero linger time close() sends RST instead of FIN. The socket only really
        # closes once rfile (which holds a reference to it) is closed too.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()


@pytest.fixture
def fault_proxy(s3_endpoint: str) -> Iterator[FaultProxy]:
    """A running FaultProxy in front of the moto server, with no rules yet."""
    with FaultProxy(s3_endpoint) as proxy:
        yield proxy
