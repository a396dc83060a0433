"""Checks of the test-side Redis harness itself (tests/support/).

Stdlib unittest; needs a redis-server (found or fetched by
tests/support/redis_bin.py).  Runs in a few seconds.
"""

import os
import socket
import tempfile
import time
import unittest
from unittest import mock

import run_all
from support import base
from support.redis_bin import find_companion, find_redis_server, redis_version
from support.redis_server import (
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


def run_cases(*classes) -> unittest.TestResult:
    """Run test classes defined inside a test, as the suite runs a module's classes."""
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in classes)
    result = unittest.TestResult()
    suite.run(result)
    return result


class BaseCaseTest(unittest.TestCase):
    """support/base.py: what every converted test file relies on."""

    def test_each_test_of_a_redis_case_starts_on_an_empty_server_kept_for_the_class(self):
        seen = []

        class Case(base.RedisCase):
            def test_1_writes(self):
                seen.append((self.server, self.server.command("DBSIZE"), os.path.isdir(self.tmp)))
                self.server.command("SET", "left", "behind")
                self.new_node("n1")

            def test_2_reads(self):
                seen.append((self.server, self.server.command("DBSIZE"), os.path.isdir(self.tmp)))

        result = run_cases(Case)
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))
        (first, size_1, dir_1), (second, size_2, dir_2) = seen
        self.assertIs(first, second, "one server for the class")
        self.assertEqual((size_1, size_2, dir_1, dir_2), (0, 0, True, True))
        self.assertFalse(first.is_running, "the class's server is closed after its last test")

    def test_a_shared_server_is_started_once_and_closed_after_the_module(self):
        shared = RedisServer(binary=BINARY, name="shared")
        self.addCleanup(shared.close)
        servers = []

        class One(base.RedisCase):
            shared_server = shared

            def test_it(self):
                servers.append(self.server)

        class Two(One):
            pass

        result = run_cases(One, Two)
        self.assertEqual((result.testsRun, result.errors, result.failures), (2, [], []))
        self.assertEqual(servers, [shared, shared])
        self.assertFalse(shared.is_running, "closed by the module cleanup")

    def test_temp_dirs_go_and_nodes_need_a_server(self):
        dirs, refused = [], []

        class Case(base.TempDirCase):
            def test_it(self):
                dirs.append(self.tmp)
                with self.assertRaises(ValueError):
                    self.new_node("n1")  # no server: it would talk to 127.0.0.1:6379
                refused.append(True)

        result = run_cases(Case)
        self.assertEqual((result.testsRun, result.errors, result.failures), (1, [], []))
        self.assertEqual(refused, [True])
        self.assertFalse(os.path.exists(dirs[0]), "the temp dir is removed after the test")

    def test_slow_skips_only_under_dn_test_skip_slow(self):
        def case():
            pass
        with mock.patch.object(base, "SKIP_SLOW", False):
            self.assertFalse(getattr(base.slow("x")(case), "__unittest_skip__", False))
        with mock.patch.object(base, "SKIP_SLOW", True):
            skipped = base.slow("waits out a lease")(case)
        self.assertTrue(skipped.__unittest_skip__)
        self.assertIn("waits out a lease", skipped.__unittest_skip_why__)


class RunAllTest(unittest.TestCase):
    """tests/run_all.py's parallel order: the slowest modules of the last run start first."""

    def test_slowest_first_with_unknown_modules_ahead(self):
        times = {"test_fast": 1.0, "test_slow": 90.0, "test_mid": 20.0}
        order = run_all.slowest_first(["test_fast", "test_mid", "test_new", "test_slow"], times)
        self.assertEqual(order, ["test_new", "test_slow", "test_mid", "test_fast"])

    def test_times_are_merged_into_the_cache_and_survive_a_bad_file(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        cache = os.path.join(tmp.name, "cache")
        with mock.patch.dict(os.environ, {"DN_CACHE_DIR": cache}):
            self.assertEqual(run_all.load_times(), {})
            run_all.save_times({"test_log": 3.0, "test_docs": 5.0, "test_gone_since": 1.0})
            run_all.save_times({"test_docs": 7.5})
            self.assertEqual(run_all.load_times(), {"test_log": 3.0, "test_docs": 7.5})
            with open(run_all.times_path(), "w") as fh:
                fh.write("[not a dict")
            self.assertEqual(run_all.load_times(), {}, "a broken cache costs only the order")


if __name__ == "__main__":
    unittest.main()
