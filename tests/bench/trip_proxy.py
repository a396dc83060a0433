"""A TCP proxy between one node and its Redis that counts round trips: requests, not bytes or commands.

    proxy = TripProxy(redis_port).start()   # node connects to proxy.port
    before = proxy.trips()
    ...
    proxy.trips() - before                   # request-and-reply exchanges in between
    proxy.close()

A round trip starts when a client sends bytes after the server last spoke on
that connection (or on a new connection): a pipelined batch is one, however
many segments it arrives in, and a blocking read (``XREAD BLOCK``) is one
however long it blocks. So the count is what a node costs Redis and the
network in requests, independent of how many commands each carries. One
thread, ``selectors``; every connection gets its own upstream connection.
"""

import selectors
import socket
import threading

CHUNK_BYTES = 65536


class TripProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, None)
        self.lock = threading.Lock()
        self.counts = {"trips": 0, "connections": 0, "bytes_up": 0, "bytes_down": 0}
        self.closing = False
        self.thread = threading.Thread(target=self._run, name="trip-proxy", daemon=True)

    def start(self) -> "TripProxy":
        self.thread.start()
        return self

    def trips(self) -> int:
        with self.lock:
            return self.counts["trips"]

    def snapshot(self) -> dict:
        with self.lock:
            return dict(self.counts)

    def close(self) -> None:
        self.closing = True
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()

    def _run(self) -> None:
        while not self.closing:
            for key, _mask in self.selector.select(0.2):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, key.data)

    def _accept(self) -> None:
        try:
            client, _addr = self.listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        # shared by both directions: the two sockets and which side spoke last
        pair = {"client": client, "server": server, "last": "server"}
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.register(client, selectors.EVENT_READ, ("client", pair))
        self.selector.register(server, selectors.EVENT_READ, ("server", pair))
        with self.lock:
            self.counts["connections"] += 1

    def _forward(self, sock, data) -> None:
        side, pair = data
        try:
            chunk = sock.recv(CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(pair)
            return
        with self.lock:
            if side == "client" and pair["last"] == "server":
                self.counts["trips"] += 1
            self.counts["bytes_up" if side == "client" else "bytes_down"] += len(chunk)
        pair["last"] = side
        other = pair["server" if side == "client" else "client"]
        try:
            other.setblocking(True)  # small frames on localhost: a blocking send never waits long
            other.sendall(chunk)
            other.setblocking(False)
        except OSError:
            self._drop(pair)

    def _drop(self, pair) -> None:
        for name in ("client", "server"):
            sock = pair[name]
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
