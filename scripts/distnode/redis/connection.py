"""One socket to one Redis server: connecting, the handshake, one deadline per request.

Guarantees:
- Every fault is a ``RedisError`` whose message names ``host:port`` and never
  the password; ``OSError`` is translated here and nowhere else.
- A handshake (AUTH, SELECT, and ROLE in Sentinel mode) is its own round trip,
  once per connection, and its replies are checked before any command is
  sent: nothing runs as the wrong user, in the wrong db or on a replica. A
  connection without one sends its first command at once (one round trip).
- A handshake passes only on +OK to AUTH and SELECT and, for ROLE, a list
  starting with "master" (NOPERM: the sentinels' word stands). A password a
  server echoes in its refusal is replaced by ***.
- Connecting (name resolution included) finishes within ``connect_timeout_s``;
  from there the handshake, the write and all the replies within
  ``socket_timeout_s`` together, however slowly the bytes trickle in.
"""

import socket
import time

from distnode.core import defaults
from distnode.redis.errors import (AuthError, LoadingError, NoPermError, NotMasterError, ProtocolError,
                                   RedisConnectionError, RedisError, RedisTimeoutError, ResponseError)
from distnode.redis.resp import MAX_REPLY_BYTES, NOT_READY, Parser, describe, encode_command, text

__all__ = ["Connection", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = defaults.REDIS_TIMEOUT_S  # connect and socket timeout when the caller names none


# -- finding the server ---------------------------------------------------------

def _host_arg(host: str):
    """``host`` for getaddrinfo: an ASCII name as bytes, which resolves the same but skips
    importing the ``idna`` codec that a str host costs every one-shot tick (~1 ms)."""
    return host.encode("ascii") if isinstance(host, str) and host.isascii() else host


def _is_ip_address(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except (OSError, ValueError, TypeError):
            pass
    return False


def _resolve(host: str, port: int, timeout_s: float, peer: str) -> list:
    """getaddrinfo bounded by ``timeout_s``: getaddrinfo has no timeout of its own and hangs as
    long as a dead DNS server makes it. An IP address needs no lookup and is resolved at once;
    a name is looked up in a daemon thread that is abandoned (it ends with the lookup) when
    the time is up."""
    if _is_ip_address(host):
        return socket.getaddrinfo(_host_arg(host), port, 0, socket.SOCK_STREAM)
    import threading  # only a host name pays for it: ~0.6 ms when nothing imported it yet
    done, box = threading.Event(), {}

    def lookup():
        try:
            box["infos"] = socket.getaddrinfo(_host_arg(host), port, 0, socket.SOCK_STREAM)
        except OSError as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=lookup, name="resolve " + peer, daemon=True).start()
    if not done.wait(timeout_s):
        raise RedisTimeoutError("resolving the host of %s timed out after %gs" % (peer, timeout_s))
    if "error" in box:
        raise box["error"]
    return box["infos"]


# -- the connection -------------------------------------------------------------

class Connection:
    """One socket to one server; its handshake (AUTH, SELECT, ROLE) goes first, on its own."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, password: str = "",
                 username: str = "", db: int = 0, connect_timeout_s: float = DEFAULT_TIMEOUT_S,
                 socket_timeout_s: float = DEFAULT_TIMEOUT_S, tls: bool = False,
                 tls_ca_file: str = "", tls_insecure: bool = False, expect_master: bool = False,
                 max_reply_bytes: int = MAX_REPLY_BYTES, handshake_apart: bool = True):
        self.host, self.port = host, int(port)
        # Sentinel mode: ROLE joins the handshake, so a server that is not the master is
        # refused before any command reaches it.
        self._expect_master = expect_master
        # False only for read-only queries (the sentinels'): the handshake then rides in the
        # first command's write, since nothing that query does can land in the wrong place.
        self._handshake_apart = handshake_apart
        self.peer = "%s:%d" % (host, self.port)
        self._password, self._username, self._db = password, username, int(db)
        self.connect_timeout_s, self.socket_timeout_s = connect_timeout_s, socket_timeout_s
        self.max_reply_bytes = max_reply_bytes
        self._tls, self._tls_ca_file, self._tls_insecure = tls, tls_ca_file, tls_insecure
        self._sock = None
        self._parser = None
        self._handshake = []
        self.round_trips = 0  # writes on this connection, the handshake's included

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self, deadline_at: float = None) -> None:
        """Connect within ``connect_timeout_s``, and before ``deadline_at`` (time.monotonic()) if given."""
        if self._sock is not None:
            return
        deadline = time.monotonic() + self.connect_timeout_s
        if deadline_at is not None:
            deadline = min(deadline, deadline_at)
        sock = self._open(deadline)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls:
            sock = self._wrap_tls(sock, deadline)
        self._sock = sock
        self._parser = Parser(self.peer, self.max_reply_bytes)
        self._handshake = []
        if self._password:
            auth = ["AUTH", self._username, self._password] if self._username else ["AUTH", self._password]
            self._handshake.append(auth)
        if self._db:
            self._handshake.append(["SELECT", self._db])
        if self._expect_master:
            self._handshake.append(["ROLE"])

    def _timed_out_connecting(self) -> RedisTimeoutError:
        return RedisTimeoutError("connecting to %s timed out after %gs" % (self.peer, self.connect_timeout_s))

    def _open(self, deadline: float):
        """A connected socket: the name resolved and each address tried, all before ``deadline``."""
        try:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise self._timed_out_connecting()
            infos = _resolve(self.host, self.port, remaining_s, self.peer)
        except socket.gaierror as exc:
            raise RedisConnectionError("cannot resolve host of %s: %s" % (self.peer, exc.strerror)) from None
        except OSError as exc:
            raise RedisConnectionError("cannot resolve host of %s: %s" % (self.peer, exc.strerror or exc)) from None
        error = None
        for family, kind, proto, _name, address in infos:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise self._timed_out_connecting()
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(remaining_s)
                sock.connect(address)
                return sock
            except socket.timeout:
                sock.close()
                error = self._timed_out_connecting()
            except OSError as exc:
                sock.close()
                error = RedisConnectionError("cannot connect to %s: %s" % (self.peer, exc.strerror or exc))
        raise error or RedisConnectionError("cannot resolve host of %s: no address" % self.peer)

    def _wrap_tls(self, sock, deadline: float):
        import ssl  # only TLS users pay for importing ssl
        ctx = ssl.create_default_context(cafile=self._tls_ca_file or None)
        if self._tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            return ctx.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise RedisConnectionError("TLS handshake with %s failed: %s" % (self.peer, exc)) from None

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._parser = None

    def shut_down(self) -> None:
        """End a request another thread is blocked in: its read sees the connection end at once."""
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def request(self, commands, deadline_at: float = None) -> list:
        """Send commands in one write, read one reply each (errors in place).

        A new connection first sends its handshake and checks the replies: a
        refused AUTH or SELECT, or a ROLE other than master, raises before
        any of ``commands`` has left this process. The handshake and the
        commands share one deadline, ``socket_timeout_s`` after connecting
        (or ``deadline_at``, a time.monotonic() value, if that is sooner).
        """
        self.connect(deadline_at)
        deadline = time.monotonic() + self.socket_timeout_s
        if deadline_at is not None:
            deadline = min(deadline, deadline_at)
        handshake, self._handshake = self._handshake, []
        if handshake and self._handshake_apart:
            self._check_handshake(handshake, self._round_trip(handshake, deadline))
            handshake = []
        replies = self._round_trip(handshake + list(commands), deadline)
        self._check_handshake(handshake, replies)
        return replies[len(handshake):]

    def _round_trip(self, commands, deadline: float) -> list:
        """One write, then one reply per command, all before ``deadline`` together."""
        payload = b"".join(encode_command(c) for c in commands)
        try:
            self._send(payload, deadline)
            self.round_trips += 1
            return [self._read_reply(deadline) for _ in range(len(commands))]
        except BaseException:
            self.close()  # a half-read stream is useless: never reuse it
            raise

    def _check_handshake(self, handshake, replies) -> None:
        for cmd, reply in zip(handshake, replies):
            if cmd[0] == "ROLE":
                self._check_master(reply)
            elif isinstance(reply, ResponseError):
                self.close()
                raise self._handshake_error(cmd[0], reply)
            elif reply != "OK":  # AUTH and SELECT answer +OK; :0, nil or anything else is no success
                self.close()
                what = "%s %s" % (cmd[0], self._db) if cmd[0] == "SELECT" else cmd[0]
                cls = AuthError if cmd[0] == "AUTH" else ProtocolError
                raise cls("%s answered %s with %s, not OK" % (self.peer, what, describe(reply)))

    def _check_master(self, reply) -> None:
        """Refuse a server whose ROLE is not a list starting with "master"; only a ROLE the ACL
        forbids (NOPERM) is no verdict, and the sentinels' word stands."""
        if isinstance(reply, NoPermError):
            return
        if isinstance(reply, list) and reply and reply[0] == b"master":
            return
        self.close()
        if isinstance(reply, LoadingError):
            raise reply
        if isinstance(reply, list) and reply and isinstance(reply[0], bytes):
            role = text(reply[0])
            raise NotMasterError("%s is a %s, not the master (a failover may be under way)" % (
                self.peer, "replica" if role == "slave" else repr(role[:20])))
        detail = self.scrub(str(reply)) if isinstance(reply, ResponseError) else describe(reply)
        raise NotMasterError("%s answered ROLE with %s, not as a master" % (self.peer, detail))

    def scrub(self, message: str) -> str:
        """``message`` with this connection's password replaced by ***, should a server echo it."""
        return message.replace(self._password, "***") if self._password else message

    def _handshake_error(self, cmd: str, reply: ResponseError) -> RedisError:
        message = self.scrub(str(reply))
        if cmd == "AUTH":
            if "no password is set" in message or "without any password configured" in message:
                return AuthError("%s: a password was given but the server has none set (%s)" % (self.peer, message))
            return AuthError("%s refused the credentials: %s" % (self.peer, message))
        return type(reply)("%s: %s %s failed: %s" % (self.peer, cmd, self._db, message))

    def _time_left(self, deadline: float) -> None:
        """Give the socket's next call what is left of ``deadline`` (socket.timeout if nothing is)."""
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise socket.timeout()
        self._sock.settimeout(remaining_s)

    def _send(self, payload: bytes, deadline: float) -> None:
        view = memoryview(payload)
        try:
            while view:  # send(), not sendall(): a TLS socket's sendall restarts the timeout per chunk
                self._time_left(deadline)
                view = view[self._sock.send(view):]
        except socket.timeout:
            raise RedisTimeoutError("sending to %s timed out (redis.socket_timeout %gs)" % (
                self.peer, self.socket_timeout_s)) from None
        except OSError as exc:
            raise RedisConnectionError("connection to %s broke: %s" % (self.peer, exc.strerror or exc)) from None

    def _read_reply(self, deadline: float):
        parser = self._parser
        while True:
            reply = parser.gets()
            if reply is not NOT_READY:
                return reply
            try:
                self._time_left(deadline)  # each recv gets what is left, not a fresh timeout
                data = self._sock.recv(defaults.READ_CHUNK_BYTES)
            except socket.timeout:
                raise RedisTimeoutError("no complete reply from %s within the request's time "
                                        "(redis.socket_timeout %gs)" % (self.peer, self.socket_timeout_s)) from None
            except OSError as exc:
                raise RedisConnectionError("connection to %s broke: %s" % (self.peer, exc.strerror or exc)) from None
            if not data:
                raise RedisConnectionError("%s closed the connection%s" % (
                    self.peer, " mid-reply" if parser.mid_reply else ""))
            parser.feed(data)
