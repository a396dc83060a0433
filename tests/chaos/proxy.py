"""A threaded TCP proxy in front of Redis, one listener per node, each with its own mode.

    proxy = StallProxy("127.0.0.1", redis_port)
    port = proxy.add("n1")                 # n1's REDIS_PORT points here
    proxy.set_mode("n1", "delay", 2.0)     # every chunk, both ways, arrives 2 s late
    proxy.set_mode("n1", "cut")            # open connections closed, new ones closed at once
    proxy.set_mode("n1", "pass")

Modes:
- ``pass``: bytes go through as they come;
- ``delay``: each chunk is held ``delay_s`` before it is forwarded, in both
  directions, and is forwarded even if the client gave up meanwhile: a
  request that timed out on the client may still reach Redis late (the case
  fencing is for);
- ``cut``: every open connection of that listener is closed, and new ones are
  accepted and closed at once (the client sees a reset, not a hang).

A listener may also be a Unix socket (``add(name, unix_path=...)``), for a
node in a network namespace that reaches the host only through the file
system (see relay.py). The proxy opens one upstream connection per client
connection, so a Redis restart simply breaks the pairs and clients reconnect.
"""

import os
import socket
import threading
import time

MODES = ("pass", "delay", "cut")
CHUNK_BYTES = 65536


class _Listener:
    def __init__(self, name: str, sock: socket.socket, address):
        self.name, self.sock, self.address = name, sock, address
        self.mode, self.delay_s = "pass", 0.0
        self.pairs = set()


class StallProxy:
    """Listeners that forward to one upstream (Redis) address; see the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int, connect_timeout_s: float = 2.0):
        self.upstream = (upstream_host, upstream_port)
        self.connect_timeout_s = connect_timeout_s
        self._listeners = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def add(self, name: str, unix_path: str = None):
        """Open a listener for ``name``; return its TCP port (or the Unix path)."""
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(unix_path)
            address = unix_path
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            address = sock.getsockname()[1]
        sock.listen(64)
        sock.settimeout(0.1)
        listener = _Listener(name, sock, address)
        with self._lock:
            self._listeners[name] = listener
        threading.Thread(target=self._accept_loop, args=(listener,), name="proxy-" + name, daemon=True).start()
        return address

    def set_mode(self, name: str, mode: str, delay_s: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError("mode must be one of %s, got %r" % (", ".join(MODES), mode))
        listener = self._listeners[name]
        listener.mode, listener.delay_s = mode, float(delay_s)
        if mode == "cut":
            with self._lock:
                pairs = list(listener.pairs)
            for pair in pairs:
                _close_pair(pair)

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            listeners = list(self._listeners.values())
        for listener in listeners:
            try:
                listener.sock.close()
            except OSError:
                pass
            for pair in list(listener.pairs):
                _close_pair(pair)
            if isinstance(listener.address, str) and os.path.exists(listener.address):
                os.unlink(listener.address)

    # -- the plumbing --
    def _accept_loop(self, listener: _Listener) -> None:
        while not self._stopping.is_set():
            try:
                client, _addr = listener.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if listener.mode == "cut":
                _close_quietly(client)
                continue
            threading.Thread(target=self._connect, args=(listener, client), daemon=True).start()

    def _connect(self, listener: _Listener, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout_s)
        except OSError:
            _close_quietly(client)  # Redis is down: the client sees the connection close
            return
        for sock in (client, upstream):
            sock.settimeout(None)
            if sock.family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (client, upstream)
        with self._lock:
            listener.pairs.add(pair)
        threading.Thread(target=self._pump, args=(listener, pair, client, upstream), daemon=True).start()
        self._pump(listener, pair, upstream, client)

    def _pump(self, listener: _Listener, pair, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` chunk by chunk, applying the listener's mode to each chunk."""
        try:
            while True:
                data = src.recv(CHUNK_BYTES)
                if not data or listener.mode == "cut":
                    break
                if listener.mode == "delay" and listener.delay_s > 0:
                    time.sleep(listener.delay_s)
                    if listener.mode == "cut":
                        break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            _close_pair(pair)
            with self._lock:
                listener.pairs.discard(pair)


def _close_pair(pair) -> None:
    for sock in pair:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        _close_quietly(sock)


def _close_quietly(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
