"""A small RESP2 client for Redis written on the standard library's ``socket``.

It does what the cluster scripts need and no more: one connection per tick
(a small pool in loop mode), pipelines and MULTI/EXEC, AUTH (password or ACL
user), SELECT, optional TLS, timeouts, Lua scripts with EVALSHA and a NOSCRIPT
fallback, and discovery of the current master through Redis Sentinel.

Guarantees:
- Every reply type of RESP2 parses correctly however the bytes are split
  across ``recv`` calls; an absurd length is a ``ProtocolError``, never an
  allocation.
- Every fault is one of the exceptions below, whose message names
  ``host:port`` and never the password.
- A handshake (AUTH, SELECT, and ROLE in Sentinel mode) is its own round trip,
  once per connection, and its replies are checked before any command is
  sent: nothing runs as the wrong user, in the wrong db or on a replica. A
  connection without one sends its first command at once (one round trip).
- A handshake passes only on +OK to AUTH and SELECT and, for ROLE, a list
  starting with "master" (NOPERM: the sentinels' word stands). A password a
  server echoes in its refusal is replaced by ***.
- A sentinel's answer counts only as two bulk strings, a host and a port
  1..65535; anything else is its problem and the next sentinel is asked.
- Bounds per request: connecting (name resolution included) finishes within
  ``connect_timeout_s``; from there the handshake, the write and all the
  replies within ``socket_timeout_s`` together, however slowly the bytes
  trickle in; ``Redis.request`` as a whole (the sentinels' query and a resend
  included) within ``connect_timeout_s + socket_timeout_s``. One reply costs
  at most ``max_reply_bytes`` (bulk bytes, every +/-/: line's bytes, and
  ``REPLY_ITEM_BYTES`` per array element, at any depth), and the unparsed
  bytes of the reply in progress stay within it too, else ``ProtocolError``.
"""

import socket
import time

__all__ = [
    "RedisError", "RedisConnectionError", "RedisTimeoutError", "AuthError",
    "ProtocolError", "ResponseError", "NoScriptError", "ReadOnlyError",
    "LoadingError", "WrongTypeError", "NoAuthError", "WrongPassError",
    "NoPermError", "BusyError", "ExecAbortError", "Parser", "Connection",
    "Redis", "Pipeline", "Script", "encode_command",
    "MasterDownError", "SentinelError", "MasterNotFoundError", "NotMasterError", "SentinelAuthError",
    "SentinelResolver",
]

MAX_BULK_BYTES = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
MAX_ARRAY_LEN = 1024 * 1024 * 1024
MAX_NESTING = 32  # arrays in arrays; our replies nest 3 deep, and the parser recurses once per level
# What one reply may cost: the bytes of its bulk strings plus REPLY_ITEM_BYTES for every array
# element (about what a small Python object and its list slot take), so a stream of empty arrays is
# bounded too. The largest reply the project reads (HGETALL of 10,000 members) costs about 4 MiB.
MAX_REPLY_BYTES = 64 * 1024 * 1024
REPLY_ITEM_BYTES = 64
_HEADER_SLACK_BYTES = 64  # a reply's own header ($<len>\r\n ... \r\n): on the wire but not charged
_MAX_INT_CHARS = 20  # "-9223372036854775808"
DEFAULT_TIMEOUT_S = 5.0
_RECV_BYTES = 65536


# -- the exception tree -----------------------------------------------------

class RedisError(Exception):
    """Root of every error this module raises."""


class RedisConnectionError(RedisError):
    """The server could not be reached, or the connection broke."""


class RedisTimeoutError(RedisConnectionError):
    """Connecting or waiting for a reply took longer than the timeout."""


class ProtocolError(RedisError):
    """The peer sent bytes that are not valid RESP (maybe not Redis at all)."""


class ResponseError(RedisError):
    """The server answered with an error reply (``-ERR ...``)."""


class AuthError(ResponseError):
    """The server refused our credentials, or needs some."""


class NoScriptError(ResponseError):
    pass


class ReadOnlyError(ResponseError):
    pass


class LoadingError(ResponseError):
    pass


class WrongTypeError(ResponseError):
    pass


class NoAuthError(AuthError):
    pass


class WrongPassError(AuthError):
    pass


class NoPermError(ResponseError):
    pass


class BusyError(ResponseError):
    pass


class ExecAbortError(ResponseError):
    pass


class MasterDownError(ResponseError):
    pass


class SentinelError(RedisError):
    """A fault in finding the master through Redis Sentinel (a marker, mixed into the classes below)."""


class MasterNotFoundError(SentinelError, RedisConnectionError):
    """No sentinel answered, or none of them knows a master by that name."""


class NotMasterError(SentinelError, RedisConnectionError):
    """The server the sentinels named is not a master (yet, or any more): a failover is under way."""


class SentinelAuthError(SentinelError, AuthError):
    """Every sentinel that answered refused our credentials (``redis.sentinel_password``)."""


# The first word of an error reply picks its class, as redis-py does.
_ERROR_PREFIXES = {
    "NOSCRIPT": NoScriptError,
    "READONLY": ReadOnlyError,
    "LOADING": LoadingError,
    "WRONGTYPE": WrongTypeError,
    "NOAUTH": NoAuthError,
    "WRONGPASS": WrongPassError,
    "NOPERM": NoPermError,
    "BUSY": BusyError,
    "EXECABORT": ExecAbortError,
    "MASTERDOWN": MasterDownError,
}


def error_from_reply(text: str) -> ResponseError:
    """Map an error reply's text to the most specific exception class."""
    first = text.split(" ", 1)[0]
    if first == "ERR" and text.startswith("ERR Error running script") and ": -" in text:
        # Redis < 7 wraps an error raised inside a script: "... @user_script: 36: -READONLY You can't ..."
        first = text.rpartition(": -")[2].split(" ", 1)[0]
    cls = _ERROR_PREFIXES.get(first, ResponseError)
    if cls is ResponseError and "invalid password" in text:
        cls = WrongPassError  # Redis < 6: "ERR invalid password"
    elif cls is ResponseError and "AUTH" in text and "no password is set" in text:
        cls = AuthError  # password given but the server has none
    elif cls is ResponseError and "Protocol error: unauthenticated" in text:
        cls = NoAuthError  # Redis >= 6.2.6 refuses long commands before AUTH this way
    return cls(text)


# -- the wire format --------------------------------------------------------

def _as_bytes(arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return arg.encode("utf-8")
    if isinstance(arg, bool):
        raise TypeError("a bool is not a Redis argument; pass 0/1 or a string")
    if isinstance(arg, (int, float)):
        return repr(arg).encode("ascii")
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    raise TypeError("cannot send %s to Redis" % type(arg).__name__)


def encode_command(args) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _as_bytes(arg)
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class _Incomplete(Exception):
    """Internal: the buffer ends before the reply does."""


NOT_READY = object()
_MARKERS = frozenset(b"+-:$*")


class Parser:
    """Incremental RESP2 parser: ``feed`` bytes, then ``gets`` replies.

    Error replies are returned as ``ResponseError`` instances, not raised, so a
    pipeline can hand them back in place. Bulk strings come back as ``bytes``,
    simple strings as ``str``.
    """

    def __init__(self, peer: str = "server", max_reply_bytes: int = MAX_REPLY_BYTES):
        self._buf = bytearray()
        self._pos = 0
        self.peer = peer
        self.max_reply_bytes = max_reply_bytes
        # What the reply in progress has cost so far: the elements its arrays in _partial
        # announced and the bulk strings completed inside them (each counted once).
        self._cost = 0
        # Arrays of the reply in progress that ran out of bytes: their '*' position ->
        # (items so far, position of the next item). A large reply arrives in many
        # recv()s; resuming where the last attempt stopped keeps parsing it linear
        # instead of re-parsing every item after every chunk.
        self._partial = {}

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
            self._partial.clear()  # positions moved; the reply in progress restarts (once)
        self._buf += data

    def gets(self):
        """Return the next complete reply, or ``NOT_READY``."""
        if not self._partial:
            self._cost = 0  # nothing of this reply is kept from an earlier attempt
        try:
            value, end = self._parse(self._pos)
        except _Incomplete:
            # Every byte after _pos belongs to the reply in progress, and a reply within the
            # bound is never longer on the wire than its cost plus one header: more is refused
            # now, whatever part of it has not been charged yet (a header line still open).
            if len(self._buf) - self._pos > self.max_reply_bytes + _HEADER_SLACK_BYTES:
                raise ProtocolError("%s sent a reply larger than %d bytes (%d bytes unparsed; bound "
                                    "max_reply_bytes)" % (self.peer, self.max_reply_bytes,
                                                          len(self._buf) - self._pos)) from None
            return NOT_READY
        self._pos = end
        self._partial.clear()
        return value

    def _charge(self, nbytes: int, what: str) -> None:
        if self._cost + nbytes > self.max_reply_bytes:
            raise ProtocolError("%s sent a reply larger than %d bytes (%s; bound max_reply_bytes)"
                                % (self.peer, self.max_reply_bytes, what))

    def _line(self, pos: int):
        end = self._buf.find(b"\r\n", pos)
        if end < 0:
            if len(self._buf) - pos > 65536:
                raise ProtocolError("%s sent a header line longer than 64 KiB" % self.peer)
            raise _Incomplete()
        return bytes(self._buf[pos:end]), end + 2

    def _length(self, raw: bytes, kind: str, cap: int) -> int:
        try:
            if len(raw) > _MAX_INT_CHARS:
                raise ValueError()
            n = int(raw)
        except ValueError:
            raise ProtocolError("%s sent a malformed %s length %r" % (self.peer, kind, raw[:32])) from None
        if n < -1 or n > cap:
            raise ProtocolError("%s sent an absurd %s length %d (cap %d)" % (self.peer, kind, n, cap))
        return n

    def _parse(self, pos: int, depth: int = 0):
        if pos >= len(self._buf):
            raise _Incomplete()
        start = pos
        marker = self._buf[pos]
        if marker not in _MARKERS:
            # Judge the first byte before waiting for a CRLF a non-Redis peer may never send.
            head = bytes(self._buf[pos: pos + 16])
            raise ProtocolError("%s sent a reply that is not RESP (starts with %r): is it a Redis server?"
                                % (self.peer, head))
        line, pos = self._line(pos + 1)
        if marker in (43, 45, 58):  # '+', '-', ':' cost their line, at any depth
            self._charge(len(line) + 3, "a line of %d bytes" % len(line))
            if depth:
                self._cost += len(line) + 3  # kept in _partial with the item, as a bulk string is
        if marker == 43:  # '+'
            return line.decode("utf-8", "replace"), pos
        if marker == 45:  # '-'
            return error_from_reply(line.decode("utf-8", "replace")), pos
        if marker == 58:  # ':'
            try:
                if len(line) > _MAX_INT_CHARS:  # a signed 64-bit integer; int() of a long one is slow
                    raise ValueError()
                return int(line), pos
            except ValueError:
                raise ProtocolError("%s sent a malformed integer %r" % (self.peer, line[:32])) from None
        if marker == 36:  # '$'
            n = self._length(line, "bulk", MAX_BULK_BYTES)
            if n == -1:
                return None, pos
            self._charge(n, "a bulk string of %d bytes" % n)  # judged now, counted once complete
            if len(self._buf) < pos + n + 2:
                raise _Incomplete()
            if self._buf[pos + n: pos + n + 2] != b"\r\n":
                raise ProtocolError("%s sent a bulk string without its CRLF terminator" % self.peer)
            if depth:
                self._cost += n  # inside an array, kept in _partial until the reply completes
            return bytes(self._buf[pos: pos + n]), pos + n + 2
        if marker == 42:  # '*'
            n = self._length(line, "array", MAX_ARRAY_LEN)
            if n == -1:
                return None, pos
            if depth >= MAX_NESTING and n > 0:
                raise ProtocolError("%s sent arrays nested deeper than %d levels" % (self.peer, MAX_NESTING))
            if start in self._partial:
                items, pos = self._partial.pop(start)
            else:
                self._charge(n * REPLY_ITEM_BYTES, "an array of %d elements" % n)
                self._cost += n * REPLY_ITEM_BYTES
                items = []
            while len(items) < n:
                try:
                    item, pos = self._parse(pos, depth + 1)
                except _Incomplete:
                    self._partial[start] = (items, pos)
                    raise
                items.append(item)
            return items, pos
        raise AssertionError(marker)  # every marker in _MARKERS is handled above


# -- one connection ---------------------------------------------------------

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
                raise cls("%s answered %s with %s, not OK" % (self.peer, what, _describe(reply)))

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
        detail = self.scrub(str(reply)) if isinstance(reply, ResponseError) else _describe(reply)
        raise NotMasterError("%s answered ROLE with %s, not as a master" % (self.peer, detail))

    def scrub(self, message: str) -> str:
        """``message`` with this connection's password replaced by ***, should a server echo it."""
        return message.replace(self._password, "***") if self._password else message

    def _handshake_error(self, cmd: str, reply: ResponseError) -> RedisError:
        text = self.scrub(str(reply))
        if cmd == "AUTH":
            if "no password is set" in text or "without any password configured" in text:
                return AuthError("%s: a password was given but the server has none set (%s)" % (self.peer, text))
            return AuthError("%s refused the credentials: %s" % (self.peer, text))
        return type(reply)("%s: %s %s failed: %s" % (self.peer, cmd, self._db, text))

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
                data = self._sock.recv(_RECV_BYTES)
            except socket.timeout:
                raise RedisTimeoutError("no complete reply from %s within the request's time "
                                        "(redis.socket_timeout %gs)" % (self.peer, self.socket_timeout_s)) from None
            except OSError as exc:
                raise RedisConnectionError("connection to %s broke: %s" % (self.peer, exc.strerror or exc)) from None
            if not data:
                raise RedisConnectionError("%s closed the connection%s" % (
                    self.peer, " mid-reply" if parser._buf[parser._pos:] else ""))
            parser.feed(data)


# -- Sentinel ---------------------------------------------------------------

# Shorter than any sensible tick interval, so a loop-mode process asks once per tick, as a
# one-shot tick does; long enough that one tick's requests share one answer.
SENTINEL_RECHECK_S = 0.5


class SentinelResolver:
    """Finds the current master of ``master_name`` by asking Redis Sentinel.

    One answer costs one round trip to one sentinel (AUTH rides in the same
    write: the query only reads). Sentinels are asked in order until one names the master; the one
    that answered is asked first next time, so a dead sentinel costs its
    connect timeout once per process. An answer is trusted for ``recheck_s``
    seconds: a loop-mode process asks again on its first request after that
    (in effect once per tick), which makes it follow a failover within one
    tick even when nothing failed: after ``SENTINEL FAILOVER`` the old master
    keeps accepting writes for several seconds until Sentinel demotes it.
    """

    def __init__(self, endpoints, master_name: str, password: str = "", username: str = "",
                 recheck_s: float = SENTINEL_RECHECK_S, **conn_kwargs):
        self.endpoints = [dict(ep) for ep in endpoints]
        self.master_name = master_name
        self._password, self._username = password, username
        self.recheck_s = recheck_s
        self._conn_kwargs = conn_kwargs
        self.round_trips = 0
        self.answered_by = ""

    def _ask(self, ep: dict, command: tuple, deadline_at: float = None):
        # A sentinel query only reads: its AUTH may ride with it (one round trip), as a
        # refused AUTH is still raised and nothing the query does can land anywhere.
        conn = Connection(ep["host"], ep.get("port", 26379), password=ep.get("password") or self._password,
                          username=ep.get("username") or self._username, handshake_apart=False,
                          **self._conn_kwargs)
        try:
            reply = conn.request([command], deadline_at)[0]
        finally:
            conn.close()
        self.round_trips += 1
        if isinstance(reply, ResponseError):
            raise type(reply)("%s: %s" % (conn.peer, conn.scrub(str(reply))))
        return reply, conn.peer

    def master_address(self, deadline_at: float = None) -> tuple:
        """``(host, port)`` of the master; MasterNotFoundError or SentinelAuthError if nobody says.

        Only a list of two bulk strings, a host and a port 1..65535 in digits, is an
        answer; anything else is that sentinel's problem and the next one is asked.
        """
        problems, refused = [], 0
        for i, ep in enumerate(self.endpoints):
            try:
                reply, peer = self._ask(ep, ("SENTINEL", "get-master-addr-by-name", self.master_name), deadline_at)
            except AuthError as exc:
                refused += 1
                problems.append(str(exc))
                continue
            except RedisError as exc:  # down, not a sentinel, or refusing: ask the next one
                problems.append(str(exc))
                continue
            if reply is None or reply == []:
                problems.append("%s knows no master named %r" % (peer, self.master_name))
                continue
            address = _master_address(reply)
            if address is None:
                problems.append("%s answered with %s, not a master's host and port" % (peer, _describe(reply)))
                continue
            self.endpoints.insert(0, self.endpoints.pop(i))
            self.answered_by = peer
            return address
        detail = "; ".join(problems) or "no sentinels configured"
        if refused and refused == len(problems):
            raise SentinelAuthError("sentinels refused the credentials: %s" % detail)
        raise MasterNotFoundError("no sentinel named a master for %r: %s" % (self.master_name, detail))

    def master_state(self) -> dict:
        """``SENTINEL MASTER <name>`` from the sentinel that answered last, as a dict of str."""
        reply, _peer = self._ask(self.endpoints[0], ("SENTINEL", "MASTER", self.master_name))
        flat = [text(v) for v in reply or []]
        return dict(zip(flat[::2], flat[1::2]))


def _master_address(reply):
    """``(host, port)`` from a get-master-addr-by-name reply, or None if it is not one."""
    if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(v, bytes) for v in reply)):
        return None
    host, port = reply
    if not host or len(host) > 255 or any(b <= 32 or b == 127 for b in host):
        return None
    if not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return None
    return host.decode("utf-8", "replace"), int(port)


def _describe(reply) -> str:
    """What kind of reply this is, without its text (which may echo what we sent, the password too)."""
    if reply is None:
        return "nil"
    if isinstance(reply, list):
        return "an array of %d elements" % len(reply)
    if isinstance(reply, int):
        return "an integer"
    if isinstance(reply, bytes):
        return "a bulk string of %d bytes" % len(reply)
    return "a simple string of %d characters" % len(reply)


def text(value) -> str:
    """A reply as text: bytes decoded (invalid UTF-8 replaced), None as '', anything else str()."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- the client -------------------------------------------------------------

class Redis:
    """Commands over a small pool of connections to one server.

    One-shot ticks use one connection; loop mode reuses pooled connections.
    ``execute`` raises error replies; ``pipeline().execute()`` returns them.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, pool_size: int = 2,
                 sentinel: SentinelResolver = None, **conn_kwargs):
        self.host, self.port = host, int(port)
        self.peer = "%s:%d" % (host, self.port)
        self._conn_kwargs = conn_kwargs
        self._pool_size = pool_size
        self._idle = []
        self.round_trips = 0  # requests sent; a new connection's handshake trip is in Connection.round_trips
        # With a resolver, host and port are the master's as Sentinel last named it.
        self.sentinel = sentinel
        self._resolved_at = None
        self._reused = False
        if sentinel is not None:
            self.peer = "the master %r (via Sentinel)" % sentinel.master_name

    @classmethod
    def from_settings(cls, redis_cfg: dict, **overrides) -> "Redis":
        """Build a client from the config's ``redis`` section."""
        kw = dict(host=redis_cfg["host"], port=redis_cfg["port"], password=redis_cfg.get("password", ""),
                  username=redis_cfg.get("username", ""), db=redis_cfg.get("db", 0),
                  connect_timeout_s=redis_cfg.get("connect_timeout", DEFAULT_TIMEOUT_S),
                  socket_timeout_s=redis_cfg.get("socket_timeout", DEFAULT_TIMEOUT_S),
                  tls=redis_cfg.get("tls", False), tls_ca_file=redis_cfg.get("tls_ca_file", ""),
                  tls_insecure=redis_cfg.get("tls_insecure", False),
                  max_reply_bytes=redis_cfg.get("max_reply_bytes", MAX_REPLY_BYTES))
        if redis_cfg.get("sentinels"):
            kw["sentinel"] = SentinelResolver(
                redis_cfg["sentinels"], redis_cfg["master_name"], password=redis_cfg.get("sentinel_password", ""),
                username=redis_cfg.get("sentinel_username", ""), connect_timeout_s=kw["connect_timeout_s"],
                socket_timeout_s=kw["socket_timeout_s"], tls=kw["tls"], tls_ca_file=kw["tls_ca_file"],
                tls_insecure=kw["tls_insecure"], max_reply_bytes=kw["max_reply_bytes"])
        kw.update(overrides)
        return cls(**kw)

    def _connection(self, deadline_at: float) -> Connection:
        if self.sentinel is not None:
            self._follow_master(False, deadline_at)
        self._reused = bool(self._idle)
        if self._idle:
            return self._idle.pop()
        return Connection(self.host, self.port, expect_master=self.sentinel is not None, **self._conn_kwargs)

    def _follow_master(self, force: bool, deadline_at: float = None) -> bool:
        """Ask the sentinels where the master is (when forced or the answer is old); True if it moved.

        A routine re-check that finds no sentinel keeps the master it knows:
        an outage of the sentinels alone must not stop a healthy cluster.
        """
        known = self._resolved_at is not None
        if not force and known and time.monotonic() - self._resolved_at < self.sentinel.recheck_s:
            return False
        try:
            host, port = self.sentinel.master_address(deadline_at)
        except SentinelError:
            if force or not known:
                raise
            self._resolved_at = time.monotonic()
            return False
        self._resolved_at = time.monotonic()
        moved = known and (host, port) != (self.host, self.port)
        if moved:
            self.close()  # pooled connections lead to the old master
        self.host, self.port, self.peer = host, port, "%s:%d" % (host, port)
        return moved

    def _resend_after(self, exc, deadline_at: float) -> bool:
        """After a fault (``exc``) or a READONLY reply (None): ask the sentinels again; say if resending helps.

        It helps when the master moved, or when a pooled connection had gone
        stale (the server restarted or dropped us). A timeout on the same
        master, or a fresh connection refused, is left to the tick's retries.
        """
        if isinstance(exc, SentinelError) and not isinstance(exc, NotMasterError):
            return False  # the sentinels themselves failed: asking again at once will not help
        if time.monotonic() >= deadline_at:
            return False  # the request's time is spent: the fault stands as it is
        reused = self._reused
        self.close()
        if self._follow_master(True, deadline_at):
            return True
        return exc is not None and reused and not isinstance(exc, (RedisTimeoutError, NotMasterError))

    def _send(self, commands, deadline_at: float) -> list:
        conn = self._connection(deadline_at)
        try:
            replies = conn.request(commands, deadline_at)
        finally:
            self._release(conn)
        self.round_trips += 1
        return replies

    def _release(self, conn: Connection) -> None:
        if conn.connected and len(self._idle) < self._pool_size:
            self._idle.append(conn)
        else:
            conn.close()

    def request(self, commands) -> list:
        """Run commands in one round trip; error replies are returned in place.

        With Sentinel, a connection fault or a READONLY reply sends the
        commands once more to the master the sentinels name now, when that
        can help (see ``_resend_after``); like the tick's own retries, a fault
        after the write may run a command twice.

        The whole request, the sentinels' query and a resend included, ends
        within ``connect_timeout_s + socket_timeout_s``; one connection's
        handshake and commands within ``socket_timeout_s`` after connecting.
        """
        kw = self._conn_kwargs
        deadline_at = time.monotonic() + kw.get("connect_timeout_s", DEFAULT_TIMEOUT_S) + \
            kw.get("socket_timeout_s", DEFAULT_TIMEOUT_S)
        if self.sentinel is None:
            return self._send(commands, deadline_at)
        try:
            replies = self._send(commands, deadline_at)
        except RedisConnectionError as exc:
            if not self._resend_after(exc, deadline_at):
                raise
            return self._send(commands, deadline_at)
        if any(isinstance(r, ReadOnlyError) for r in replies) and self._resend_after(None, deadline_at):
            return self._send(commands, deadline_at)
        return replies

    def execute(self, *args):
        """Run one command; an error reply is raised."""
        reply = self.request([args])[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def pipeline(self, transaction: bool = False) -> "Pipeline":
        return Pipeline(self, transaction)

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    # -- helpers for the commands the project uses --
    def ping(self):
        return self.execute("PING")

    def time(self) -> float:
        sec, usec = self.execute("TIME")
        return int(sec) + int(usec) / 1e6

    def get(self, key):
        return self.execute("GET", key)

    def set(self, key, value, ex: int = None, px: int = None, nx: bool = False, xx: bool = False):
        args = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        return self.execute(*args)

    def setex(self, key, seconds: int, value):
        return self.execute("SETEX", key, seconds, value)

    def delete(self, *keys) -> int:
        return self.execute("DEL", *keys)

    def expire(self, key, seconds: int) -> int:
        return self.execute("EXPIRE", key, seconds)

    def pexpire(self, key, ms: int) -> int:
        return self.execute("PEXPIRE", key, ms)

    def ttl(self, key) -> int:
        return self.execute("TTL", key)

    def pttl(self, key) -> int:
        return self.execute("PTTL", key)

    def incr(self, key) -> int:
        return self.execute("INCR", key)

    def hset(self, key, field, value) -> int:
        return self.execute("HSET", key, field, value)

    def hget(self, key, field):
        return self.execute("HGET", key, field)

    def hdel(self, key, *fields) -> int:
        return self.execute("HDEL", key, *fields)

    def hgetall(self, key) -> dict:
        flat = self.execute("HGETALL", key) or []
        return dict(zip(flat[::2], flat[1::2]))

    def publish(self, channel, message) -> int:
        return self.execute("PUBLISH", channel, message)

    def eval(self, script: str, keys=(), args=()):
        return self.execute("EVAL", script, len(keys), *keys, *args)

    def evalsha(self, sha: str, keys=(), args=()):
        return self.execute("EVALSHA", sha, len(keys), *keys, *args)


class Pipeline:
    """Buffer commands and send them in one write.

    With ``transaction=True`` they are wrapped in MULTI/EXEC and ``execute``
    returns the EXEC results; otherwise one reply per command. Error replies
    are returned in place either way.
    """

    def __init__(self, client: Redis, transaction: bool = False):
        self._client = client
        self._transaction = transaction
        self._commands = []

    def __len__(self) -> int:
        return len(self._commands)

    def execute_command(self, *args) -> "Pipeline":
        self._commands.append(args)
        return self

    def __getattr__(self, name):
        # pipe.hset(...), pipe.get(...): queue the same command the client would run
        if name.startswith("_") or not hasattr(Redis, name):
            raise AttributeError(name)
        return _QueueingHelper(self, name)

    def execute(self) -> list:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        if not self._transaction:
            return self._client.request(commands)
        replies = self._client.request([("MULTI",)] + commands + [("EXEC",)])
        queued, result = replies[1:-1], replies[-1]
        if isinstance(result, ResponseError):
            # EXECABORT: the first queue-time error is the useful one
            errors = [r for r in queued if isinstance(r, ResponseError)]
            raise errors[0] if errors else result
        return result


class _QueueingHelper:
    """Calls a client helper against a recorder, queueing the command instead."""

    def __init__(self, pipe: Pipeline, name: str):
        self._pipe, self._name = pipe, name

    def __call__(self, *args, **kwargs) -> Pipeline:
        recorder = _Recorder()
        getattr(Redis, self._name)(recorder, *args, **kwargs)
        self._pipe._commands.extend(recorder.commands)
        return self._pipe


class _Recorder:
    def __init__(self):
        self.commands = []

    def execute(self, *args):
        self.commands.append(args)


class Script:
    """A Lua script run by EVALSHA once the server is known to have it.

    The first call on a client sends EVAL (which also caches the script in
    Redis), so a one-shot tick needs neither hashlib nor a second round trip;
    later calls send EVALSHA and fall back to EVAL on NOSCRIPT (Redis
    restarted or flushed its script cache).
    """

    def __init__(self, source: str):
        self.source = source
        self._sha = None

    @property
    def sha(self) -> str:
        if self._sha is None:
            import hashlib
            self._sha = hashlib.sha1(self.source.encode("utf-8")).hexdigest()
        return self._sha

    def args(self, keys, args, use_sha: bool) -> tuple:
        head = ("EVALSHA", self.sha) if use_sha else ("EVAL", self.source)
        return head + (len(keys),) + tuple(keys) + tuple(args)

    def __call__(self, client: Redis, keys=(), args=()):
        known = getattr(client, "_known_scripts", None)
        if known is None:
            known = client._known_scripts = set()
        if self.source in known:
            reply = client.request([self.args(keys, args, True)])[0]
            if not isinstance(reply, NoScriptError):
                if isinstance(reply, ResponseError):
                    raise reply
                return reply
        reply = client.request([self.args(keys, args, False)])[0]
        if isinstance(reply, ResponseError):
            raise reply
        known.add(self.source)
        return reply
