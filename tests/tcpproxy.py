"""A TCP proxy between a worker and Redis that can fail the way networks do: black-hole
the open connections (packets silently dropped: no FIN, no RST, the sockets stay open, as
when a NAT or firewall forgets a flow) or reset them. New connections always go through.
It runs in the test process on a loopback port; the worker is a real process."""

from __future__ import annotations

import socket
import struct
import threading


class _Link:
    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.blackholed = False

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not self.blackholed:  # black-holed: read and drop, answer nothing
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            if not self.blackholed:
                self.close()

    def close(self, *, reset: bool = False) -> None:
        for s in (self.client, self.upstream):
            try:
                if reset:  # SO_LINGER 0: the last close sends RST instead of FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    # The pump threads are blocked in recv() on these sockets, and on Linux
                    # close() does not interrupt them: the socket (and the RST) would wait
                    # for the next byte. SHUT_RD wakes them and sends nothing to either peer.
                    s.shutdown(socket.SHUT_RD)
                s.close()
            except OSError:
                pass


class TcpProxy:
    """Forward 127.0.0.1:<port> to ``upstream`` (host, port)."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._links: list[_Link] = []
        self._held: list[_Link] = []  # black-holed links, kept open until close()
        self._lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, name="tcpproxy", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.append(link)
                self.connections += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=link.pump, args=(src, dst), daemon=True).start()

    def blackhole(self) -> int:
        """Silently drop everything on the connections open now; returns how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.blackholed = True
        self._held += links
        return len(links)

    def reset(self) -> int:
        """Reset (RST) every open connection; returns how many."""
        with self._lock:
            links, self._links = self._links, []
        for link in links:
            link.close(reset=True)
        return len(links)

    def close(self) -> None:
        self._server.close()
        for link in [*self._links, *self._held]:
            link.close()
