"""Several nodes as real processes on one real Redis: election, failover, pauses, restarts, Redlock.

Intervals are scaled down (heartbeat 1 s, ttl and lease 3 s) so that the
bound docs/en/how-it-works.md promises, "a crash fails over in under lease_ttl + one
interval", is 4 s here.
"""

import json
import os
import signal
import sys
import tempfile
import time
import unittest

from support.base import RedisCase  # first: puts scripts/ on sys.path
from support.fence import fenced_probe
from support.nodes import ClusterView, wait_for
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
        # pause a leader that knows it leads: Redis names the leader as soon as its elect script ran,
        # before that node's process has read the reply and recorded it; paused in between, the node
        # never believed it led (its late view is dropped as stale), so it has nothing to step down from
        first, stale_epoch = ClusterView(self.nodes.values()).wait_steady(self.server)
        self.nodes[first].signal_all(signal.SIGSTOP)  # a long GC pause, a frozen VM
        second = self.wait_leader(not_in=(first, None), timeout_s=10)
        new_epoch = self.epoch()
        self.assertGreater(new_epoch, stale_epoch)
        self.nodes[first].signal_all(signal.SIGCONT)
        # the woken leader's in-flight writes carry its old epoch: every fenced script refuses them
        token = local_state.instance_token(self.nodes[first].run_dir, first)
        # a dir of its own: make_ctx writes its instance token "x", which in the node's run dir would make
        # the woken node's own processes collide with each other
        ctx = make_ctx(os.path.join(self.tmp, "probe"), first, self.server)
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


def unique_keys(pairs) -> dict:
    keys_seen = [key for key, _ in pairs]
    assert len(keys_seen) == len(set(keys_seen)), "a key given twice: %s" % keys_seen
    return dict(pairs)


class Membership(RedisCase):
    """node_manager.py register, deregister, status, health and prune against what another program, or a
    cron tick of the node itself, left in the way."""

    def record(self, node_id: str = "m1") -> dict:
        return json.loads(self.server.command("HGET", "openclaw:cluster:nodes", node_id), object_pairs_hook=unique_keys)

    def test_deregister_waits_for_the_cron_worker_tick_to_finish_its_task(self):
        node = self.new_node("m1", {"tasks": {"handlers": {"nap": ["sleep", "4"]}}})
        node.run_json("node_manager.py", "register")
        task = node.run_json("task_queue.py", "submit", "--type", "nap", "--node", "m1")["id"]
        node.spawn("task_queue.py", "work", "--quiet")  # one cron tick: it holds the worker's lock till the task ends
        wait_for(lambda: node.run_json("task_queue.py", "status", task)["state"] == "running", 15,
                 message="the cron tick to run the task")
        gone = node.run("node_manager.py", "deregister", "--json", "--quiet", timeout=120)
        self.assertEqual(gone.returncode, 0, gone.stderr)
        self.assertEqual(node.run_json("task_queue.py", "status", task)["state"], "done", "it was finished first")
        self.assertEqual(self.record()["status"], "left")

    def test_a_cron_tick_past_its_bound_is_named_with_a_way_out(self):
        # a task submitted with a longer --timeout than tasks.default_timeout_s keeps the tick past its bound
        node = self.new_node("m1", {"tasks": {"handlers": {"long": ["sleep", "30"]}, "default_timeout_s": 1,
                                              "tick_budget_s": 1}, "node": {"retry_count": 0}})
        node.run_json("node_manager.py", "register")
        task = node.run_json("task_queue.py", "submit", "--type", "long", "--node", "m1", "--timeout", "60")["id"]
        tick = node.spawn("task_queue.py", "work", "--quiet")
        wait_for(lambda: node.run_json("task_queue.py", "status", task)["state"] == "running", 15,
                 message="the cron tick to run the task")
        refused = node.run("node_manager.py", "deregister", "--quiet", timeout=120)
        self.assertEqual(refused.returncode, 1, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, refused.stderr)
        for fragment in ("task_queue.py work cron tick (process %d) still runs a task" % tick.pid,
                         "nothing was changed; run this command again once the task ends",
                         "kill -TERM %d" % tick.pid):
            self.assertIn(fragment, lines[0])
        self.assertNotIn("--uninstall", lines[0], "the way out must not be the command that led here")
        self.assertNotEqual(self.record()["status"], "left")
        self.assertIsNone(tick.poll(), "the tick was left alone")

    def test_a_repeated_deregister_keeps_one_left_at(self):
        node = self.new_node("m1")
        node.run_json("node_manager.py", "register")
        for _ in range(3):
            node.run_json("node_manager.py", "deregister")
        record = self.record()
        self.assertEqual((record["status"], record["id"]), ("left", "m1"))
        self.assertIsInstance(record["left_at"], float)
        self.server.command("HSET", "openclaw:cluster:nodes", "m1", "[1, 2]")  # not an object: made one again
        node.run_json("node_manager.py", "deregister")
        self.assertEqual(sorted(self.record()), ["id", "left_at", "status"])

    def test_foreign_values_are_shown_safely_and_named_in_one_line_each(self):
        node = self.new_node("m1", {"node": {"heartbeat_ttl": 60, "heartbeat_interval": 20}})
        node.run_json("node_manager.py", "register")
        self.server.command("SET", "openclaw:cluster:leader", b"\xff\xfe")
        self.server.command("SET", "openclaw:cluster:epoch", "abc")
        self.server.command("HSET", "openclaw:cluster:nodes", "junk", "not json {", "arr", "[1]",
                            b"bell\x07", "null", "live", "[2]")
        self.server.command("SET", "hb:live", "1", "EX", 60)
        status = node.run("node_manager.py", "status", "--quiet")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("leader: ?  epoch: ?  members: 4 invalid, 1 online", status.stdout)
        self.assertIn('openclaw:cluster:leader holds "\\xff\\xfe", not a node id', status.stdout)
        self.assertIn('openclaw:cluster:epoch holds "abc", not an epoch', status.stdout)
        self.assertIn("4 member records in openclaw:cluster:nodes are not JSON objects", status.stdout)
        self.assertIn("`node_manager.py prune --invalid` forgets them", status.stdout)
        self.assertIn("bell\\x07", status.stdout)
        self.assertNotIn("\x07", status.stdout, "a control character reached the terminal")
        snap = json.loads(node.run("node_manager.py", "status", "--json", "--quiet").stdout)
        self.assertEqual((snap["leader"], snap["epoch"], sorted(snap["foreign"])), (None, 0, ["epoch", "leader",
                                                                                              "records"]))
        health = node.run("node_manager.py", "health", "--quiet")
        self.assertEqual(health.returncode, 1, health.stderr)
        self.assertEqual(health.stderr, "")
        self.assertRegex(health.stdout, r'(?m)^leader\s+fail\s+openclaw:cluster:leader holds "\\xff\\xfe"')
        self.assertEqual(node.run_json("node_manager.py", "prune", "--older-than", "0")["pruned"], [])
        pruned = node.run_json("node_manager.py", "prune", "--invalid")["pruned"]
        self.assertEqual(sorted(pruned), ["arr", "bell\x07", "junk"], "not live: its hb key exists")
        self.assertEqual(sorted(self.server.command("HKEYS", "openclaw:cluster:nodes")), ["live", "m1"])


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
