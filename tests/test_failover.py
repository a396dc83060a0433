"""The leader's failover sweep (cluster/failover.py), in-process against a real redis-server.

Guarantees tried here: a member whose heartbeat lapsed is marked offline once, with an event; the
sweep pages through any number of members; only the holder of the lease in a confirmed term sweeps;
a sweep whose term ended (the lease lapsed, another node or another epoch took it) marks nothing, even
between two pages.

Run: python3 tests/run_all.py test_failover
"""

import json
import os
from unittest import mock

from support.base import RedisCase
from support import tasks

from distnode.cluster import failover
from distnode.cluster import membership
from distnode.cluster.elector import Elector
from distnode.core import defaults, keys

ME, OTHER = "n1", "n2"


def member(node_id: str, status: str = "online") -> str:
    return json.dumps({"id": node_id, "status": status, "instance": "i-" + node_id, "interval": 1, "ttl": 3})


class FailoverCase(RedisCase):
    def setUp(self):
        super().setUp()
        self.server.command("SET", keys.epoch(), 5)  # an established cluster: no bootstrap round
        self.ctx = tasks.local_context(os.path.join(self.tmp, ME), ME, self.server, {})
        self.ctx.cfg.values["node"]["heartbeat_ttl"] = 60  # nothing of ours lapses while a test runs
        self.addCleanup(tasks.close_contexts, [self.ctx])
        membership.beat(self.ctx)

    def lead(self) -> int:
        obs = Elector(self.ctx).try_acquire_or_renew()
        self.assertEqual(obs.outcome, "acquired")
        return obs.epoch

    def add_members(self, alive=(), dead=()) -> None:
        for node_id in list(alive) + list(dead):
            self.server.command("HSET", keys.nodes(), node_id, member(node_id))
        for node_id in alive:
            self.server.command("SET", keys.heartbeat(node_id), "1", "PX", 60000)

    def status(self, node_id: str) -> str:
        return json.loads(self.server.command("HGET", keys.nodes(), node_id))["status"]

    def offline_events(self) -> list:
        events = self.server.command("XRANGE", keys.events(), "-", "+")
        return [dict(zip(e[1][::2], e[1][1::2]))["node"] for e in events if e[1][1] == "node_offline"]


class Sweep(FailoverCase):
    def test_dead_members_are_marked_offline_once_with_an_event(self):
        epoch = self.lead()
        self.add_members(alive=["alive-1"], dead=["dead-1", "dead-2"])
        outcome, got_epoch, marked, trips = failover.sweep(self.ctx)
        self.assertEqual((outcome, got_epoch, sorted(marked), trips), ("leader", str(epoch), ["dead-1", "dead-2"], 1))
        self.assertEqual([self.status(n) for n in ("alive-1", "dead-1", "dead-2", ME)],
                         ["online", "offline", "offline", "online"])
        self.assertEqual(sorted(self.offline_events()), ["dead-1", "dead-2"])
        self.assertEqual(failover.sweep(self.ctx)[2], [], "a member already offline is marked once")
        self.assertEqual(len(self.offline_events()), 2)

    def test_the_tick_reports_marks_and_fires_the_hook_per_offline_member(self):
        epoch = self.lead()
        self.add_members(dead=["dead-1"])
        fired = []
        with mock.patch.object(failover.hooks, "fire", lambda ctx, name, leader, ep, **env: fired.append(
                (name, leader, ep, env))), mock.patch.object(failover, "reclaim_tasks", lambda ctx, ep: 0):
            result = failover.step(self.ctx)
        self.assertEqual((result["role"], result["epoch"], result["offline_marked"]), ("leader", epoch, ["dead-1"]))
        self.assertEqual(fired, [("on_node_offline", ME, epoch, {"OFFLINE_NODE_ID": "dead-1"})])

    def test_the_sweep_pages_through_every_member(self):
        # more members than a small hash keeps compact (128), so HSCAN really pages by COUNT
        dead = ["dead-%03d" % i for i in range(300)]
        self.lead()
        self.add_members(alive=["alive-1"], dead=dead)
        with mock.patch.object(defaults, "FAILOVER_PAGE_MEMBERS", 40):
            outcome, _, marked, trips = failover.sweep(self.ctx)
        self.assertEqual(outcome, "leader")
        self.assertEqual(sorted(marked), dead)
        self.assertGreater(trips, 3, "one round trip per page")
        self.assertEqual(self.status("alive-1"), "online")


class OnlyTheLeader(FailoverCase):
    def test_a_follower_marks_nothing(self):
        self.server.command("SET", keys.leader(), OTHER, "PX", 60000)
        self.add_members(dead=["dead-1"])
        self.assertEqual(failover.sweep(self.ctx), ("follower", OTHER, [], 1))
        self.assertEqual(self.status("dead-1"), "online")

    def test_a_vacant_lease_is_taken_at_once_and_then_swept(self):
        self.add_members(dead=["dead-1"])
        with mock.patch.object(failover, "reclaim_tasks", lambda ctx, ep: 0):
            result = failover.step(self.ctx)
        self.assertEqual((result["election"], result["role"], result["offline_marked"]),
                         ("acquired", "leader", ["dead-1"]))

    def test_an_unconfirmed_term_marks_nothing(self):
        epoch = self.lead()
        self.server.command("HSET", keys.term(), "confirmed", "0")
        self.add_members(dead=["dead-1"])
        self.assertEqual(failover.sweep(self.ctx), ("unconfirmed", str(epoch), [], 1))
        self.assertEqual(self.status("dead-1"), "online")


class FencedSweep(FailoverCase):
    def test_a_sweep_after_the_lease_was_lost_marks_nothing(self):
        epoch = self.lead()
        self.add_members(dead=["dead-1"])
        self.server.command("DEL", keys.leader(), keys.term())  # paused past the lease ...
        self.server.command("SET", keys.leader(), OTHER, "PX", 60000)  # ... and another node took it
        self.assertEqual(failover.sweep(self.ctx, str(epoch))[0], "follower")
        # the lease under this node id again, but in a newer term (another epoch): the old one is fenced
        Elector(self.ctx).release()
        self.server.command("DEL", keys.leader(), keys.released(ME))
        newer = self.lead()
        self.assertGreater(newer, epoch)
        self.assertEqual(failover.sweep(self.ctx, str(epoch)), ("fenced", str(newer), [], 1))
        self.assertEqual(self.status("dead-1"), "online")

    def test_a_term_that_ends_between_pages_marks_no_more_pages(self):
        dead = ["dead-%03d" % i for i in range(300)]
        self.lead()
        self.add_members(dead=dead)
        real, pages = failover.lua.run, []

        def lapse_after_first_page(client, name, keys_, args):
            page = real(client, name, keys_, args)
            pages.append(page.outcome)
            if len(pages) == 1:
                self.server.command("DEL", keys.leader(), keys.term())  # the lease lapsed mid-sweep
            return page
        with mock.patch.object(defaults, "FAILOVER_PAGE_MEMBERS", 40), mock.patch.object(failover.lua, "run",
                                                                             lapse_after_first_page):
            outcome, _, marked, trips = failover.sweep(self.ctx)
        self.assertEqual((outcome, trips), ("vacant", 2))
        self.assertEqual(sum(self.status(n) == "offline" for n in dead), len(marked))
        self.assertLess(len(marked), len(dead))


if __name__ == "__main__":
    import unittest
    unittest.main()
