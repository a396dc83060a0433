"""RESP2 on bytes: encoding commands and parsing replies, with no socket in sight.

Guarantees:
- Every reply type of RESP2 parses correctly however the bytes are split
  across ``feed`` calls; an absurd length is a ``ProtocolError``, never an
  allocation.
- One reply costs at most ``max_reply_bytes`` (bulk bytes, every +/-/: line's
  bytes, and ``REPLY_ITEM_BYTES`` per array element, at any depth), and the
  unparsed bytes of the reply in progress stay within it too, else
  ``ProtocolError`` naming the peer.
- Error replies come back as ``ResponseError`` instances (the class picked by
  ``errors.error_from_reply``), not raised, so a batch hands them back in place.
"""

from distnode.core import defaults
from distnode.redis.errors import ProtocolError, error_from_reply

__all__ = ["Parser", "NOT_READY", "encode_command", "text", "describe", "MAX_BULK_BYTES", "MAX_ARRAY_LEN",
           "MAX_NESTING", "MAX_REPLY_BYTES", "REPLY_ITEM_BYTES"]

MAX_BULK_BYTES = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default
MAX_ARRAY_LEN = 1024 * 1024 * 1024
MAX_NESTING = 32  # arrays in arrays; our replies nest 3 deep, and the parser recurses once per level
# What one reply may cost: the bytes of its bulk strings plus REPLY_ITEM_BYTES for every array
# element (about what a small Python object and its list slot take), so a stream of empty arrays is
# bounded too. The largest reply the project reads (HGETALL of 10,000 members) costs about 4 MiB.
MAX_REPLY_BYTES = defaults.REDIS_MAX_REPLY_BYTES
REPLY_ITEM_BYTES = 64
_HEADER_SLACK_BYTES = 64  # a reply's own header ($<len>\r\n ... \r\n): on the wire but not charged
_MAX_INT_CHARS = 20  # "-9223372036854775808"
_MAX_LINE_BYTES = 65536  # a header or simple-string line without its CRLF past this is not Redis


# -- encoding -----------------------------------------------------------------

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


# -- parsing ------------------------------------------------------------------

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

    @property
    def mid_reply(self) -> bool:
        """True when bytes of a reply not yet complete are buffered."""
        return len(self._buf) > self._pos

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
            if len(self._buf) - pos > _MAX_LINE_BYTES:
                raise ProtocolError("%s sent a header line longer than %d KiB" % (self.peer, _MAX_LINE_BYTES // 1024))
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
        """The reply starting at ``pos`` and the position after it; _Incomplete if it has not all arrived."""
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
        if marker == 36:  # '$'
            return self._bulk(line, pos, depth)
        if marker == 42:  # '*'
            return self._array(line, start, pos, depth)
        # '+', '-', ':' cost their line, at any depth
        self._charge(len(line) + 3, "a line of %d bytes" % len(line))
        if depth:
            self._cost += len(line) + 3  # kept in _partial with the item, as a bulk string is
        return self._line_value(marker, line), pos

    def _line_value(self, marker: int, line: bytes):
        if marker == 43:  # '+'
            return line.decode("utf-8", "replace")
        if marker == 45:  # '-'
            return error_from_reply(line.decode("utf-8", "replace"))
        try:  # ':'
            if len(line) > _MAX_INT_CHARS:  # a signed 64-bit integer; int() of a long one is slow
                raise ValueError()
            return int(line)
        except ValueError:
            raise ProtocolError("%s sent a malformed integer %r" % (self.peer, line[:32])) from None

    def _bulk(self, line: bytes, pos: int, depth: int):
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

    def _array(self, line: bytes, start: int, pos: int, depth: int):
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


# -- reading reply values -------------------------------------------------------

def text(value) -> str:
    """A reply as text: bytes decoded (invalid UTF-8 replaced), None as '', anything else str()."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def describe(reply) -> str:
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
