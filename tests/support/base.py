"""The suite's shared base cases: path set-up once, a redis-server per class or module, a temp dir per test.

    from support.base import RedisCase, TempDirCase, slow   # first: puts tests/ and scripts/ on sys.path
    from distnode.core import keys

    class HeartbeatTest(RedisCase):
        redis_options = {"password": "pw"}      # RedisServer(**redis_options): one server for this class
        flush_scripts = True                    # SCRIPT FLUSH before each test, besides FLUSHALL

        def test_tick(self):
            node = self.new_node("n1", {"node": {"heartbeat_ttl": 5}})  # NodeEnv under self.tmp
            node.run_json("heartbeat.py")
            self.assertTrue(self.server.command("HEXISTS", keys.nodes(), "n1"))

        @slow("spawns three nodes and waits out a 3 s lease")
        def test_lease_expiry(self): ...

Guarantees: every test of a RedisCase starts on an empty Redis (FLUSHALL in
setUp) whose server stays up for the whole class; ``self.tmp`` is a fresh
directory removed after the test; every NodeEnv from :meth:`TempDirCase.new_node`
has its processes killed after the test, before the directory goes. A module
whose tests and helpers share one server keeps it in a module-level
``SERVER = RedisServer(...)`` (not started) and names it in each class as
``shared_server = SERVER``: the first class starts it, and it is closed once
the module's last test has run (a module cleanup).
"""

import os
import shutil
import sys
import tempfile
import unittest
from typing import Iterable, Optional
from unittest import mock

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
SCRIPTS = os.path.join(REPO, "scripts")
for _path in (SCRIPTS, TESTS):  # TESTS ends up first: `support` is this suite's, whatever scripts/ holds
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support.nodes import NodeEnv  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

SKIP_SLOW = os.environ.get("DN_TEST_SKIP_SLOW", "") not in ("", "0")


def slow(reason: str):
    """Skip the decorated test or class when DN_TEST_SKIP_SLOW=1 (``tests/run.sh --quick`` sets it).

    ``reason`` says what makes it slow; the full run (``tests/run.sh``) always runs it, so mark only
    cases whose guarantee some quicker case also touches.
    """
    return unittest.skipIf(SKIP_SLOW, "slow (%s); DN_TEST_SKIP_SLOW=1, the full run covers it" % reason)


class TempDirCase(unittest.TestCase):
    """A fresh temp dir per test (``self.tmp``), and nodes under it that never outlive the test."""

    tmp_prefix = "dn-test-"

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix=self.tmp_prefix)
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def patch_env(self, drop: Iterable[str] = (), **values: str) -> None:
        """Until the test ends, os.environ lacks the variables named in ``drop`` and has ``values``."""
        dropped = set(drop)
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env.update(values)
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def new_node(self, node_id: str = "n1", config: Optional[dict] = None, *, server: Optional[RedisServer] = None,
                 sub: str = "", **kw) -> NodeEnv:
        """A NodeEnv in ``self.tmp`` (or ``self.tmp/sub``) on ``server`` (default: the class's), killed
        after the test. ``kw`` goes to NodeEnv (``redis=``, ``secrets=``, ``timeout_s=``, ...)."""
        if server is None and kw.get("redis") is None:
            server = self.default_server()
        base_dir = os.path.join(self.tmp, sub) if sub else self.tmp
        env = NodeEnv(base_dir, node_id, server, config, **kw)
        self.addCleanup(env.kill_all)
        return env

    def default_server(self) -> RedisServer:
        """The server new_node() uses when given neither ``server`` nor ``redis``: none here, since a node
        without one would fall back to 127.0.0.1:6379, someone's real Redis."""
        raise ValueError("new_node() needs server= or redis= outside a RedisCase")


class RedisCase(TempDirCase):
    """TempDirCase plus a redis-server that lives for the whole class; each test starts on an empty one.

    The server is ``RedisServer(**redis_options)`` started in setUpClass and closed after the class,
    or ``shared_server`` when a module shares one among its classes (closed after the module).
    """

    redis_options: dict = {}
    shared_server: Optional[RedisServer] = None
    server: RedisServer  # set by setUpClass
    flush_scripts = False  # also SCRIPT FLUSH before each test: for tests that count EVAL vs EVALSHA

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        shared = cls.shared_server
        if shared is not None:
            if not shared.is_running:
                shared.start()
                unittest.addModuleCleanup(shared.close)
            cls.server = shared
        else:
            options = dict({"name": cls.__name__.lower()}, **cls.redis_options)
            cls.server = RedisServer(**options).start()
            cls.addClassCleanup(cls.server.close)

    def default_server(self) -> RedisServer:
        return self.server

    def setUp(self) -> None:
        super().setUp()
        self.server.flushall()
        if self.flush_scripts:
            self.server.command("SCRIPT", "FLUSH")
