"""The TCP proxy the broker-fault tests put between a worker and Redis."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests.tcpproxy import TcpProxy


@pytest.fixture
def echo():
    """A loopback echo server; yields its (host, port)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn, contextlib.suppress(OSError):  # the proxy may reset this side too
        while data := conn.recv(65536):
            conn.sendall(data)


def _connected(proxy: TcpProxy) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    client.sendall(b"ping")
    assert client.recv(4) == b"ping"
    return client


def test_reset_reaches_an_idle_client_at_once(echo):
    """reset() sends an RST to a client that is only waiting for data (a worker blocked on
    BRPOP), without waiting for the next byte to flow."""
    proxy = TcpProxy(echo)
    try:
        client = _connected(proxy)
        assert proxy.reset() == 1
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            client.recv(1)
        assert time.monotonic() - started < 2
        client.close()
    finally:
        proxy.close()


def test_blackhole_answers_nothing_and_keeps_the_link_open(echo):
    """blackhole() drops what the client sends and sends nothing back: no reply, no FIN."""
    proxy = TcpProxy(echo)
    try:
        client = _connected(proxy)
        assert proxy.blackhole() == 1
        client.settimeout(0.5)
        client.sendall(b"ping")
        with pytest.raises(TimeoutError):
            client.recv(1)
        _connected(proxy).close()  # a new connection still goes through (and echoes)
        client.close()
    finally:
        proxy.close()
