"""run/wake.py: StreamWatch (positions, blocking reads, faults) and wait() (why it returned), against a
real redis-server. Timeouts come from support.nodes.FAST: socket timeout 1 s, so a block lasts 0.5 s.
"""

import os
import threading
import time
import unittest
from unittest import mock

from support.base import RedisCase  # first: puts scripts/ on sys.path
from support.nodes import wait_for
from support.tasks import close_contexts, drop_env_overrides, local_context

from distnode.redis.errors import RedisError
from distnode.run import wake


def clients(server) -> list:
    """CLIENT LIST as dicts (``id``, ``cmd``, ...)."""
    return [dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in server.command("CLIENT", "LIST").splitlines()]


class WakeCase(RedisCase):
    @classmethod
    def setUpClass(cls) -> None:
        drop_env_overrides()
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        self.ctx = local_context(os.path.join(self.tmp, "n1"), "n1", self.server, {})
        self.addCleanup(close_contexts, [self.ctx])
        self.watch = wake.StreamWatch(self.ctx)
        self.addCleanup(self.watch.close)

    def xadd(self, stream: str, **fields) -> str:
        flat = [v for pair in (fields or {"f": "v"}).items() for v in pair]
        return self.server.command("XADD", stream, "*", *flat)

    def kill_watch_connection(self) -> None:
        watch_id = self.watch.redis.execute("CLIENT", "ID")
        self.server.command("CLIENT", "KILL", "ID", watch_id)


class StreamWatchTest(WakeCase):
    def test_follow_is_false_for_new_streams_then_true(self):
        self.xadd("s1")
        self.assertFalse(self.watch.follow(["s1", "s2"]))
        self.assertTrue(self.watch.follow(["s1", "s2"]))
        self.assertTrue(self.watch.follow(["s2"]), "a stream dropped from the set is no new one")
        self.assertFalse(self.watch.follow(["s2", "s3"]), "s3 is new")
        self.assertTrue(self.watch.follow(["s3", "s2"]))

    def test_a_position_is_where_the_stream_ends_not_its_last_live_entry(self):
        """Redis 5 answers XREAD BLOCK at once, empty, from below the last generated id: the watch would spin."""
        self.xadd("s1")
        last = self.xadd("s1")
        self.server.command("XDEL", "s1", last)
        self.watch.follow(["s1"])
        self.assertEqual(self.watch.positions["s1"], last)
        before = self.watch.redis.round_trips
        self.assertEqual(self.watch.read(0.3), [])
        self.assertLessEqual(self.watch.redis.round_trips - before, 2, "the read did not block")

    def test_read_returns_only_entries_past_the_positions(self):
        self.xadd("s1", n="before")
        self.watch.follow(["s1", "s2"])  # s2 does not exist yet
        e1 = self.xadd("s1", n="after")
        e2 = self.xadd("s2", n="new stream")
        got = [(e.stream, e.id, e.fields) for e in self.watch.read(2)]
        self.assertEqual(got, [("s1", e1, {"n": "after"}), ("s2", e2, {"n": "new stream"})])
        self.assertEqual(self.watch.read(0.05), [], "nothing new: the block runs out")
        e3 = self.xadd("s2", n="later")
        self.assertEqual([(e.id, e.fields) for e in self.watch.read(2)], [(e3, {"n": "later"})])

    def test_forget_reads_the_positions_again_on_the_same_connection(self):
        self.watch.follow(["s1"])
        self.xadd("s1")  # handled by a tick: the caller forgets the old position
        connection = self.watch.redis
        self.watch.forget()
        self.assertFalse(self.watch.follow(["s1"]))
        self.assertEqual(self.watch.read(0.05), [], "the entry before the new position is not read again")
        self.assertIs(self.watch.redis, connection)

    def test_a_fault_drops_the_connection_and_every_position(self):
        self.xadd("s1")
        self.watch.follow(["s1"])
        self.kill_watch_connection()
        with self.assertRaises(RedisError):
            self.watch.read(0.2)
        self.assertEqual((self.watch.positions, self.watch.redis), ({}, None))
        self.assertFalse(self.watch.follow(["s1"]), "the positions are read again (a restarted server has others)")


class WaitTest(WakeCase):
    def wait(self, streams, seconds: float = 5, wakes=lambda entry: True) -> str:
        return wake.wait(self.ctx, self.watch, streams, time.monotonic() + seconds, wakes)

    def test_new_streams_prime_first_then_an_entry_wakes(self):
        self.assertEqual(self.wait(["s1"]), "primed")
        self.xadd("s1")
        self.assertEqual(self.wait(["s1"]), "woken")
        self.assertEqual(self.wait(["s1", "s2"]), "primed")

    def test_entries_the_caller_refuses_do_not_wake_it(self):
        self.wait(["s1"])
        self.xadd("s1", type="other")
        self.assertEqual(self.wait(["s1"], 0.3, lambda e: e.fields.get("type") == "wanted"), "due")
        self.assertEqual(self.watch.read(0.05), [], "the refused entry was read past")
        self.xadd("s1", type="wanted")
        self.assertEqual(self.wait(["s1"], 5, lambda e: e.fields.get("type") == "wanted"), "woken")

    def test_a_stop_ends_the_wait(self):
        self.wait(["s1"])
        self.ctx.stopping = True
        self.assertEqual(self.wait(["s1"]), "stopping")

    def test_a_fault_is_reported_and_the_positions_read_again(self):
        self.wait(["s1"])
        self.kill_watch_connection()
        self.assertEqual(self.wait(["s1"]), "fault")
        self.assertEqual(self.watch.positions, {})
        self.assertEqual(self.wait(["s1"]), "primed")

    def test_a_refused_read_makes_the_watch_unusable_for_a_while(self):
        """Redis refusing (a key of another type, an ACL without XREAD) is no fault to retry at once."""
        self.server.command("SET", "s1", "not a stream")
        with mock.patch.object(self.ctx, "sleep") as sleep:
            self.assertEqual(self.wait(["s1"]), "refused")
        sleep.assert_not_called()
        self.assertFalse(self.watch.usable)
        self.watch.refused_until_s = 0
        self.assertTrue(self.watch.usable)

    def test_a_fault_pauses_even_with_no_retry_delay(self):
        self.ctx.cfg["node"]["retry_delay"] = 0  # a valid setting: a refused connect must still not spin
        self.wait(["s1"])
        self.kill_watch_connection()
        with mock.patch.object(self.ctx, "sleep") as sleep:
            self.assertEqual(self.wait(["s1"]), "fault")
        self.assertGreaterEqual(sleep.call_args[0][0], wake.FAULT_PAUSE_MIN_S)

    def test_the_blocking_read_is_not_the_ticks_connection(self):
        self.wait(["s1"])
        tick_id = self.ctx.redis.execute("CLIENT", "ID")
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(self.wait(["s1"], 20)))
        thread.start()
        try:
            blocked = wait_for(lambda: [c for c in clients(self.server) if c.get("cmd") == "xread"], 10,
                               message="the watch to block")
            self.assertNotEqual(int(blocked[0]["id"]), tick_id)
            self.assertEqual(self.ctx.redis.execute("PING"), "PONG", "a tick's request waited for the block")
            self.assertTrue(thread.is_alive(), "the wait ended with nothing to wake it")
            self.xadd("s1")
        finally:
            thread.join(20)
        self.assertEqual(outcome, ["woken"])


class InterruptTest(WakeCase):
    """A --foreground stop ends a read another thread is blocked in at once (``interrupt_all``)."""

    def test_interrupt_all_ends_a_blocked_read_and_the_wait_reports_the_stop(self):
        watch = wake.StreamWatch(self.ctx, block_max_s=60)  # a block the test would never outwait
        self.addCleanup(watch.close)
        wake.wait(self.ctx, watch, ["s1"], time.monotonic() + 60, lambda e: True)  # primed
        outcome = []
        thread = threading.Thread(target=lambda: outcome.append(
            wake.wait(self.ctx, watch, ["s1"], time.monotonic() + 60, lambda e: True)))
        thread.start()
        try:
            wait_for(lambda: [c for c in clients(self.server) if c.get("cmd") == "xread"], 10,
                     message="the watch to block")
            self.ctx.stopping = True
            wake.interrupt_all()
            thread.join(20)
            self.assertFalse(thread.is_alive(), "the read went on blocking after interrupt_all()")
        finally:
            self.xadd("s1")  # never leave the thread behind
            thread.join(20)
        self.assertEqual(outcome, ["stopping"])
        self.assertEqual((watch.redis, watch.positions), (None, {}))

    def test_a_closed_watch_is_no_longer_interrupted(self):
        self.watch.follow(["s1"])
        self.assertIn(self.watch, wake._OPEN)
        self.watch.close()
        self.assertNotIn(self.watch, wake._OPEN)


if __name__ == "__main__":
    unittest.main()
