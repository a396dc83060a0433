"""scripts/redis_client.py: the RESP parser, the connection, the client, pipelines, scripts.

The parser is fed every reply type one byte at a time and many replies at
once; the client talks to a real redis-server started by the harness, and
fault tests put a fake server (tests/support/fake_servers.py) on the port.
"""

import os
import socket
import sys
import time
import tracemalloc
import unittest
from unittest import mock

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (_HERE, os.path.join(os.path.dirname(_HERE), "scripts")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import redis_client as rc  # noqa: E402
from support import fake_servers as fakes  # noqa: E402
from support.redis_server import RedisServer, free_port  # noqa: E402

SERVER = None
PASSWORD = "pw-Secret-4711"


def setUpModule():  # noqa: N802 - unittest API
    global SERVER
    SERVER = RedisServer(name="client").start()


def tearDownModule():  # noqa: N802
    if SERVER is not None:
        SERVER.close()


def client(server=None, **kw) -> rc.Redis:
    server = server or SERVER
    kw.setdefault("socket_timeout_s", 5)
    kw.setdefault("connect_timeout_s", 5)
    return rc.Redis(server.host, server.port, **kw)


def parse_all(data: bytes, step: int = 0) -> list:
    """Feed ``data`` (all at once, or ``step`` bytes at a time) and collect every reply."""
    parser = rc.Parser("test:1")
    out = []
    chunks = [data] if not step else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            reply = parser.gets()
            if reply is rc.NOT_READY:
                break
            out.append(reply)
    return out


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
                parser = rc.Parser()
                for i in range(len(raw) - 1):
                    parser.feed(raw[i:i + 1])
                    self.assertIs(parser.gets(), rc.NOT_READY, "reply complete after %d of %d bytes" % (i + 1, len(raw)))
                parser.feed(raw[-1:])
                self.assertEqual(parser.gets(), expected)
                self.assertIs(parser.gets(), rc.NOT_READY)

    def test_many_replies_in_one_recv(self):
        raw = b"".join(r for r, _ in REPLIES) * 3
        expected = [e for _, e in REPLIES] * 3
        self.assertEqual(parse_all(raw), expected)
        for step in (1, 2, 3, 7):
            with self.subTest(step=step):
                self.assertEqual(parse_all(raw, step), expected)

    def test_error_replies_are_returned_as_mapped_instances(self):
        cases = [
            (b"-ERR unknown command\r\n", rc.ResponseError),
            (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", rc.WrongTypeError),
            (b"-NOSCRIPT No matching script\r\n", rc.NoScriptError),
            (b"-READONLY You can't write against a read only replica.\r\n", rc.ReadOnlyError),
            (b"-LOADING Redis is loading the dataset in memory\r\n", rc.LoadingError),
            (b"-NOAUTH Authentication required.\r\n", rc.NoAuthError),
            (b"-WRONGPASS invalid username-password pair\r\n", rc.WrongPassError),
            (b"-ERR invalid password\r\n", rc.WrongPassError),  # Redis < 6
            (b"-ERR Protocol error: unauthenticated multibulk length\r\n", rc.NoAuthError),  # Redis >= 6.2.6
            (b"-NOPERM this user has no permissions to run the 'eval' command\r\n", rc.NoPermError),
            (b"-BUSY Redis is busy running a script\r\n", rc.BusyError),
            (b"-EXECABORT Transaction discarded\r\n", rc.ExecAbortError),
            # Redis < 7 wraps an error raised inside a script; the inner error decides the class
            (b"-ERR Error running script (call to f_755c): @user_script:36: @user_script: 36: -READONLY You can't "
             b"write against a read only replica.\r\n", rc.ReadOnlyError),
            (b"-ERR Error running script (call to f_755c): @user_script:1: Script attempted to access a non "
             b"local key\r\n", rc.ResponseError),
        ]
        for raw, cls in cases:
            with self.subTest(raw=raw):
                (reply,) = parse_all(raw, 1)
                self.assertIs(type(reply), cls)
                self.assertEqual(str(reply), raw[1:-2].decode())
        (nested,) = parse_all(b"*2\r\n+OK\r\n-ERR inside\r\n")
        self.assertEqual(nested[0], "OK")
        self.assertIsInstance(nested[1], rc.ResponseError)
        self.assertTrue(issubclass(rc.WrongPassError, rc.AuthError))
        self.assertTrue(issubclass(rc.RedisTimeoutError, rc.RedisConnectionError))

    def test_absurd_lengths_are_protocol_errors(self):
        bad = [
            b"$-2\r\n", b"*-7\r\n", b"$-100\r\n",
            b"$%d\r\n" % (rc.MAX_BULK_BYTES + 1),
            b"$107374182400\r\n",  # 100 GB
            b"*%d\r\n" % (rc.MAX_ARRAY_LEN + 1),
            b"*99999999999999999999\r\n",
            b"$abc\r\n", b"$\r\n", b":12x\r\n", b"*1\r\n$zz\r\n",
        ]
        for raw in bad:
            with self.subTest(raw=raw):
                with self.assertRaises(rc.ProtocolError) as ctx:
                    parse_all(raw)
                self.assertIn("test:1", str(ctx.exception))

    def test_absurd_length_allocates_nothing(self):
        tracemalloc.start()
        try:
            with self.assertRaises(rc.ProtocolError):
                parse_all(b"$107374182400\r\n")
            parser = rc.Parser()
            parser.feed(b"$%d\r\nabc" % rc.MAX_BULK_BYTES)  # legal length, data still to come
            self.assertIs(parser.gets(), rc.NOT_READY)
            parser.feed(b"*%d\r\n:1\r\n" % rc.MAX_ARRAY_LEN)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 4 * 1024 * 1024, "parser allocated %d bytes for a length claim" % peak)

    def test_not_resp_is_a_protocol_error(self):
        for raw in (fakes.HTTP_400, b"SSH-2.0-OpenSSH_9.6\r\n", b"hello\r\n", b"\x16\x03\x01\x02\x00"):
            with self.subTest(raw=raw[:20]):
                with self.assertRaises(rc.ProtocolError) as ctx:
                    parse_all(raw)
                self.assertIn("not RESP", str(ctx.exception))

    def test_bulk_without_terminator_and_endless_header(self):
        with self.assertRaises(rc.ProtocolError):
            parse_all(b"$3\r\nabcXY")
        with self.assertRaises(rc.ProtocolError):
            parse_all(b"+" + b"x" * 70000)

    def test_arrays_nested_too_deep_are_a_protocol_error_not_a_recursion_error(self):
        deepest = b"*1\r\n" * rc.MAX_NESTING + b":1\r\n"
        reply = parse_all(deepest)[0]
        self.assertEqual(parse_all(deepest, step=3)[0], reply)
        depth = 0
        while isinstance(reply, list):
            reply, depth = reply[0], depth + 1
        self.assertEqual((depth, reply), (rc.MAX_NESTING, 1), "as deep as allowed still parses")
        for step in (0, 4):
            with self.subTest(step=step), self.assertRaises(rc.ProtocolError) as ctx:
                parse_all(b"*1\r\n" * 5000 + b":1\r\n", step=step)
            self.assertIn("nested deeper than %d levels" % rc.MAX_NESTING, str(ctx.exception))

    def test_encode_command(self):
        self.assertEqual(rc.encode_command(["SET", b"k\r\n", 5, 1.5]),
                         b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n")
        self.assertEqual(rc.encode_command(["ECHO", "\u00e9"]), b"*2\r\n$4\r\nECHO\r\n$2\r\n\xc3\xa9\r\n")
        with self.assertRaises(TypeError):
            rc.encode_command(["SET", "k", True])
        with self.assertRaises(TypeError):
            rc.encode_command(["SET", "k", None])


class ClientTest(unittest.TestCase):
    def setUp(self):
        SERVER.flushall()
        self.r = client()
        self.addCleanup(self.r.close)

    def test_helpers_round_trip(self):
        r = self.r
        self.assertEqual(r.ping(), "PONG")
        self.assertEqual(r.set("k", b"v\x00\xff\r\n"), "OK")
        self.assertEqual(r.get("k"), b"v\x00\xff\r\n")
        self.assertIsNone(r.get("missing"))
        self.assertIsNone(r.set("k", "x", nx=True))
        self.assertEqual(r.set("k2", "x", px=5000, nx=True), "OK")
        self.assertTrue(0 < r.pttl("k2") <= 5000)
        self.assertEqual(r.incr("n"), 1)
        self.assertEqual(r.hset("h", "f", "1"), 1)
        self.assertEqual(r.hgetall("h"), {b"f": b"1"})
        self.assertEqual(r.delete("k", "k2", "nope"), 2)
        self.assertGreater(r.time(), 1.6e9)
        with self.assertRaises(rc.WrongTypeError):
            r.incr("h")

    def test_one_byte_per_recv_against_real_redis(self):
        self.r.hset("h", "a", "1")
        self.r.hset("h", "b", "")
        with mock.patch.object(rc, "_RECV_BYTES", 1):
            r = client()
            try:
                self.assertEqual(r.hgetall("h"), {b"a": b"1", b"b": b""})
                replies = r.request([("PING",), ("GET", "nope"), ("HGETALL", "h"), ("INCR", "h"),
                                     ("EVAL", "return {1, {'x', false}, redis.error_reply('E1')}", 0)])
                self.assertEqual(replies[:2], ["PONG", None])
                self.assertEqual(sorted(replies[2]), [b"", b"1", b"a", b"b"])
                self.assertIsInstance(replies[3], rc.WrongTypeError)
                self.assertEqual(replies[4][:2], [1, [b"x", None]])
                self.assertIsInstance(replies[4][2], rc.ResponseError)
            finally:
                r.close()

    def test_dribbling_server(self):
        with fakes.FakeServer(fakes.dribble_proxy(SERVER.host, SERVER.port)) as fake:
            r = client(fake)
            try:
                self.assertEqual(r.set("k", "v" * 300), "OK")
                self.assertEqual(r.get("k"), b"v" * 300)
                self.assertEqual(r.pipeline().get("k").ping().execute(), [b"v" * 300, "PONG"])
            finally:
                r.close()

    def test_pipeline_error_in_the_middle_is_returned_in_place(self):
        self.r.set("s", "text")
        pipe = self.r.pipeline()
        pipe.set("a", "1").incr("s").execute_command("NOSUCHCOMMAND").get("a")
        self.assertEqual(len(pipe), 4)
        replies = pipe.execute()
        self.assertEqual(replies[0], "OK")
        self.assertIsInstance(replies[1], rc.ResponseError)
        self.assertIsInstance(replies[2], rc.ResponseError)
        self.assertEqual(replies[3], b"1")
        self.assertEqual(self.r.ping(), "PONG")  # the connection is still good
        self.assertEqual(pipe.execute(), [])

    def test_one_round_trip_per_request(self):
        before = self.r.round_trips
        self.r.request([("SET", "a", 1), ("GET", "a"), ("DEL", "a")])
        self.assertEqual(self.r.round_trips - before, 1)

    def test_multi_exec(self):
        self.r.set("s", "text")
        pipe = self.r.pipeline(transaction=True)
        pipe.set("a", "1").incr("s").incr("a")
        result = pipe.execute()
        self.assertEqual(result[0], "OK")
        self.assertIsInstance(result[1], rc.ResponseError)  # run-time error, in place
        self.assertEqual(result[2], 2)

    def test_multi_exec_queue_time_error_applies_nothing(self):
        pipe = self.r.pipeline(transaction=True)
        pipe.set("a", "1").execute_command("SET", "only-key")
        with self.assertRaises(rc.ResponseError) as ctx:
            pipe.execute()
        self.assertIn("wrong number of arguments", str(ctx.exception))
        self.assertIsNone(self.r.get("a"))

    def test_select(self):
        r3 = client(db=3)
        try:
            r3.set("in3", "x")
            self.assertEqual(r3.get("in3"), b"x")
        finally:
            r3.close()
        self.assertIsNone(self.r.get("in3"))
        self.assertTrue(SERVER.info("keyspace")["db3"].startswith("keys=1"))
        bad = client(db=99)
        with self.assertRaises(rc.ResponseError) as ctx:
            bad.ping()
        self.assertIn("SELECT 99", str(ctx.exception))
        self.assertIn("%s:%d" % (SERVER.host, SERVER.port), str(ctx.exception))

    def test_pool_reuses_connections_and_recovers_from_restart(self):
        r = client()
        try:
            r.ping()
            r.ping()
            clients_before = SERVER.command("CLIENT", "LIST").count("\n")
            r.ping()
            self.assertEqual(SERVER.command("CLIENT", "LIST").count("\n"), clients_before)
            SERVER.restart()
            try:
                r.ping()  # a stale pooled connection may fail once...
            except rc.RedisConnectionError as exc:
                self.assertIn(str(SERVER.port), str(exc))
            self.assertEqual(r.ping(), "PONG")  # ...but never twice
        finally:
            r.close()


class ScriptTest(unittest.TestCase):
    SRC = "redis.call('INCR', KEYS[1]); return ARGV[1]"

    def setUp(self):
        SERVER.flushall()
        SERVER.command("SCRIPT", "FLUSH")
        self.r = client()
        self.addCleanup(self.r.close)

    def test_eval_first_then_evalsha_then_noscript_fallback(self):
        script = rc.Script(self.SRC)
        SERVER.command("CONFIG", "RESETSTAT")
        self.assertEqual(script(self.r, ("n",), ("a",)), b"a")
        self.assertEqual((SERVER.command_calls("eval"), SERVER.command_calls("evalsha")), (1, 0))
        self.assertEqual(script(self.r, ("n",), ("b",)), b"b")
        self.assertEqual((SERVER.command_calls("eval"), SERVER.command_calls("evalsha")), (1, 1))
        SERVER.command("SCRIPT", "FLUSH")
        self.assertEqual(script(self.r, ("n",), ("c",)), b"c")  # NOSCRIPT -> EVAL
        self.assertEqual((SERVER.command_calls("eval"), SERVER.command_calls("evalsha")), (2, 2))
        self.assertEqual(SERVER.command("GET", "n"), "3")  # ran exactly once per call
        self.assertEqual(script.sha, SERVER.command("SCRIPT", "LOAD", self.SRC))

    def test_script_error_is_raised(self):
        script = rc.Script("return redis.error_reply('BOOM ' .. KEYS[1])")
        for _ in range(2):  # via EVAL, then via EVALSHA
            with self.assertRaises(rc.ResponseError) as ctx:
                script(self.r, ("k",))
            self.assertIn("BOOM k", str(ctx.exception))


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = RedisServer(password=PASSWORD, name="auth").start()
        cls.acl = cls.server.version >= (6, 0, 0)
        if cls.acl:
            cls.server.command("ACL", "SETUSER", "alice", "on", ">alice-pw-99", "~*", "+@all")
            cls.server.command("ACL", "SETUSER", "bob", "on", ">bob-pw-77", "~*", "+ping", "+get")

    @classmethod
    def tearDownClass(cls):
        cls.server.close()

    def test_password_ok(self):
        r = client(self.server, password=PASSWORD)
        self.assertEqual(r.ping(), "PONG")
        self.assertEqual(r.ping(), "PONG")
        r.close()

    def test_wrong_password(self):
        r = client(self.server, password="not-" + PASSWORD)
        with self.assertRaises(rc.AuthError) as ctx:
            r.ping()
        msg = str(ctx.exception)
        self.assertIn("%s:%d" % (self.server.host, self.server.port), msg)
        self.assertNotIn(PASSWORD, msg)

    def test_no_password_given(self):
        with self.assertRaises(rc.NoAuthError):
            client(self.server).ping()
        with self.assertRaises(rc.NoAuthError):  # > 10 arguments before AUTH: a protocol error on Redis 6.2.6+
            client(self.server).execute("EVAL", "return 1", 9, *"abcdefghi")

    def test_password_given_but_none_set(self):
        with self.assertRaises(rc.AuthError) as ctx:
            client(password=PASSWORD).ping()
        msg = str(ctx.exception)
        self.assertIn("the server has none set", msg)
        self.assertIn("%s:%d" % (SERVER.host, SERVER.port), msg)
        self.assertNotIn(PASSWORD, msg)

    def test_acl_user(self):
        if not self.acl:
            self.skipTest("Redis %s has no ACL users" % (self.server.version,))
        r = client(self.server, username="alice", password="alice-pw-99")
        self.assertEqual(r.execute("ACL", "WHOAMI"), b"alice")
        with self.assertRaises(rc.AuthError) as ctx:
            client(self.server, username="alice", password="wrong-alice-pw").ping()
        self.assertNotIn("wrong-alice-pw", str(ctx.exception))

    def test_acl_user_without_needed_commands(self):
        if not self.acl:
            self.skipTest("Redis %s has no ACL users" % (self.server.version,))
        r = client(self.server, username="bob", password="bob-pw-77")
        self.assertEqual(r.ping(), "PONG")
        with self.assertRaises(rc.NoPermError) as ctx:
            r.set("k", "v")
        self.assertIn("NOPERM", str(ctx.exception))
        with self.assertRaises(rc.NoPermError):
            rc.Script("return 1")(r)


class FaultTest(unittest.TestCase):
    """Every fault is a RedisError naming host:port, raised within its timeout, without the password."""

    def assert_fault(self, fake_handler, exc_class, *words, timeout_s=0.5, **kw):
        with fakes.FakeServer(fake_handler) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=timeout_s,
                         connect_timeout_s=timeout_s, **kw)
            started = time.monotonic()
            with self.assertRaises(exc_class) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
            r.close()
        msg = str(ctx.exception)
        self.assertIn("127.0.0.1:%d" % fake.port, msg)
        self.assertNotIn(PASSWORD, msg)
        for word in words:
            self.assertIn(word, msg)
        self.assertLess(elapsed, timeout_s + 3)
        return ctx.exception, elapsed

    def test_server_that_never_answers(self):
        _exc, elapsed = self.assert_fault(fakes.silent(), rc.RedisTimeoutError, "no reply", timeout_s=0.3)
        self.assertGreaterEqual(elapsed, 0.25)

    def test_http_server(self):
        self.assert_fault(fakes.http(), rc.ProtocolError, "not RESP")

    def test_closes_mid_reply(self):
        exc, _ = self.assert_fault(fakes.close_mid_reply(), rc.RedisConnectionError, "mid-reply")
        self.assertNotIsInstance(exc, rc.RedisTimeoutError)

    def test_claims_a_100_gb_bulk(self):
        self.assert_fault(fakes.huge_bulk(), rc.ProtocolError, "107374182400")

    def test_loading_and_readonly(self):
        for text, cls in (("LOADING Redis is loading the dataset in memory", rc.LoadingError),
                          ("READONLY You can't write against a read only replica.", rc.ReadOnlyError)):
            with self.subTest(cls=cls.__name__), fakes.FakeServer(fakes.error_reply(text)) as fake:
                r = rc.Redis(fake.host, fake.port, socket_timeout_s=1)
                with self.assertRaises(cls):
                    r.execute("SET", "k", "v")
                self.assertIsInstance(r.request([("SET", "k", "v")])[0], cls)
                r.close()

    def test_send_that_cannot_complete_times_out(self):
        # A server that never reads: the send itself must time out as a RedisTimeoutError.
        with fakes.FakeServer(fakes.no_read()) as fake:
            r = rc.Redis(fake.host, fake.port, socket_timeout_s=0.3)
            with self.assertRaises(rc.RedisTimeoutError) as ctx:
                r.set("k", b"x" * (16 * 1024 * 1024))  # more than both socket buffers can hold
            self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))

    def test_connection_reset_before_send(self):
        with fakes.FakeServer(fakes.reset_after(1)) as fake:
            r = rc.Redis(fake.host, fake.port, socket_timeout_s=1)
            self.assertEqual(r.ping(), "OK")  # the pooled connection is then reset by the peer
            time.sleep(0.1)
            with self.assertRaises(rc.RedisConnectionError) as ctx:
                r.ping()
            self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
            r.close()

    def test_connect_timeout(self):
        # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        time.sleep(0.05)
        r = rc.Redis("127.0.0.1", port, password=PASSWORD, connect_timeout_s=0.3, socket_timeout_s=0.3)
        started = time.monotonic()
        with self.assertRaises(rc.RedisTimeoutError) as ctx:
            r.ping()
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("127.0.0.1:%d" % port, str(ctx.exception))
        self.assertNotIn(PASSWORD, str(ctx.exception))

    def test_unresolvable_host(self):
        r = rc.Redis("no-such-host.invalid", 6390, password=PASSWORD, connect_timeout_s=3)
        with self.assertRaises(rc.RedisConnectionError) as ctx:
            r.ping()
        self.assertIn("no-such-host.invalid:6390", str(ctx.exception))
        self.assertNotIn(PASSWORD, str(ctx.exception))

    def test_closed_port(self):
        port = free_port()
        r = rc.Redis("127.0.0.1", port, password=PASSWORD, connect_timeout_s=1)
        with self.assertRaises(rc.RedisConnectionError) as ctx:
            r.ping()
        msg = str(ctx.exception)
        self.assertNotIsInstance(ctx.exception, rc.RedisTimeoutError)
        self.assertIn("127.0.0.1:%d" % port, msg)
        self.assertIn("refused", msg.lower())
        self.assertNotIn(PASSWORD, msg)

    def test_handshake_travels_with_the_first_command(self):
        with fakes.FakeServer(fakes.silent()) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, db=2, socket_timeout_s=0.2)
            with self.assertRaises(rc.RedisTimeoutError):
                r.ping()
        expected = b"".join(rc.encode_command(c) for c in (["AUTH", PASSWORD], ["SELECT", 2], ["PING"]))
        self.assertEqual(bytes(fake.received), expected)
        self.assertEqual(fake.connections, 1)

if __name__ == "__main__":
    unittest.main()
