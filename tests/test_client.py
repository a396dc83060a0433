"""scripts/distnode/redis/client.py: the Redis class over a real redis-server.

Requests are one round trip each, the pool reuses connections and survives a
restart, SELECT picks the db, settings reach every connection, and a tick
without Sentinel never imports the Sentinel module. Pipelines and command
helpers are the tests' own (tests/support/redis_extras.py) over the same
``request`` and ``execute``.
"""

import subprocess
import sys
import unittest
from unittest import mock

from support.base import SCRIPTS, RedisCase
from distnode.core import defaults
from distnode.core.settings import SCHEMA
from distnode.redis import connection, errors, resp
from support import fake_servers as fakes
from support.redis_extras import Redis


class ClientTest(RedisCase):
    def setUp(self):
        super().setUp()
        self.r = self.client()
        self.addCleanup(self.r.close)

    def client(self, server=None, **kw) -> Redis:
        server = server or self.server
        kw.setdefault("socket_timeout_s", 5)
        kw.setdefault("connect_timeout_s", 5)
        return Redis(server.host, server.port, **kw)

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
        with self.assertRaises(errors.WrongTypeError):
            r.incr("h")

    def test_one_byte_per_recv_against_real_redis(self):
        self.r.hset("h", "a", "1")
        self.r.hset("h", "b", "")
        with mock.patch.object(defaults, "READ_CHUNK_BYTES", 1):
            r = self.client()
            try:
                self.assertEqual(r.hgetall("h"), {b"a": b"1", b"b": b""})
                replies = r.request([("PING",), ("GET", "nope"), ("HGETALL", "h"), ("INCR", "h"),
                                     ("EVAL", "return {1, {'x', false}, redis.error_reply('E1')}", 0)])
                self.assertEqual(replies[:2], ["PONG", None])
                self.assertEqual(sorted(replies[2]), [b"", b"1", b"a", b"b"])
                self.assertIsInstance(replies[3], errors.WrongTypeError)
                self.assertEqual(replies[4][:2], [1, [b"x", None]])
                self.assertIsInstance(replies[4][2], errors.ResponseError)
            finally:
                r.close()

    def test_dribbling_server(self):
        with fakes.FakeServer(fakes.dribble_proxy(self.server.host, self.server.port)) as fake:
            r = self.client(fake)
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
        self.assertIsInstance(replies[1], errors.ResponseError)
        self.assertIsInstance(replies[2], errors.ResponseError)
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
        self.assertIsInstance(result[1], errors.ResponseError)  # run-time error, in place
        self.assertEqual(result[2], 2)

    def test_multi_exec_queue_time_error_applies_nothing(self):
        pipe = self.r.pipeline(transaction=True)
        pipe.set("a", "1").execute_command("SET", "only-key")
        with self.assertRaises(errors.ResponseError) as ctx:
            pipe.execute()
        self.assertIn("wrong number of arguments", str(ctx.exception))
        self.assertIsNone(self.r.get("a"))

    def test_select(self):
        r3 = self.client(db=3)
        try:
            r3.set("in3", "x")
            self.assertEqual(r3.get("in3"), b"x")
        finally:
            r3.close()
        self.assertIsNone(self.r.get("in3"))
        self.assertTrue(self.server.info("keyspace")["db3"].startswith("keys=1"))
        bad = self.client(db=99)
        with self.assertRaises(errors.ResponseError) as ctx:
            bad.ping()
        self.assertIn("SELECT 99", str(ctx.exception))
        self.assertIn("%s:%d" % (self.server.host, self.server.port), str(ctx.exception))

    def test_pool_reuses_connections_and_recovers_from_restart(self):
        r = self.client()
        try:
            r.ping()
            r.ping()
            clients_before = self.server.command("CLIENT", "LIST").count("\n")
            r.ping()
            self.assertEqual(self.server.command("CLIENT", "LIST").count("\n"), clients_before)
            self.server.restart()
            try:
                r.ping()  # a stale pooled connection may fail once...
            except errors.RedisConnectionError as exc:
                self.assertIn(str(self.server.port), str(exc))
            self.assertEqual(r.ping(), "PONG")  # ...but never twice
        finally:
            r.close()

    def test_default_bound_is_far_above_a_large_legit_reply(self):
        self.assertGreaterEqual(resp.MAX_REPLY_BYTES, 16 * 1024 * 1024)
        self.server.flushall()
        r = self.client()
        self.addCleanup(r.close)
        pipe = r.pipeline()
        for i in range(20000):
            pipe.hset("big", "member-%05d" % i, "x" * 200)
        pipe.execute()
        self.assertEqual(len(r.hgetall("big")), 20000)
        self.server.flushall()


class InterruptTest(unittest.TestCase):
    """``interrupt()`` (a --foreground stop) ends a request for good: under Sentinel it is not sent again."""

    def test_an_interrupted_request_is_not_resent_to_the_master(self):
        from distnode.redis.client import Redis as Client
        client = Client(sentinel=mock.Mock(master_name="m"))

        def interrupted(commands, deadline_at):
            client.interrupt()
            raise errors.RedisConnectionError("connection closed")
        with mock.patch.object(client, "_send", side_effect=interrupted), \
                mock.patch.object(client, "_resend_after", return_value=True) as resend:
            with self.assertRaises(errors.RedisConnectionError):
                client.request([("XREAD", "BLOCK", 1000, "STREAMS", "s", "0-0")])
        resend.assert_not_called()


class SettingsTest(RedisCase):
    """``Redis.from_settings``: the config's redis section reaches every connection."""

    def test_max_reply_bytes_is_a_setting_with_a_floor(self):
        setting = SCHEMA[("redis", "max_reply_bytes")]
        self.assertEqual((setting.kind, setting.default), ("int", resp.MAX_REPLY_BYTES))
        self.assertGreaterEqual(setting.low, 1024 * 1024 - 1)
        r = Redis.from_settings({"host": self.server.host, "port": self.server.port,
                                 "max_reply_bytes": 2 * 1024 * 1024})
        self.addCleanup(r.close)
        r.ping()
        self.assertEqual(r._idle[0]._parser.max_reply_bytes, 2 * 1024 * 1024)

    def test_streamed_simple_strings_are_refused_by_a_configured_bound(self):
        item = b"+" + b"a" * 60000 + b"\r\n"       # 200 x 60 KB = 12 MB, then the server holds
        with fakes.FakeServer(fakes.array_stream(1000000, 200, item=item, chunk_items=10)) as fake:
            r = Redis.from_settings({"host": fake.host, "port": fake.port, "socket_timeout": 10,
                                        "connect_timeout": 2, "max_reply_bytes": 1024 * 1024})
            self.addCleanup(r.close)
            with self.assertRaises(errors.ProtocolError) as ctx:
                r.execute("SMEMBERS", "s")
        self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
        self.assertIn("1048576", str(ctx.exception))

    def test_without_sentinels_the_sentinel_module_is_never_imported(self):
        # A one-shot tick pays for what it imports: a client without Sentinel, running a script
        # for the first time (EVAL), loads neither the Sentinel module nor hashlib.
        probe = ("import sys; sys.path.insert(0, %r)\n"
                 "from distnode.redis.client import Redis\n"
                 "from distnode.redis.script import Script\n"
                 "r = Redis.from_settings({'host': %r, 'port': %d})\n"
                 "assert Script('one', 'return 1', 0)(r) == 1\n"
                 "print(sorted(m for m in ('distnode.redis.sentinel', 'hashlib') if m in sys.modules))"
                 % (SCRIPTS, self.server.host, self.server.port))
        run = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=60)
        self.assertEqual((run.returncode, run.stdout.strip()), (0, "[]"), run.stderr)


if __name__ == "__main__":
    unittest.main()
