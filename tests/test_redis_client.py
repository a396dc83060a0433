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

from distnode.redis import client as rc  # noqa: E402
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


def parse_all(data: bytes, step: int = 0, **parser_kwargs) -> list:
    """Feed ``data`` (all at once, or ``step`` bytes at a time) and collect every reply."""
    parser = rc.Parser("test:1", **parser_kwargs)
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
            parser = rc.Parser(max_reply_bytes=1 << 40)  # so that both lengths below are legal
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
        _exc, elapsed = self.assert_fault(fakes.silent(), rc.RedisTimeoutError, "no complete reply", timeout_s=0.3)
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

    def test_handshake_is_answered_before_any_command_is_sent(self):
        with fakes.FakeServer(fakes.silent()) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, db=2, socket_timeout_s=0.2)
            with self.assertRaises(rc.RedisTimeoutError):
                r.ping()
        expected = b"".join(rc.encode_command(c) for c in (["AUTH", PASSWORD], ["SELECT", 2]))
        self.assertEqual(bytes(fake.received), expected, "PING must wait for the handshake's replies")
        self.assertEqual(fake.connections, 1)

    def test_refused_handshake_sends_no_command(self):
        with fakes.FakeServer(fakes.error_reply("WRONGPASS invalid username-password pair")) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1)
            with self.assertRaises(rc.AuthError):
                r.execute("SET", "k", "v")
            r.close()
        self.assertEqual(bytes(fake.received), rc.encode_command(["AUTH", PASSWORD]))


class HandshakeGuardTest(unittest.TestCase):
    """Issue 13 item 1: a failed AUTH / SELECT / ROLE stops the commands that would follow it.

    Each case gives the server a way to run the command anyway (db 0 exists, the default
    user needs no password, a replica that accepts writes) and checks nothing ran.
    """

    def setUp(self):
        SERVER.flushall()

    def assert_nothing_written(self, server=None):
        server = server or SERVER
        self.assertEqual(server.command("DBSIZE"), 0, "a command ran although the handshake failed")

    def attempts(self, r):
        """Every way a tick sends commands: one command, a pipeline, a transaction, a script."""
        yield lambda: r.execute("SET", "k", "v")
        yield lambda: r.pipeline().set("k", "v").incr("n").execute()
        yield lambda: r.pipeline(transaction=True).set("k", "v").execute()
        yield lambda: rc.Script("return redis.call('SET', KEYS[1], 'v')")(r, ("k",))

    def test_db_out_of_range_writes_nothing_in_db0(self):
        r = client(db=99)
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(rc.ResponseError) as ctx:
                attempt()
            self.assertIn("SELECT 99", str(ctx.exception))
            self.assertIn("%s:%d" % (SERVER.host, SERVER.port), str(ctx.exception))
        self.assert_nothing_written()

    def test_acl_user_with_a_wrong_password_runs_nothing_as_the_default_user(self):
        if SERVER.version < (6, 0, 0):
            self.skipTest("Redis %s has no ACL users" % (SERVER.version,))
        # The default user needs no password here, so a command after a refused AUTH would run as it.
        SERVER.command("ACL", "SETUSER", "carol", "on", ">carol-pw-31", "~*", "+@all")
        self.addCleanup(SERVER.command, "ACL", "DELUSER", "carol")
        r = client(username="carol", password="wrong-carol-pw")
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(rc.AuthError) as ctx:
                attempt()
            self.assertNotIn("wrong-carol-pw", str(ctx.exception))
        self.assert_nothing_written()
        good = client(username="carol", password="carol-pw-31")
        self.addCleanup(good.close)
        self.assertEqual(good.execute("ACL", "WHOAMI"), b"carol")

    def test_password_given_to_a_server_without_one_writes_nothing(self):
        r = client(password=PASSWORD)
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(rc.AuthError) as ctx:
                attempt()
            self.assertIn("the server has none set", str(ctx.exception))
            self.assertNotIn(PASSWORD, str(ctx.exception))
        self.assert_nothing_written()

    def test_sentinel_naming_a_replica_writes_nothing_there(self):
        # A replica that accepts writes: only the ROLE check can keep a command off it.
        replica = RedisServer(replicaof=SERVER, extra_args=["--replica-read-only", "no"], name="wr-replica").start()
        self.addCleanup(replica.close)
        replica.wait_replica_synced()
        with fakes.FakeServer(fakes.sentinel_naming(replica.host, replica.port)) as fake:
            resolver = rc.SentinelResolver([{"host": fake.host, "port": fake.port}], "mymaster",
                                           connect_timeout_s=2, socket_timeout_s=2)
            r = rc.Redis("127.0.0.1", 1, sentinel=resolver, connect_timeout_s=2, socket_timeout_s=2)
            self.addCleanup(r.close)
            for attempt in self.attempts(r):
                with self.assertRaises(rc.NotMasterError) as ctx:
                    attempt()
                self.assertIn("127.0.0.1:%d is a replica" % replica.port, str(ctx.exception))
        self.assertEqual(replica.command("DBSIZE"), 0)
        for name in ("set", "incr", "multi", "eval", "evalsha"):
            self.assertEqual(replica.command_calls(name), 0, "%s reached the replica" % name)

    def test_handshake_costs_one_round_trip_per_connection_and_none_without_one(self):
        with_hs = client(db=3)
        without = client()
        self.addCleanup(with_hs.close)
        self.addCleanup(without.close)
        for r, first in ((with_hs, 2), (without, 1)):
            r.ping()
            conn = r._idle[0]
            self.assertEqual(conn.round_trips, first)
            r.ping()
            self.assertEqual(conn.round_trips, first + 1, "a pooled connection does not repeat the handshake")
            self.assertEqual(r.round_trips, 2, "Redis.round_trips counts the commands' round trips")

    def test_heartbeat_with_db_out_of_range_exits_with_one_line_and_registers_nothing(self):
        import tempfile
        import shutil
        from distnode.core import keys
        from support.nodes import NodeEnv
        tmp = tempfile.mkdtemp(prefix="dn-handshake-")
        self.addCleanup(shutil.rmtree, tmp, True)
        node = NodeEnv(tmp, "hs-n1", SERVER, config={"redis": {"db": 99}})
        proc = node.run("heartbeat.py")
        self.assertNotEqual(proc.returncode, 0)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn("SELECT 99", lines[0])
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(SERVER.command("HGETALL", keys.nodes()), [])
        self.assertIsNone(SERVER.command("GET", keys.heartbeat("hs-n1")))
        self.assert_nothing_written()


class ReplyBoundsTest(unittest.TestCase):
    """Issue 13 item 13: one request's replies finish within socket_timeout_s, one reply stays
    within max_reply_bytes (array elements count too), and resolving the host counts against
    connect_timeout_s. Bounds here are generous: the point is that they hold at all."""

    def parse_bounded(self, data: bytes, max_reply_bytes: int, step: int = 0) -> list:
        return parse_all(data, step, max_reply_bytes=max_reply_bytes)

    def test_reply_size_bound_counts_bulk_bytes_and_array_elements(self):
        cap = 100 * rc.REPLY_ITEM_BYTES
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
                with self.subTest(raw=raw[:20], step=step), self.assertRaises(rc.ProtocolError) as ctx:
                    self.parse_bounded(raw, cap, step=step)
                self.assertIn("test:1", str(ctx.exception))
                self.assertIn("larger than", str(ctx.exception))

    def test_default_bound_is_far_above_a_large_legit_reply(self):
        self.assertGreaterEqual(rc.MAX_REPLY_BYTES, 16 * 1024 * 1024)
        SERVER.flushall()
        r = client()
        self.addCleanup(r.close)
        pipe = r.pipeline()
        for i in range(20000):
            pipe.hset("big", "member-%05d" % i, "x" * 200)
        pipe.execute()
        self.assertEqual(len(r.hgetall("big")), 20000)
        SERVER.flushall()

    def test_streamed_array_of_empty_arrays_is_refused_not_grown(self):
        # 2**30 - 1 elements claimed, a million empty arrays sent: the reply must be refused
        # (ProtocolError) instead of being built until the timeout or the memory runs out.
        with fakes.FakeServer(fakes.array_stream(2 ** 30 - 1, 1000000)) as fake:
            r = rc.Redis(fake.host, fake.port, socket_timeout_s=20, connect_timeout_s=2)
            self.addCleanup(r.close)
            with self.assertRaises(rc.ProtocolError) as ctx:
                r.execute("SMEMBERS", "s")
        self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))

    def test_nested_arrays_under_every_single_length_cap_are_refused(self):
        # Each array's length is modest; together they pass the bound (20000 x 100 elements).
        item = b"*100\r\n" + b"*0\r\n" * 100
        with fakes.FakeServer(fakes.array_stream(20000, 20000, item=item, chunk_items=100)) as fake:
            r = rc.Redis(fake.host, fake.port, socket_timeout_s=20, connect_timeout_s=2)
            self.addCleanup(r.close)
            with self.assertRaises(rc.ProtocolError) as ctx:
                r.execute("SMEMBERS", "s")
        self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))

    def test_dripping_server_cannot_hold_a_reply_past_the_timeout(self):
        # One byte every 0.2 s keeps every recv() alive; the whole reply must still end in time.
        reply = b"$100\r\n" + b"x" * 100 + b"\r\n"
        with fakes.FakeServer(fakes.drip(reply, 0.2)) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            started = time.monotonic()
            with self.assertRaises(rc.RedisTimeoutError) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
        msg = str(ctx.exception)
        self.assertIn("127.0.0.1:%d" % fake.port, msg)
        self.assertNotIn(PASSWORD, msg)
        self.assertLess(elapsed, 5, "a 1 s timeout held the call %.1fs" % elapsed)

    def test_dripping_pipeline_shares_one_deadline(self):
        # Each reply alone arrives within the timeout; the request as a whole does not.
        with fakes.FakeServer(fakes.drip(b"+OK\r\n", 0.1)) as fake:
            r = rc.Redis(fake.host, fake.port, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            started = time.monotonic()
            with self.assertRaises(rc.RedisTimeoutError):
                r.request([("PING",)] * 10)
            elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5)

    def test_name_resolution_counts_against_the_connect_timeout(self):
        release = __import__("threading").Event()
        real = socket.getaddrinfo

        def hanging(host, *args, **kwargs):
            if host in ("slow-dns.example", b"slow-dns.example"):
                release.wait(30)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return real(host, *args, **kwargs)

        self.addCleanup(release.set)
        with mock.patch.object(socket, "getaddrinfo", hanging):
            r = rc.Redis("slow-dns.example", 6390, password=PASSWORD, connect_timeout_s=0.5, socket_timeout_s=0.5)
            started = time.monotonic()
            with self.assertRaises(rc.RedisTimeoutError) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
            release.set()
        msg = str(ctx.exception)
        self.assertIn("slow-dns.example:6390", msg)
        self.assertNotIn(PASSWORD, msg)
        self.assertLess(elapsed, 5, "resolving held the call %.1fs" % elapsed)


def _echo_auth(template: bytes):
    """A server answering AUTH with ``template`` % its last argument (the password), then +PONG."""
    def handler(sock, fake):
        for command in fakes._each_command(sock, fake):
            if command[0].upper() == b"AUTH":
                sock.sendall(template % command[-1])
            else:
                sock.sendall(b"+PONG\r\n")
    return handler


def _sentinel_reply(host: str, port: int) -> bytes:
    h, p = host.encode(), str(port).encode()
    return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p)


class HostileServerTest(unittest.TestCase):
    """Issue 13 items 1 and 13, second round: what a hostile review found still open."""

    def parse_bounded(self, data: bytes, cap: int, step: int = 0) -> list:
        return ReplyBoundsTest.parse_bounded(self, data, cap, step)

    # -- item 1: every item of a reply counts, and so do the bytes waiting to be parsed --
    def test_simple_strings_errors_and_integers_count_against_the_reply_bound(self):
        cap = 100 * rc.REPLY_ITEM_BYTES
        line = b"a" * 1000
        over = [
            b"*20\r\n" + (b"+" + line + b"\r\n") * 20,                  # simple strings
            b"*20\r\n" + (b"-ERR " + line + b"\r\n") * 20,              # error replies
            b"*90\r\n" + b":1234567890123456789\r\n" * 90,            # integers (elements alone fit)
            b"*1\r\n*1\r\n*20\r\n" + (b"+" + line + b"\r\n") * 20,    # at any depth
        ]
        for raw in over:
            for step in (0, 7):
                with self.subTest(raw=raw[:16], step=step), self.assertRaises(rc.ProtocolError) as ctx:
                    self.parse_bounded(raw, cap, step=step)
                self.assertIn("larger than", str(ctx.exception))
        fits = b"*3\r\n+" + b"a" * 1000 + b"\r\n:12\r\n-ERR x\r\n"
        self.assertEqual(len(self.parse_bounded(fits * 2, cap, step=5)), 2)

    def test_bytes_of_the_reply_in_progress_are_bounded(self):
        # A header line still without its CRLF charges nothing yet; the buffer must not grow past the bound.
        parser = rc.Parser("test:1", max_reply_bytes=6400)
        parser.feed(b"*2\r\n+" + b"a" * 8000)
        with self.assertRaises(rc.ProtocolError) as ctx:
            parser.gets()
        self.assertIn("test:1", str(ctx.exception))

    def test_long_integers_are_refused_before_conversion(self):
        for raw in (b":" + b"9" * 4000 + b"\r\n", b"*" + b"1" * 30 + b"\r\n", b"$" + b"0" * 30 + b"5\r\n"):
            with self.subTest(raw=raw[:12]), self.assertRaises(rc.ProtocolError):
                parse_all(raw)

    def test_streamed_simple_strings_are_refused_by_a_configured_bound(self):
        item = b"+" + b"a" * 60000 + b"\r\n"       # 200 x 60 KB = 12 MB, then the server holds
        with fakes.FakeServer(fakes.array_stream(1000000, 200, item=item, chunk_items=10)) as fake:
            r = rc.Redis.from_settings({"host": fake.host, "port": fake.port, "socket_timeout": 10,
                                        "connect_timeout": 2, "max_reply_bytes": 1024 * 1024})
            self.addCleanup(r.close)
            with self.assertRaises(rc.ProtocolError) as ctx:
                r.execute("SMEMBERS", "s")
        self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
        self.assertIn("1048576", str(ctx.exception))

    def test_max_reply_bytes_is_a_setting_with_a_floor(self):
        from distnode.core import config
        kind, default, lower, _help = config.SCHEMA[("redis", "max_reply_bytes")]
        self.assertEqual((kind, default), ("int", rc.MAX_REPLY_BYTES))
        self.assertGreaterEqual(lower, 1024 * 1024 - 1)
        r = rc.Redis.from_settings({"host": SERVER.host, "port": SERVER.port, "max_reply_bytes": 2 * 1024 * 1024})
        self.addCleanup(r.close)
        r.ping()
        self.assertEqual(r._idle[0]._parser.max_reply_bytes, 2 * 1024 * 1024)

    # -- item 2: a sentinel's malformed answer is a problem, and the next sentinel is asked --
    LIES = [b"+OK\r\n", b":5\r\n", b"*1\r\n$9\r\n127.0.0.1\r\n", b"*2\r\n$9\r\n127.0.0.1\r\n$3\r\nabc\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n", b"*2\r\n$9\r\n127.0.0.1\r\n$2\r\n-1\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", b"*2\r\n*0\r\n$4\r\n6379\r\n", b"*2\r\n$0\r\n\r\n$4\r\n6379\r\n",
            b"*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n", b"*2\r\n+127.0.0.1\r\n:6379\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n 6379\r\n"]

    def test_malformed_sentinel_answer_asks_the_next_sentinel(self):
        good_reply = _sentinel_reply(SERVER.host, SERVER.port)
        for lie in self.LIES:
            with self.subTest(lie=lie), fakes.FakeServer(fakes.canned(lie)) as bad, \
                    fakes.FakeServer(fakes.canned(good_reply)) as good:
                resolver = rc.SentinelResolver([{"host": bad.host, "port": bad.port},
                                                {"host": good.host, "port": good.port}], "m",
                                               connect_timeout_s=2, socket_timeout_s=2)
                self.assertEqual(resolver.master_address(), (SERVER.host, SERVER.port))
                resolver = rc.SentinelResolver([{"host": bad.host, "port": bad.port}], "m",
                                               connect_timeout_s=2, socket_timeout_s=2)
                with self.assertRaises(rc.MasterNotFoundError) as ctx:
                    resolver.master_address()
                self.assertIn("127.0.0.1:%d" % bad.port, str(ctx.exception))

    # -- item 3: one deadline per request --
    def test_handshake_and_commands_share_one_deadline(self):
        # Each reply takes ~0.72 s, under the 1 s timeout; AUTH and PING together do not fit.
        with fakes.FakeServer(fakes.drip(b"+OK\r\n", 0.18)) as fake:
            r = rc.Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            with self.assertRaises(rc.RedisTimeoutError) as ctx:
                r.ping()
        self.assertNotIn(PASSWORD, str(ctx.exception))

    def test_sentinel_query_and_resend_count_against_one_request(self):
        # The sentinel answers in ~0.7 s; it names a replica first, the real master after.
        # Sentinel, replica, sentinel again: 1.4 s, past connect_timeout + socket_timeout (1.2 s).
        replica_role = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:1\r\n$9\r\nconnected\r\n:0\r\n"
        with fakes.FakeServer(fakes.canned(replica_role)) as replica:
            answers = [_sentinel_reply(replica.host, replica.port), _sentinel_reply(SERVER.host, SERVER.port)]

            def sentinel(sock, fake):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reply = answers[min(fake.connections, 2) - 1]
                for _command in fakes._each_command(sock, fake):
                    for i in range(len(reply)):
                        sock.sendall(reply[i:i + 1])
                        time.sleep(0.7 / len(reply))
            with fakes.FakeServer(sentinel) as sent:
                resolver = rc.SentinelResolver([{"host": sent.host, "port": sent.port}], "m",
                                               connect_timeout_s=0.2, socket_timeout_s=1)
                r = rc.Redis("127.0.0.1", 1, sentinel=resolver, connect_timeout_s=0.2, socket_timeout_s=1)
                self.addCleanup(r.close)
                with self.assertRaises(rc.RedisConnectionError) as ctx:  # the sentinels' query ran out of time
                    r.ping()
        self.assertIn("no complete reply", str(ctx.exception))

    # -- item 4: a server echoing the password gets it masked --
    def test_server_echoing_the_password_in_its_refusal(self):
        for template in (b"-ERR unknown command 'AUTH', with args beginning with: '%s' \r\n",
                         b"-WRONGPASS %s\r\n", b"$13\r\n%s\r\n"):
            with self.subTest(template=template), fakes.FakeServer(_echo_auth(template)) as fake:
                r = rc.Redis(fake.host, fake.port, password=PASSWORD[:13], socket_timeout_s=1)
                self.addCleanup(r.close)
                with self.assertRaises(rc.AuthError) as ctx:
                    r.ping()
                self.assertNotIn(PASSWORD[:13], str(ctx.exception))
                self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
                resolver = rc.SentinelResolver([{"host": fake.host, "port": fake.port}], "m",
                                               password=PASSWORD[:13], socket_timeout_s=1)
                with self.assertRaises(rc.RedisError) as ctx:
                    resolver.master_address()
                self.assertNotIn(PASSWORD[:13], str(ctx.exception))

    # -- item 5: only a master's ROLE and an +OK to AUTH pass the handshake --
    def test_role_other_than_a_master_list_runs_nothing(self):
        for reply in (b"+OK\r\n", b"*0\r\n", b"$-1\r\n", b"*-1\r\n", b":1\r\n", b"*1\r\n+slave\r\n",
                      b"*1\r\n$6\r\nMASTER\r\n", b"*1\r\n+master\r\n", b"-ERR unknown command 'ROLE'\r\n",
                      b"$6\r\nmaster\r\n"):
            with self.subTest(reply=reply), fakes.FakeServer(fakes.canned(reply, b"+OK\r\n")) as fake:
                conn = rc.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
                with self.assertRaises(rc.RedisError):
                    conn.request([("SET", "k", "v")])
                conn.close()
            self.assertNotIn(b"SET", bytes(fake.received))

    def test_role_forbidden_by_the_acl_trusts_the_sentinel(self):
        noperm = b"-NOPERM this user has no permissions to run the 'role' command\r\n"
        with fakes.FakeServer(fakes.canned(noperm, b"+OK\r\n")) as fake:
            conn = rc.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
            self.assertEqual(conn.request([("SET", "k", "v")]), ["OK"])
            conn.close()
        master = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
        with fakes.FakeServer(fakes.canned(master, b"+OK\r\n")) as fake:
            conn = rc.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
            self.assertEqual(conn.request([("SET", "k", "v")]), ["OK"])
            conn.close()

    def test_auth_and_select_answered_other_than_ok_run_nothing(self):
        for reply in (b":0\r\n", b"$-1\r\n", b"*0\r\n", b"+QUEUED\r\n", b"$2\r\nOK\r\n"):
            for kw in ({"password": PASSWORD}, {"db": 3}):
                with self.subTest(reply=reply, kw=kw), fakes.FakeServer(fakes.canned(reply, b"+OK\r\n")) as fake:
                    r = rc.Redis(fake.host, fake.port, socket_timeout_s=1, **kw)
                    with self.assertRaises(rc.RedisError) as ctx:
                        r.execute("SET", "k", "v")
                    r.close()
                self.assertNotIn(b"SET", bytes(fake.received))
                self.assertNotIn(PASSWORD, str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
