"""Checks of the test-side Redis harness itself (tests/support/).

Stdlib unittest; needs a redis-server (found or fetched by
tests/support/redis_bin.py).  Runs in a few seconds.
"""

import os
import socket
import sys
import time
import unittest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from support.redis_bin import find_companion, find_redis_server, redis_version  # noqa: E402
from support.redis_server import (  # noqa: E402
    RedisReplyError,
    RedisServer,
    RedisServerError,
    Sentinel,
    free_port,
)


def setUpModule():  # noqa: N802 - unittest API
    global BINARY, VERSION
    BINARY = find_redis_server()
    VERSION = redis_version(BINARY)


class RedisBinTest(unittest.TestCase):
    def test_binary_and_version(self):
        self.assertTrue(os.path.isabs(BINARY))
        self.assertTrue(os.access(BINARY, os.X_OK))
        self.assertEqual(len(VERSION), 3)
        self.assertGreaterEqual(VERSION, (6, 2, 0))

    def test_companion(self):
        cli = find_companion("redis-cli", server=BINARY)
        if cli is not None:
            self.assertTrue(os.access(cli, os.X_OK))
        self.assertIsNone(find_companion("redis-no-such-tool", server=BINARY))

    def test_free_port(self):
        port = free_port()
        self.assertNotIn(port, (6379, 26379))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # really free


class RedisServerTest(unittest.TestCase):
    def test_start_stop(self):
        server = RedisServer(binary=BINARY)
        try:
            server.start()
            self.assertTrue(server.is_running)
            self.assertEqual(server.host, "127.0.0.1")
            self.assertNotEqual(server.port, 6379)
            self.assertEqual(server.command("PING"), "PONG")
            self.assertEqual(server.command("CONFIG", "GET", "bind"), ["bind", "127.0.0.1"])
            self.assertTrue(os.path.isfile(server.log_path))
            port = server.port
            server.stop()
            self.assertFalse(server.is_running)
            with self.assertRaises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
        finally:
            server.close()
        self.assertIsNone(server._dir)

    def test_command_replies(self):
        with RedisServer(binary=BINARY) as server:
            self.assertEqual(server.command("SET", "k", "v"), "OK")
            self.assertEqual(server.command("GET", "k"), "v")
            self.assertIsNone(server.command("GET", "missing"))
            self.assertEqual(server.command("INCRBY", "n", 5), 5)
            self.assertEqual(server.command("RPUSH", "l", "a", b"\xff"), 2)
            self.assertEqual(server.command("LRANGE", "l", 0, -1), ["a", b"\xff"])
            self.assertEqual(server.command("GET", "k", decode=False), b"v")
            with self.assertRaises(RedisReplyError):
                server.command("INCR", "k")
            server.flushall()
            self.assertEqual(server.command("DBSIZE"), 0)

    def test_password(self):
        with RedisServer(password="s3cret", binary=BINARY) as server:
            self.assertEqual(server.command("PING"), "PONG")
            with self.assertRaises(RedisReplyError) as ctx:
                server.command("GET", "x", auth=False)
            self.assertIn("NOAUTH", str(ctx.exception))
            self.assertTrue(server.url.startswith("redis://:s3cret@127.0.0.1:"))

    def test_restart_without_persistence_is_empty(self):
        with RedisServer(binary=BINARY) as server:
            port = server.port
            server.command("SET", "k", "v")
            server.restart()
            self.assertEqual(server.port, port)
            self.assertIsNone(server.command("GET", "k"))

    def test_restart_with_aof_keeps_key_after_crash(self):
        with RedisServer(appendonly=True, binary=BINARY) as server:
            port = server.port
            server.command("SET", "k", "v")
            server.kill()  # SIGKILL: only the fsync'ed AOF survives
            self.assertFalse(server.is_running)
            server.restart()
            self.assertEqual(server.port, port)
            self.assertEqual(server.command("GET", "k"), "v")
            server.restart(keep_data=False)
            self.assertIsNone(server.command("GET", "k"))

    def test_pause_resume(self):
        with RedisServer(binary=BINARY) as server:
            server.pause()
            self.assertTrue(server.is_paused)
            with self.assertRaises(OSError):  # socket.timeout
                server.command("PING", timeout=0.3)
            server.resume()
            self.assertEqual(server.command("PING"), "PONG")
            server.pause()
            server.stop()  # SIGTERM is delivered to a stopped process too
            self.assertFalse(server.is_running)

    def test_start_failure_names_log(self):
        server = RedisServer(extra_args=["--no-such-directive", "1"], binary=BINARY)
        try:
            with self.assertRaises(RedisServerError) as ctx:
                server.start()
            self.assertIn(server.log_path, str(ctx.exception))
            self.assertIn("no-such-directive", str(ctx.exception))
        finally:
            server.close()

    def test_port_in_use_on_fixed_port(self):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            server = RedisServer(port=sock.getsockname()[1], binary=BINARY)
            try:
                with self.assertRaises(RedisServerError) as ctx:
                    server.start()
                self.assertIn("already in use", str(ctx.exception))
            finally:
                server.close()

    def test_reserved_port_refused(self):
        with self.assertRaises(ValueError):
            RedisServer(port=6379)


class ReplicationTest(unittest.TestCase):
    def test_replica_syncs_from_master(self):
        with RedisServer(password="pw", binary=BINARY, name="master") as master:
            master.command("SET", "before", "1")
            with RedisServer(replicaof=master, password="pw", binary=BINARY, name="replica") as replica:
                replica.wait_replica_synced(timeout=8)
                master.wait_for_replicas(1, timeout=8)
                self.assertEqual(replica.command("GET", "before"), "1")
                master.command("SET", "after", "2")
                deadline = time.monotonic() + 5
                while replica.command("GET", "after") is None and time.monotonic() < deadline:
                    time.sleep(0.02)
                self.assertEqual(replica.command("GET", "after"), "2")
                self.assertEqual(replica.info("replication")["role"], "slave")
                with self.assertRaises(RedisReplyError):  # READONLY
                    replica.command("SET", "x", "y")

    def test_sentinel_reports_master(self):
        with RedisServer(password="pw", binary=BINARY, name="master") as master:
            with Sentinel(master, "dnmaster", quorum=1, binary=BINARY) as sentinel:
                self.assertEqual(sentinel.command("PING"), "PONG")
                self.assertEqual(sentinel.get_master_addr(), ("127.0.0.1", master.port))
                self.assertEqual(
                    sentinel.command("SENTINEL", "get-master-addr-by-name", "dnmaster"),
                    ["127.0.0.1", str(master.port)],
                )
                self.assertIsNone(sentinel.get_master_addr("unknown"))
                self.assertIn("master", sentinel.master_state()["flags"])
                with open(sentinel.conf_path) as handle:  # written back by sentinel
                    self.assertIn("sentinel myid", handle.read())


if __name__ == "__main__":
    unittest.main()
