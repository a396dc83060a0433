"""scripts/distnode/redis/resp.py: encoding commands and parsing replies, bytes only.

The parser is fed every reply type whole, one byte at a time and many replies
at once; absurd lengths, non-RESP bytes and replies past the size bound are
``ProtocolError``s naming the peer, never an allocation.
"""

import tracemalloc
import unittest

import support.base  # noqa: F401 - puts scripts/ on sys.path
from distnode.redis import errors, resp
from support import fake_servers as fakes
from support.redis_extras import parse_all


# Every RESP2 reply type, the bytes and what the parser must return.
REPLIES = [
    (b"+OK\r\n", "OK"),
    (b"+\r\n", ""),
    (b":0\r\n", 0),
    (b":-42\r\n", -42),
    (b":9223372036854775807\r\n", 9223372036854775807),
    (b"$5\r\nhello\r\n", b"hello"),
    (b"$0\r\n\r\n", b""),
    (b"$-1\r\n", None),
    (b"$6\r\na\r\nb\x00\xff\r\n", b"a\r\nb\x00\xff"),  # binary-safe, CRLF inside
    (b"*0\r\n", []),
    (b"*-1\r\n", None),
    (b"*3\r\n$1\r\na\r\n:2\r\n$-1\r\n", [b"a", 2, None]),
    (b"*2\r\n*2\r\n+x\r\n*-1\r\n*1\r\n*0\r\n", [["x", None], [[]]]),
]


class ParserTest(unittest.TestCase):
    def test_every_reply_type_whole(self):
        for raw, expected in REPLIES:
            with self.subTest(raw=raw):
                self.assertEqual(parse_all(raw), [expected])

    def test_every_reply_type_one_byte_at_a_time(self):
        for raw, expected in REPLIES:
            with self.subTest(raw=raw):
                parser = resp.Parser()
                for i in range(len(raw) - 1):
                    parser.feed(raw[i:i + 1])
                    self.assertIs(parser.gets(), resp.NOT_READY,
                                  "reply complete after %d of %d bytes" % (i + 1, len(raw)))
                parser.feed(raw[-1:])
                self.assertEqual(parser.gets(), expected)
                self.assertIs(parser.gets(), resp.NOT_READY)

    def test_many_replies_in_one_recv(self):
        raw = b"".join(r for r, _ in REPLIES) * 3
        expected = [e for _, e in REPLIES] * 3
        self.assertEqual(parse_all(raw), expected)
        for step in (1, 2, 3, 7):
            with self.subTest(step=step):
                self.assertEqual(parse_all(raw, step), expected)

    def test_absurd_lengths_are_protocol_errors(self):
        bad = [
            b"$-2\r\n", b"*-7\r\n", b"$-100\r\n",
            b"$%d\r\n" % (resp.MAX_BULK_BYTES + 1),
            b"$107374182400\r\n",  # 100 GB
            b"*%d\r\n" % (resp.MAX_ARRAY_LEN + 1),
            b"*99999999999999999999\r\n",
            b"$abc\r\n", b"$\r\n", b":12x\r\n", b"*1\r\n$zz\r\n",
        ]
        for raw in bad:
            with self.subTest(raw=raw):
                with self.assertRaises(errors.ProtocolError) as ctx:
                    parse_all(raw)
                self.assertIn("test:1", str(ctx.exception))

    def test_absurd_length_allocates_nothing(self):
        tracemalloc.start()
        try:
            with self.assertRaises(errors.ProtocolError):
                parse_all(b"$107374182400\r\n")
            parser = resp.Parser(max_reply_bytes=1 << 40)  # so that both lengths below are legal
            parser.feed(b"$%d\r\nabc" % resp.MAX_BULK_BYTES)  # legal length, data still to come
            self.assertIs(parser.gets(), resp.NOT_READY)
            parser.feed(b"*%d\r\n:1\r\n" % resp.MAX_ARRAY_LEN)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 4 * 1024 * 1024, "parser allocated %d bytes for a length claim" % peak)

    def test_not_resp_is_a_protocol_error(self):
        for raw in (fakes.HTTP_400, b"SSH-2.0-OpenSSH_9.6\r\n", b"hello\r\n", b"\x16\x03\x01\x02\x00"):
            with self.subTest(raw=raw[:20]):
                with self.assertRaises(errors.ProtocolError) as ctx:
                    parse_all(raw)
                self.assertIn("not RESP", str(ctx.exception))

    def test_bulk_without_terminator_and_endless_header(self):
        with self.assertRaises(errors.ProtocolError):
            parse_all(b"$3\r\nabcXY")
        with self.assertRaises(errors.ProtocolError):
            parse_all(b"+" + b"x" * 70000)

    def test_arrays_nested_too_deep_are_a_protocol_error_not_a_recursion_error(self):
        deepest = b"*1\r\n" * resp.MAX_NESTING + b":1\r\n"
        reply = parse_all(deepest)[0]
        self.assertEqual(parse_all(deepest, step=3)[0], reply)
        depth = 0
        while isinstance(reply, list):
            reply, depth = reply[0], depth + 1
        self.assertEqual((depth, reply), (resp.MAX_NESTING, 1), "as deep as allowed still parses")
        for step in (0, 4):
            with self.subTest(step=step), self.assertRaises(errors.ProtocolError) as ctx:
                parse_all(b"*1\r\n" * 5000 + b":1\r\n", step=step)
            self.assertIn("nested deeper than %d levels" % resp.MAX_NESTING, str(ctx.exception))

    def test_encode_command(self):
        self.assertEqual(resp.encode_command(["SET", b"k\r\n", 5, 1.5]),
                         b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n")
        self.assertEqual(resp.encode_command(["ECHO", "\u00e9"]), b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n")
        with self.assertRaises(TypeError):
            resp.encode_command(["SET", "k", True])
        with self.assertRaises(TypeError):
            resp.encode_command(["SET", "k", None])


class ReplyBoundsTest(unittest.TestCase):
    """Issue 13 item 13: one reply stays within max_reply_bytes; array elements, simple strings,
    errors, integers and the unparsed bytes of the reply in progress all count."""

    def parse_bounded(self, data: bytes, max_reply_bytes: int, step: int = 0) -> list:
        return parse_all(data, step, max_reply_bytes=max_reply_bytes)

    def test_reply_size_bound_counts_bulk_bytes_and_array_elements(self):
        cap = 100 * resp.REPLY_ITEM_BYTES
        fits = b"*50\r\n" + b"*0\r\n" * 50                      # 50 elements: half the bound
        self.assertEqual(self.parse_bounded(fits, cap), [[[]] * 50])
        for step in (0, 1, 3):
            with self.subTest(step=step):
                # Two replies, each under the bound: the count starts again with each reply, and
                # re-reading a reply that arrived in pieces does not count anything twice.
                self.assertEqual(self.parse_bounded(fits + fits, cap, step=step), [[[]] * 50] * 2)
        too_many = [
            b"*101\r\n",                                          # one array claims too many elements
            b"*2\r\n*60\r\n" + b"*0\r\n" * 60 + b"*60\r\n",     # nested arrays add up
            b"$%d\r\n" % (cap + 1),                               # one bulk string too long
            b"*3\r\n$%d\r\n%s\r\n$%d\r\n" % (cap // 2, b"x" * (cap // 2), cap // 2),
        ]
        for raw in too_many:
            for step in (0, 2):
                with self.subTest(raw=raw[:20], step=step), self.assertRaises(errors.ProtocolError) as ctx:
                    self.parse_bounded(raw, cap, step=step)
                self.assertIn("test:1", str(ctx.exception))
                self.assertIn("larger than", str(ctx.exception))

    def test_simple_strings_errors_and_integers_count_against_the_reply_bound(self):
        cap = 100 * resp.REPLY_ITEM_BYTES
        line = b"a" * 1000
        over = [
            b"*20\r\n" + (b"+" + line + b"\r\n") * 20,                  # simple strings
            b"*20\r\n" + (b"-ERR " + line + b"\r\n") * 20,              # error replies
            b"*90\r\n" + b":1234567890123456789\r\n" * 90,            # integers (elements alone fit)
            b"*1\r\n*1\r\n*20\r\n" + (b"+" + line + b"\r\n") * 20,    # at any depth
        ]
        for raw in over:
            for step in (0, 7):
                with self.subTest(raw=raw[:16], step=step), self.assertRaises(errors.ProtocolError) as ctx:
                    self.parse_bounded(raw, cap, step=step)
                self.assertIn("larger than", str(ctx.exception))
        fits = b"*3\r\n+" + b"a" * 1000 + b"\r\n:12\r\n-ERR x\r\n"
        self.assertEqual(len(self.parse_bounded(fits * 2, cap, step=5)), 2)

    def test_bytes_of_the_reply_in_progress_are_bounded(self):
        # A header line still without its CRLF charges nothing yet; the buffer must not grow past the bound.
        parser = resp.Parser("test:1", max_reply_bytes=6400)
        parser.feed(b"*2\r\n+" + b"a" * 8000)
        with self.assertRaises(errors.ProtocolError) as ctx:
            parser.gets()
        self.assertIn("test:1", str(ctx.exception))

    def test_long_integers_are_refused_before_conversion(self):
        for raw in (b":" + b"9" * 4000 + b"\r\n", b"*" + b"1" * 30 + b"\r\n", b"$" + b"0" * 30 + b"5\r\n"):
            with self.subTest(raw=raw[:12]), self.assertRaises(errors.ProtocolError):
                parse_all(raw)


class ReplyValueTest(unittest.TestCase):
    def test_text_and_describe(self):
        self.assertEqual([resp.text(v) for v in (None, b"caf\xc3\xa9", b"\xff", "s", 7)],
                         ["", "caf\u00e9", "\ufffd", "s", "7"])
        described = [resp.describe(v) for v in (None, [1, 2], 3, b"pw", "OK")]
        self.assertEqual(described, ["nil", "an array of 2 elements", "an integer", "a bulk string of 2 bytes",
                                     "a simple string of 2 characters"])
        self.assertFalse(any("pw" in d for d in described), "describe never shows a reply's text")

    def test_mid_reply(self):
        parser = resp.Parser()
        self.assertFalse(parser.mid_reply)
        parser.feed(b"+OK\r\n$5\r\nhel")
        self.assertEqual(parser.gets(), "OK")
        self.assertIs(parser.gets(), resp.NOT_READY)
        self.assertTrue(parser.mid_reply)
        parser.feed(b"lo\r\n")
        self.assertEqual(parser.gets(), b"hello")
        self.assertFalse(parser.mid_reply)


if __name__ == "__main__":
    unittest.main()
