"""Several nodes as real processes on one real Redis: election, failover, pauses, restarts, Redlock.

Intervals are scaled down (heartbeat 1 s, ttl and lease 3 s) so that the
bound docs/en/how-it-works.md promises, "a crash fails over in under lease_ttl + one
interval", is 4 s here.
"""

import json
import signal
import sys
import tempfile
import time
import unittest

from support.base import RedisCase  # first: puts scripts/ on sys.path
from support.fence import fenced_probe
from support.nodes import wait_for
from support.redis_server import RedisServer
from test_elector import make_ctx, record
from distnode.core import local_state
from distnode import lua
from distnode.cluster.elector import Elector
from distnode.redis.errors import FencedError
from distnode.redis.script import Script

CRASH_BOUND_S = 4.0 + 0.75  # lease_ttl + interval, plus process start-up slack on a loaded 2-core box


class ThreeNodes(RedisCase):
    def setUp(self):
        super().setUp()
        self.nodes = {n: self.new_node(n) for n in ("n1", "n2", "n3")}
        for node in self.nodes.values():
            node.spawn_all()

    def leader(self):
        return self.server.command("GET", "openclaw:cluster:leader")

    def epoch(self) -> int:
        return int(self.server.command("GET", "openclaw:cluster:epoch") or 0)

    def wait_leader(self, not_in=(), timeout_s=10):
        return wait_for(lambda: (self.leader() not in not_in) and self.leader(), timeout_s,
                        interval_s=0.02, message="a leader other than %s" % (not_in,))

    def test_one_leader_status_and_crash_failover(self):
        first = self.wait_leader()
        wait_for(lambda: all(n["state"] == "online" for n in self.status()["nodes"]) and len(self.status()["nodes"]) == 3,
                 10, message="three online members")
        status = self.status()
        self.assertEqual(status["leader"], first)
        table = self.nodes["n1"].run("node_manager.py", "status", "--quiet").stdout
        self.assertRegex(table, r"(?m)^%s\s+online\s+[\d.]+s ago\s+\*" % first)
        old_epoch = self.epoch()
        # kill -9 every process of the leader: nothing releases the lease; it must expire
        self.nodes[first].kill_all()
        killed_at = time.monotonic()
        self.wait_leader(not_in=(first, None), timeout_s=10)
        failover_s = time.monotonic() - killed_at
        sys.stderr.write("\n  crash failover took %.2fs (bound %.2fs) " % (failover_s, CRASH_BOUND_S))
        self.assertLess(failover_s, CRASH_BOUND_S)
        self.assertGreater(self.epoch(), old_epoch)
        # the dead node goes offline after heartbeat_ttl, marked once by the leader, with an event
        wait_for(lambda: {n["id"]: n["state"] for n in self.status()["nodes"]}[first] == "offline", 20,
                 message="%s offline" % first)
        wait_for(lambda: self.events("node_offline"), 20, message="a node_offline event")
        offline = self.events("node_offline")
        self.assertEqual([e["node"] for e in offline], [first])
        rec = json.loads(self.server.command("HGET", "openclaw:cluster:nodes", first))
        self.assertEqual((rec["status"], rec["epoch"]), ("offline", self.epoch()))

    def test_graceful_leave_hands_over_within_one_interval(self):
        first = self.wait_leader()
        old_epoch = self.epoch()
        stopped_at = time.monotonic()
        self.nodes[first].signal_all(signal.SIGTERM)
        self.wait_leader(not_in=(first, None), timeout_s=5)
        handover_s = time.monotonic() - stopped_at
        sys.stderr.write("\n  graceful handover took %.2fs " % handover_s)
        self.assertLess(handover_s, 1.0 + 0.75)
        self.assertGreater(self.epoch(), old_epoch)
        released = self.events("leader_released")
        self.assertEqual([e["node"] for e in released], [first])

    def test_paused_leader_changes_nothing_and_steps_down(self):
        first = self.wait_leader()
        stale_epoch = self.epoch()
        self.nodes[first].signal_all(signal.SIGSTOP)  # a long GC pause, a frozen VM
        second = self.wait_leader(not_in=(first, None), timeout_s=10)
        new_epoch = self.epoch()
        self.assertGreater(new_epoch, stale_epoch)
        self.nodes[first].signal_all(signal.SIGCONT)
        # the woken leader's in-flight writes carry its old epoch: every fenced script refuses them
        token = local_state.instance_token(self.nodes[first].run_dir, first)  # make_ctx writes another one
        ctx = make_ctx(self.tmp, first, self.server)
        sweep = lua.run(ctx.redis, "failover_scan", ("openclaw:cluster:leader", "openclaw:cluster:epoch",
                                                     "openclaw:cluster:nodes", "openclaw:cluster:events", "hb:" + first,
                                                     "openclaw:cluster:term"),
                        (first, str(stale_epoch), "0", 100, 100, token))
        self.assertEqual(sweep.outcome, "follower")
        probe = Script("probe", fenced_probe("redis.call('SET', 'openclaw:cluster:probe', ARGV[2]) return 1"), 3)
        with self.assertRaises(FencedError):
            probe(ctx.redis, ("openclaw:cluster:leader", "openclaw:cluster:epoch", "openclaw:cluster:term"),
                  (first, stale_epoch, token))
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:probe"))
        ctx.close()
        # after waking it follows; the cluster keeps exactly one leader, never at an old epoch
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            self.assertIn(self.leader(), (second, None, first))
            self.assertGreaterEqual(self.epoch(), new_epoch)
            time.sleep(0.05)
        wait_for(lambda: "lost leadership" in self.nodes[first].log_text("leader_election")
                 or "lost leadership" in self.nodes[first].log_text("failover_manager"), 20,
                 message="the woken leader to notice it lost the lease")

    def test_redis_restarted_empty_cluster_reforms_with_higher_epoch(self):
        self.wait_leader()
        wait_for(lambda: self.epoch() >= 1, 5)
        before = self.epoch()
        self.server.restart(keep_data=False)
        restarted_at = time.monotonic()
        self.wait_leader(timeout_s=10)
        reform_s = time.monotonic() - restarted_at
        sys.stderr.write("\n  re-formed %.2fs after an empty restart " % reform_s)
        # a tick to notice the restart, the one-round bootstrap wait, the next election
        # tick: two ticks once the nodes are back, plus one to notice, plus start-up slack
        self.assertLess(reform_s, 3 * 1.0 + 1.0)
        self.assertGreater(self.epoch(), before, "an empty Redis must not restart the epochs at 1")
        wait_for(lambda: len(self.status()["nodes"]) == 3, 5, message="all three members re-registered")

    # -- helpers --
    def status(self) -> dict:
        return self.nodes["n1"].run_json("node_manager.py", "status")

    def events(self, kind: str) -> list:
        out = []
        for _id, flat in self.server.command("XRANGE", "openclaw:cluster:events", "-", "+"):
            fields = dict(zip(flat[::2], flat[1::2]))
            if fields["type"] == kind:
                out.append(fields)
        return out


class Redlock(unittest.TestCase):
    """Several independent masters: a majority must agree; epochs grow across instances."""

    def run_case(self, instances: int, down: int):
        servers = [RedisServer().start() for _ in range(instances)]
        data = RedisServer().start()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                cfg = {"redis": {"instances": [{"host": s.host, "port": s.port} for s in servers]}}
                ctxs = [make_ctx(tmp, n, data, cfg) for n in ("n1", "n2")]
                for n in ("n1", "n2"):
                    data.command("SET", "hb:" + n, "1", "PX", 60000)
                    data.command("HSET", "openclaw:cluster:nodes", n, record().replace('"n1"', '"%s"' % n))
                for s in servers[:down]:
                    s.stop()
                quorum = instances // 2 + 1
                a, b = Elector(ctxs[0]), Elector(ctxs[1])
                first, second = a.try_acquire_or_renew(), b.try_acquire_or_renew()
                if instances - down >= quorum:
                    self.assertEqual((first.outcome, second.outcome), ("acquired", "follower"))
                    self.assertEqual(data.command("GET", "openclaw:cluster:leader"), "n1")
                    self.assertEqual(a.try_acquire_or_renew().outcome, "renewed")
                    # n1 leaves; n2 takes over at a higher epoch, written back to the majority
                    a.release()
                    third = b.try_acquire_or_renew()
                    self.assertEqual(third.outcome, "acquired")
                    self.assertGreater(third.epoch, first.epoch)
                    live = servers[down:]
                    at_new = [int(s.command("GET", "openclaw:cluster:epoch") or 0) for s in live]
                    self.assertGreaterEqual(sum(e == third.epoch for e in at_new), quorum)
                    self.assertEqual(int(data.command("GET", "openclaw:cluster:epoch")), third.epoch)
                else:
                    self.assertEqual((first.outcome, second.outcome), ("no_quorum", "no_quorum"))
                    self.assertIsNone(data.command("GET", "openclaw:cluster:leader"))
                    for s in servers[down:]:
                        self.assertIsNone(s.command("GET", "openclaw:cluster:leader"),
                                          "a failed attempt releases what it took")
                for ctx, elector in zip(ctxs, (a, b)):
                    elector.close()
                    ctx.close()
        finally:
            for s in servers + [data]:
                s.close()

    def test_quorum_table(self):
        for instances, down in ((3, 0), (3, 1), (3, 2), (5, 0), (5, 2), (5, 3)):
            with self.subTest(instances=instances, down=down):
                self.run_case(instances, down)


if __name__ == "__main__":
    unittest.main()
