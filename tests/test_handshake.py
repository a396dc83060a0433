"""scripts/distnode/redis/connection.py: the handshake (AUTH, SELECT, ROLE) before any command.

Issue 13 item 1: a refused or odd answer to AUTH, SELECT or ROLE stops every
command that would follow it, on real redis-servers (passwords, ACL users, a
db out of range, a writable replica a sentinel names) and on fake servers that
answer the handshake with anything but the one right reply.
"""

import unittest

from support.base import RedisCase
from distnode.core import keys
from distnode.redis import connection, errors, sentinel
from distnode.redis.script import Script
from support import fake_servers as fakes
from support.redis_extras import Redis
from support.redis_server import RedisServer

PASSWORD = "pw-Secret-4711"


def client(server, **kw) -> Redis:
    kw.setdefault("socket_timeout_s", 5)
    kw.setdefault("connect_timeout_s", 5)
    return Redis(server.host, server.port, **kw)


def _echo_auth(template: bytes):
    """A server answering AUTH with ``template`` % its last argument (the password), then +PONG."""
    def handler(sock, fake):
        for command in fakes._each_command(sock, fake):
            if command[0].upper() == b"AUTH":
                sock.sendall(template % command[-1])
            else:
                sock.sendall(b"+PONG\r\n")
    return handler


class AuthTest(RedisCase):
    redis_options = {"password": PASSWORD}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.acl = cls.server.version >= (6, 0, 0)
        if cls.acl:
            cls.server.command("ACL", "SETUSER", "alice", "on", ">alice-pw-99", "~*", "+@all")
            cls.server.command("ACL", "SETUSER", "bob", "on", ">bob-pw-77", "~*", "+ping", "+get")

    def client(self, **kw) -> Redis:
        r = client(self.server, **kw)
        self.addCleanup(r.close)
        return r

    def test_password_ok(self):
        r = self.client(password=PASSWORD)
        self.assertEqual(r.ping(), "PONG")
        self.assertEqual(r.ping(), "PONG")
        r.close()

    def test_wrong_password(self):
        r = self.client(password="not-" + PASSWORD)
        with self.assertRaises(errors.AuthError) as ctx:
            r.ping()
        msg = str(ctx.exception)
        self.assertIn("%s:%d" % (self.server.host, self.server.port), msg)
        self.assertNotIn(PASSWORD, msg)

    def test_no_password_given(self):
        with self.assertRaises(errors.NoAuthError):
            self.client().ping()
        with self.assertRaises(errors.NoAuthError):  # > 10 arguments before AUTH: a protocol error on Redis 6.2.6+
            self.client().execute("EVAL", "return 1", 9, *"abcdefghi")

    def test_acl_user(self):
        if not self.acl:
            self.skipTest("Redis %s has no ACL users" % (self.server.version,))
        r = self.client(username="alice", password="alice-pw-99")
        self.assertEqual(r.execute("ACL", "WHOAMI"), b"alice")
        with self.assertRaises(errors.AuthError) as ctx:
            self.client(username="alice", password="wrong-alice-pw").ping()
        self.assertNotIn("wrong-alice-pw", str(ctx.exception))

    def test_acl_user_without_needed_commands(self):
        if not self.acl:
            self.skipTest("Redis %s has no ACL users" % (self.server.version,))
        r = self.client(username="bob", password="bob-pw-77")
        self.assertEqual(r.ping(), "PONG")
        with self.assertRaises(errors.NoPermError) as ctx:
            r.set("k", "v")
        self.assertIn("NOPERM", str(ctx.exception))
        with self.assertRaises(errors.NoPermError):
            Script("one", "return 1", 0)(r)


class HandshakeGuardTest(RedisCase):
    """Issue 13 item 1: a failed AUTH / SELECT / ROLE stops the commands that would follow it.

    Each case gives the server a way to run the command anyway (db 0 exists, the default
    user needs no password, a replica that accepts writes) and checks nothing ran.
    """

    def assert_nothing_written(self, server=None):
        server = server or self.server
        self.assertEqual(server.command("DBSIZE"), 0, "a command ran although the handshake failed")

    def attempts(self, r):
        """Every way a tick sends commands: one command, a pipeline, a transaction, a script."""
        yield lambda: r.execute("SET", "k", "v")
        yield lambda: r.pipeline().set("k", "v").incr("n").execute()
        yield lambda: r.pipeline(transaction=True).set("k", "v").execute()
        yield lambda: Script("set_v", "return redis.call('SET', KEYS[1], 'v')", 1)(r, ("k",))

    def test_db_out_of_range_writes_nothing_in_db0(self):
        r = client(self.server, db=99)
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(errors.ResponseError) as ctx:
                attempt()
            self.assertIn("SELECT 99", str(ctx.exception))
            self.assertIn("%s:%d" % (self.server.host, self.server.port), str(ctx.exception))
        self.assert_nothing_written()

    def test_acl_user_with_a_wrong_password_runs_nothing_as_the_default_user(self):
        if self.server.version < (6, 0, 0):
            self.skipTest("Redis %s has no ACL users" % (self.server.version,))
        # The default user needs no password here, so a command after a refused AUTH would run as it.
        self.server.command("ACL", "SETUSER", "carol", "on", ">carol-pw-31", "~*", "+@all")
        self.addCleanup(self.server.command, "ACL", "DELUSER", "carol")
        r = client(self.server, username="carol", password="wrong-carol-pw")
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(errors.AuthError) as ctx:
                attempt()
            self.assertNotIn("wrong-carol-pw", str(ctx.exception))
        self.assert_nothing_written()
        good = client(self.server, username="carol", password="carol-pw-31")
        self.addCleanup(good.close)
        self.assertEqual(good.execute("ACL", "WHOAMI"), b"carol")

    def test_password_given_to_a_server_without_one_writes_nothing(self):
        r = client(self.server, password=PASSWORD)
        self.addCleanup(r.close)
        for attempt in self.attempts(r):
            with self.assertRaises(errors.AuthError) as ctx:
                attempt()
            self.assertIn("the server has none set", str(ctx.exception))
            self.assertNotIn(PASSWORD, str(ctx.exception))
        self.assert_nothing_written()

    def test_sentinel_naming_a_replica_writes_nothing_there(self):
        # A replica that accepts writes: only the ROLE check can keep a command off it.
        replica = RedisServer(replicaof=self.server, extra_args=["--replica-read-only", "no"],
                              name="wr-replica").start()
        self.addCleanup(replica.close)
        replica.wait_replica_synced()
        with fakes.FakeServer(fakes.sentinel_naming(replica.host, replica.port)) as fake:
            resolver = sentinel.SentinelResolver([{"host": fake.host, "port": fake.port}], "mymaster",
                                           connect_timeout_s=2, socket_timeout_s=2)
            r = Redis("127.0.0.1", 1, sentinel=resolver, connect_timeout_s=2, socket_timeout_s=2)
            self.addCleanup(r.close)
            for attempt in self.attempts(r):
                with self.assertRaises(errors.NotMasterError) as ctx:
                    attempt()
                self.assertIn("127.0.0.1:%d is a replica" % replica.port, str(ctx.exception))
        self.assertEqual(replica.command("DBSIZE"), 0)
        for name in ("set", "incr", "multi", "eval", "evalsha"):
            self.assertEqual(replica.command_calls(name), 0, "%s reached the replica" % name)

    def test_handshake_costs_one_round_trip_per_connection_and_none_without_one(self):
        with_hs = client(self.server, db=3)
        without = client(self.server)
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
        node = self.new_node("hs-n1", {"redis": {"db": 99}})
        proc = node.run("heartbeat.py")
        self.assertNotEqual(proc.returncode, 0)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn("SELECT 99", lines[0])
        self.assertNotIn("Traceback", proc.stderr)
        self.assertEqual(self.server.command("HGETALL", keys.nodes()), [])
        self.assertIsNone(self.server.command("GET", keys.heartbeat("hs-n1")))
        self.assert_nothing_written()

    def test_password_given_but_none_set(self):
        with self.assertRaises(errors.AuthError) as ctx:
            client(self.server, password=PASSWORD).ping()
        msg = str(ctx.exception)
        self.assertIn("the server has none set", msg)
        self.assertIn("%s:%d" % (self.server.host, self.server.port), msg)
        self.assertNotIn(PASSWORD, msg)


class HostileHandshakeTest(unittest.TestCase):
    """Issue 13 items 1 and 13, second round: a server that echoes the password, or answers
    AUTH, SELECT or ROLE with anything but the one right reply, runs nothing."""

    def test_server_echoing_the_password_in_its_refusal(self):
        for template in (b"-ERR unknown command 'AUTH', with args beginning with: '%s' \r\n",
                         b"-WRONGPASS %s\r\n", b"$13\r\n%s\r\n"):
            with self.subTest(template=template), fakes.FakeServer(_echo_auth(template)) as fake:
                r = Redis(fake.host, fake.port, password=PASSWORD[:13], socket_timeout_s=1)
                self.addCleanup(r.close)
                with self.assertRaises(errors.AuthError) as ctx:
                    r.ping()
                self.assertNotIn(PASSWORD[:13], str(ctx.exception))
                self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
                resolver = sentinel.SentinelResolver([{"host": fake.host, "port": fake.port}], "m",
                                               password=PASSWORD[:13], socket_timeout_s=1)
                with self.assertRaises(errors.RedisError) as ctx:
                    resolver.master_address()
                self.assertNotIn(PASSWORD[:13], str(ctx.exception))

    def test_role_other_than_a_master_list_runs_nothing(self):
        for reply in (b"+OK\r\n", b"*0\r\n", b"$-1\r\n", b"*-1\r\n", b":1\r\n", b"*1\r\n+slave\r\n",
                      b"*1\r\n$6\r\nMASTER\r\n", b"*1\r\n+master\r\n", b"-ERR unknown command 'ROLE'\r\n",
                      b"$6\r\nmaster\r\n"):
            with self.subTest(reply=reply), fakes.FakeServer(fakes.canned(reply, b"+OK\r\n")) as fake:
                conn = connection.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
                with self.assertRaises(errors.RedisError):
                    conn.request([("SET", "k", "v")])
                conn.close()
            self.assertNotIn(b"SET", bytes(fake.received))

    def test_role_forbidden_by_the_acl_trusts_the_sentinel(self):
        noperm = b"-NOPERM this user has no permissions to run the 'role' command\r\n"
        with fakes.FakeServer(fakes.canned(noperm, b"+OK\r\n")) as fake:
            conn = connection.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
            self.assertEqual(conn.request([("SET", "k", "v")]), ["OK"])
            conn.close()
        master = b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"
        with fakes.FakeServer(fakes.canned(master, b"+OK\r\n")) as fake:
            conn = connection.Connection(fake.host, fake.port, expect_master=True, socket_timeout_s=1)
            self.assertEqual(conn.request([("SET", "k", "v")]), ["OK"])
            conn.close()

    def test_auth_and_select_answered_other_than_ok_run_nothing(self):
        for reply in (b":0\r\n", b"$-1\r\n", b"*0\r\n", b"+QUEUED\r\n", b"$2\r\nOK\r\n"):
            for kw in ({"password": PASSWORD}, {"db": 3}):
                with self.subTest(reply=reply, kw=kw), fakes.FakeServer(fakes.canned(reply, b"+OK\r\n")) as fake:
                    r = Redis(fake.host, fake.port, socket_timeout_s=1, **kw)
                    with self.assertRaises(errors.RedisError) as ctx:
                        r.execute("SET", "k", "v")
                    r.close()
                self.assertNotIn(b"SET", bytes(fake.received))
                self.assertNotIn(PASSWORD, str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
