"""Small misbehaving TCP servers for fault tests: things that are not a healthy Redis.

    from support.fake_servers import FakeServer, silent, http, error_reply

    with FakeServer(http()) as fake:
        client = Redis("127.0.0.1", fake.port)   # talks to an "HTTP server"

Each ``FakeServer`` listens on 127.0.0.1:<free port> and runs its handler in
a daemon thread per connection: ``handler(sock, fake)``. ``fake.connections``
counts accepted connections and ``fake.received`` keeps every byte received,
so a test can assert how many attempts a client made and what it sent (e.g.
that a password never travels to the wrong place). ``stop()`` shuts every
socket down, which wakes any handler blocked in ``recv``.

Handlers (each a factory returning the handler):

- ``silent()``: accept, read and discard, never answer (a hung server);
- ``no_read()``: accept and never read, so the client's sends fill the buffers;
- ``http()``: answer the first bytes with an HTTP 400 page and close;
- ``close_mid_reply()``: answer each command with half a bulk string, then close;
- ``huge_bulk(size)``: claim a bulk string of ``size`` bytes (100 GB by default);
- ``error_reply(text)``: answer every command with ``-<text>`` (LOADING, READONLY...);
- ``canned(*replies)``: answer the n-th command with the n-th raw reply, then the last one;
- ``reset_after(n)``: answer n commands with ``+OK``, then reset the connection (RST);
- ``dribble_proxy(host, port, delay_s)``: forward to a real Redis and send its replies
  back one byte per ``send``;
- ``lose_reply_proxy(host, port, markers, times)``: forward to a real Redis, but run the first
  ``times`` requests that carry an argument in ``markers`` and close the connection instead of
  answering them (a reply lost on the wire after the command ran);
- ``drip(reply, delay_s)``: answer each command with ``reply`` one byte every ``delay_s``
  (a server that keeps every single ``recv`` alive but never finishes in time);
- ``array_stream(header, items, item)``: answer with an array header, then ``items`` copies
  of ``item`` (``*0``: empty arrays) streamed as fast as the client reads, then hold;
- ``sentinel_naming(host, port)``: a sentinel that names ``host:port`` as the master.
"""

import socket
import struct
import threading
import time

LOCALHOST = "127.0.0.1"


class FakeServer:
    """A listening socket on a free port whose connections are served by ``handler``."""

    def __init__(self, handler):
        self.handler = handler
        self.connections = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self._socks = []
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOCALHOST, 0))
        self.host, self.port = LOCALHOST, self._listener.getsockname()[1]
        self._thread = None

    def start(self) -> "FakeServer":
        self._listener.listen(16)
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept_loop, name="fake-%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _addr = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                self.connections += 1
                self._socks.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock) -> None:
        try:
            self.handler(sock, self)
        except OSError:
            pass  # the client went away, or stop() shut the socket
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def recv(self, sock, size: int = 65536) -> bytes:
        """``sock.recv`` that also records what arrived; b"" when closed."""
        data = sock.recv(size)
        with self._lock:
            self.received += data
        return data

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            for action in (lambda s: s.shutdown(socket.SHUT_RDWR), lambda s: s.close()):
                try:
                    action(sock)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class CommandReader:
    """Splits the bytes a client sends into RESP commands (arrays of bulk strings).

    Deliberately independent of the project's parser: it only needs to know
    where one command ends so a fake can answer once per command.
    """

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list:
        """Add bytes; return the complete commands now available (lists of bytes)."""
        self.buf += data
        out = []
        while True:
            parsed = self._one()
            if parsed is None:
                return out
            out.append(parsed)

    def _one(self):
        buf = self.buf
        if not buf.startswith(b"*"):
            if b"\r\n" in buf:  # an inline command (PING\r\n)
                line, _, rest = bytes(buf).partition(b"\r\n")
                self.buf = bytearray(rest)
                return line.split()
            return None
        end = buf.find(b"\r\n")
        if end < 0:
            return None
        count, pos, args = int(buf[1:end]), end + 2, []
        for _ in range(count):
            end = buf.find(b"\r\n", pos)
            if end < 0:
                return None
            size = int(buf[pos + 1:end])
            start = end + 2
            if len(buf) < start + size + 2:
                return None
            args.append(bytes(buf[start:start + size]))
            pos = start + size + 2
        del buf[:pos]
        return args


def _each_command(sock, fake):
    """Yield every command the client sends until it closes."""
    reader = CommandReader()
    while True:
        data = fake.recv(sock)
        if not data:
            return
        for command in reader.feed(data):
            yield command


def _hold(sock, fake) -> None:
    """Keep the connection open, reading and discarding, until the client or stop() ends it."""
    while fake.recv(sock):
        pass


def silent():
    """Accept, read, never answer: the client must time out."""
    return _hold


def no_read():
    """Accept and never read: a big enough send blocks once the buffers fill."""
    def handler(sock, fake):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        while not fake.stopping:
            time.sleep(0.05)
    return handler


HTTP_400 = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 50\r\n"
            b"Connection: close\r\n\r\n<html><body><h1>400 Bad Request</h1></body></html>")


def http():
    """Answer like a web server does to bytes that are not HTTP, then close."""
    def handler(sock, fake):
        if fake.recv(sock):
            sock.sendall(HTTP_400)
    return handler


def close_mid_reply():
    """Start a 10-byte bulk reply, send 3 bytes of it, close."""
    def handler(sock, fake):
        for _command in _each_command(sock, fake):
            sock.sendall(b"$10\r\nabc")
            return
    return handler


def huge_bulk(size: int = 100 * 1024 ** 3):
    """Claim a bulk string of ``size`` bytes, send none of it, hold the connection."""
    def handler(sock, fake):
        for _command in _each_command(sock, fake):
            sock.sendall(b"$%d\r\n" % size)
            _hold(sock, fake)
            return
    return handler


def error_reply(text: str):
    """Answer every command with the error reply ``-<text>``."""
    return canned(b"-" + text.encode() + b"\r\n")


def canned(*replies: bytes):
    """Answer command n with ``replies[n]`` (raw RESP), repeating the last one."""
    def handler(sock, fake):
        for i, _command in enumerate(_each_command(sock, fake)):
            sock.sendall(replies[min(i, len(replies) - 1)])
    return handler


def reset_after(n: int = 1):
    """Answer ``n`` commands with +OK, then close with RST (SO_LINGER 0)."""
    def handler(sock, fake):
        for i, _command in enumerate(_each_command(sock, fake)):
            sock.sendall(b"+OK\r\n")
            if i + 1 >= n:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
                return
    return handler


def dribble_proxy(host: str, port: int, delay_s: float = 0.0):
    """Forward to a real server; send its replies back one byte per send (TCP_NODELAY)."""
    def handler(sock, fake):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream = socket.create_connection((host, port), timeout=5)
        upstream.settimeout(None)
        done = threading.Event()

        def replies():
            try:
                while not done.is_set():
                    data = upstream.recv(65536)
                    if not data:
                        break
                    for i in range(len(data)):
                        sock.sendall(data[i:i + 1])
                        if delay_s:
                            time.sleep(delay_s)
            except OSError:
                pass
            finally:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        back = threading.Thread(target=replies, daemon=True)
        back.start()
        try:
            while True:
                data = fake.recv(sock)
                if not data:
                    break
                upstream.sendall(data)
        finally:
            done.set()
            _close_upstream(upstream, back)
    return handler


def lose_reply_proxy(host: str, port: int, markers, times: int = 1):
    """Forward to a real server; the first ``times`` requests (over all connections) with a command
    that has an argument in ``markers`` (bytes) are forwarded and run (a PING sent after them is
    answered), then the client's connection is closed instead of sending their replies."""
    markers, left, lock = frozenset(markers), [times], threading.Lock()

    def handler(sock, fake):
        upstream = socket.create_connection((host, port), timeout=5)
        upstream.settimeout(None)
        dropping, ran = threading.Event(), threading.Event()

        def replies():  # relays replies until a marked request went upstream, then waits for its PONG
            tail = b""
            try:
                while True:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    if not dropping.is_set():
                        sock.sendall(data)
                        continue
                    tail = (tail + data)[-7:]
                    if tail == b"+PONG\r\n":
                        ran.set()
                        return
            except OSError:
                pass

        back = threading.Thread(target=replies, daemon=True)
        back.start()
        reader = CommandReader()
        try:
            while True:
                data = fake.recv(sock)
                if not data:
                    return
                commands = reader.feed(data)
                if not dropping.is_set() and any(arg in markers for command in commands for arg in command):
                    with lock:
                        if left[0] > 0:
                            left[0] -= 1
                            dropping.set()
                upstream.sendall(data)
                if dropping.is_set() and not reader.buf:  # the whole request went: run it, answer nothing
                    upstream.sendall(b"*1\r\n$4\r\nPING\r\n")
                    ran.wait(5)
                    return  # FakeServer closes the client's socket
        finally:
            _close_upstream(upstream, back)
    return handler


def _close_upstream(upstream: socket.socket, relay: threading.Thread) -> None:
    """End a proxy's upstream connection and wait briefly for its reply relay to finish."""
    try:
        upstream.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    upstream.close()
    relay.join(2)


def drip(reply: bytes, delay_s: float):
    """Answer each command with ``reply``, one byte every ``delay_s`` (until stop())."""
    def handler(sock, fake):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _command in _each_command(sock, fake):
            for i in range(len(reply)):
                if fake.stopping:
                    return
                sock.sendall(reply[i:i + 1])
                time.sleep(delay_s)
    return handler


def array_stream(header: int, items: int, item: bytes = b"*0\r\n", chunk_items: int = 16384):
    """Answer the first command with ``*<header>`` and ``items`` copies of ``item``, then hold."""
    def handler(sock, fake):
        for _command in _each_command(sock, fake):
            sock.sendall(b"*%d\r\n" % header)
            left = items
            while left > 0 and not fake.stopping:
                n = min(chunk_items, left)
                sock.sendall(item * n)
                left -= n
            _hold(sock, fake)
            return
    return handler


def sentinel_naming(host: str, port: int):
    """A sentinel whose every answer names ``host:port`` as the master."""
    h, p = host.encode(), str(port).encode()
    return canned(b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p))
