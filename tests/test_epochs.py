"""Epochs never go back, even when Redis loses data.

Each node remembers the highest epoch it has seen (its memory file,
written atomically), and an election step never takes an epoch at or below
it; fenced writes compare against the epoch in Redis, so a node that
remembers a higher epoch never obeys a lower one. Real processes only:
redis-server (no persistence), the scripts as subprocesses (one-shot ticks,
and --loop for the restart test). Cases:

- the master restarts empty, twice, under three nodes in --loop;
- a replica that missed the last INCR is promoted while the old leader's
  lease is still alive on it;
- ``election.min_replicas_acked``: an acquisition the replica did not
  confirm is released, one it confirmed is already on the replica;
- the memory file: kept, corrupted, and what it is worth after a restart.
"""

import json
import os
import time
import unittest

from support.base import TempDirCase, slow  # first: puts scripts/ on sys.path
from support.fence import fenced_probe
from support.nodes import RETRYING, ClusterView, NodeEnv, merge
from support.redis_server import RedisReplyError, RedisServer, wait_until
from distnode.core import local_state

EPOCH = "openclaw:cluster:epoch"
LEADER = "openclaw:cluster:leader"
TERM = "openclaw:cluster:term"


def _plain(server) -> dict:
    return {"host": server.host, "port": server.port}


def _node(base_dir: str, node_id: str, server, **config) -> NodeEnv:
    """A node with ``server``'s address in its config file, so that the test can move it elsewhere."""
    return NodeEnv(base_dir, node_id, redis=_plain(server), config=merge(RETRYING, config), timeout_s=20)


def _acked_offset(master) -> int:
    """The replication offset the master's first replica has acknowledged."""
    fields = dict(part.split("=", 1) for part in master.info("replication")["slave0"].split(","))
    return int(fields["offset"])


class EpochTestCase(TempDirCase):
    tmp_prefix = "dn-epochs-"

    def server(self, **kw) -> RedisServer:
        server = RedisServer(**kw).start()
        self.addCleanup(server.close)
        return server

    def elect(self, node: NodeEnv) -> dict:
        return node.run_json("leader_election.py")

    def beat(self, *nodes) -> None:
        for node in nodes:
            node.run_json("heartbeat.py")


class RestartedEmptyTest(EpochTestCase):
    def test_master_restarted_empty_twice_under_running_nodes(self):
        redis = self.server(name="lonely")
        nodes = [_node(self.tmp, "n%d" % i, redis) for i in (1, 2, 3)]
        for node in nodes:
            node.spawn_all()
            self.addCleanup(node.stop_all)
        view = ClusterView(nodes)
        view.wait_steady(redis)
        for _ in range(2):
            seen = view.epochs_seen(redis)
            redis.kill()
            redis.restart(keep_data=False)  # no persistence, no sentinel: Redis comes back empty
            self.assertIsNone(redis.command("GET", EPOCH))
            _leader, epoch = view.wait_steady(redis)
            self.assertGreater(epoch, seen, "an empty Redis must not take the epochs back")
            elected = view.elected_epochs(redis)
            self.assertTrue(elected and min(elected) > seen, elected)


class ReplicaMissedTest(EpochTestCase):
    """A failover to a replica that missed the last INCR."""

    def setUp(self):
        super().setUp()
        self.master = self.server(name="master")
        self.replica = self.server(replicaof=self.master, name="replica")
        self.replica.wait_replica_synced()
        self.master.wait_for_replicas(1)
        self.master.command("SET", EPOCH, 5)  # an established cluster: no bootstrap round
        # A replica fresh from its first sync may not answer WAIT's GETACK for up to a second:
        # wait until it has acknowledged everything, as a replica that has been up for a while has.
        wait_until(lambda: _acked_offset(self.master) >= int(self.master.info("replication")["master_repl_offset"]),
                   5, message="the replica to acknowledge the stream")

    def nodes(self, *ids, election: dict = None):
        # a 10 s lease, so the old leader's lease is still alive on the replica after the failover
        return [_node(self.tmp, i, self.master, node={"heartbeat_ttl": 10}, election=election or {}) for i in ids]

    def fail_over_to_replica(self, nodes) -> None:
        """The master dies; the nodes are pointed at the replica, which is a master by now."""
        self.master.kill()
        self.replica.resume()
        self.replica.command("REPLICAOF", "NO", "ONE")
        for node in nodes:
            node.update_config({"redis": _plain(self.replica)})

    def test_remembered_epoch_wins_over_the_replica_and_fences_the_old_term(self):
        a, b = self.nodes("a", "b")
        self.beat(a, b)
        self.assertEqual(self.elect(a)["epoch"], 6)
        wait_until(lambda: self.replica.command("GET", EPOCH) == "6", 5, message="epoch 6 on the replica")
        # The replica is cut off from here (promoted early: a stopped process would still
        # find the master's later writes in its socket buffer when it wakes).
        self.replica.command("REPLICAOF", "NO", "ONE")
        self.master.command("DEL", LEADER)  # a's lease lapses on the master only
        obs = self.elect(b)
        self.assertEqual((obs["outcome"], obs["epoch"]), ("acquired", 7))
        self.fail_over_to_replica([a, b])
        self.assertEqual(self.replica.command("GET", EPOCH), "6")
        self.assertEqual(self.replica.command("GET", LEADER), "a")

        obs = self.elect(b)  # b remembers 7: the replica's 6 is in the past; a bootstrap round starts
        self.assertEqual((obs["outcome"], obs["leader"]), ("follower", "a"))
        self.assertEqual(obs["epoch"], 7)
        self.assertGreaterEqual(b.memory()["max_epoch"], obs["epoch"])
        fenced = fenced_probe("return 1")
        token = local_state.instance_token(a.run_dir, "a")
        with self.assertRaises(RedisReplyError) as caught:  # a write of a's old term is refused
            self.replica.command("EVAL", fenced, 3, LEADER, EPOCH, TERM, "a", 6, token)
        self.assertIn("FENCED", str(caught.exception))

        obs = self.elect(a)  # a keeps the lease, but leads at no epoch until the round is over
        self.assertEqual((obs["outcome"], obs["is_leader"]), ("waiting", False))
        self.assertEqual(self.replica.command("GET", LEADER), "a")
        self.replica.command("DEL", "openclaw:cluster:bootstrap")  # the round is over
        obs = self.elect(a)  # a new term, above everything seen
        self.assertEqual((obs["outcome"], obs["is_leader"]), ("acquired", True))
        self.assertGreater(obs["epoch"], 7)
        self.assertEqual(int(self.replica.command("GET", EPOCH)), obs["epoch"])
        self.assertEqual(self.replica.command("EVAL", fenced, 3, LEADER, EPOCH, TERM, "a", obs["epoch"], token), 1)

    def test_min_replicas_acked_releases_what_the_replica_did_not_confirm(self):
        a, b, c = self.nodes("a", "b", "c", election={"min_replicas_acked": 1, "replica_wait_ms": 300})
        self.beat(a, b, c)
        obs = self.elect(a)
        self.assertEqual((obs["outcome"], obs["epoch"]), ("acquired", 6))
        self.assertEqual(self.replica.command("GET", EPOCH), "6")  # confirmed means already there
        self.assertEqual(self.replica.command("GET", LEADER), "a")
        waits = self.master.command_calls("wait")
        self.assertEqual(self.elect(a)["outcome"], "renewed")
        self.assertEqual(self.master.command_calls("wait"), waits, "a renewal must not WAIT")

        self.replica.pause()
        self.master.command("DEL", LEADER)
        obs = self.elect(b)
        self.assertEqual(obs["outcome"], "unreplicated")
        self.assertFalse(obs["is_leader"])
        self.assertIsNone(self.master.command("GET", LEADER), "an unconfirmed lease is released")
        self.assertFalse(b.memory()["is_leader"])
        self.assertEqual(b.memory()["max_epoch"], 7)  # the unconfirmed epoch is still never reused by b

        self.replica.resume()
        obs = self.elect(c)
        self.assertEqual((obs["outcome"], obs["is_leader"]), ("acquired", True))
        self.assertGreater(obs["epoch"], 7)
        self.assertEqual(int(self.replica.command("GET", EPOCH)), obs["epoch"])

    def test_min_replicas_acked_without_any_replica_never_leads(self):
        self.replica.stop()
        (a,) = self.nodes("a", election={"min_replicas_acked": 1, "replica_wait_ms": 200})
        self.beat(a)
        for _ in range(2):
            obs = self.elect(a)
            self.assertIn(obs["outcome"], ("unreplicated", "ineligible", "unconfirmable"))
            self.assertIsNone(self.master.command("GET", LEADER))
        health = a.run("node_manager.py", "health")
        self.assertIn("min_replicas_acked is 1", health.stdout)


class UnconfirmedTermTest(EpochTestCase):
    """Issue 13 item 7: with ``min_replicas_acked`` and too few replicas (the master's only replica
    was promoted by a failover, or died), no term can be confirmed. The nodes must say why in
    ``status`` and ``health``, and not burn an epoch on every tick while nothing can change."""

    @slow("three rounds that each outlast a 3 s lease")
    def test_no_replica_left_is_reported_and_does_not_burn_epochs(self):
        master = self.server(name="master")
        master.command("SET", EPOCH, 5)  # an established cluster: no bootstrap round
        nodes = [_node(self.tmp, i, master, election={"min_replicas_acked": 1, "replica_wait_ms": 200})
                 for i in ("a", "b", "c")]
        self.beat(*nodes)
        lease_s = 3
        for _ in range(3):  # each round outlasts a lease: each node's handover pause has passed
            for node in nodes:
                self.beat(node)
                obs = self.elect(node)
                self.assertFalse(obs["is_leader"], obs)
            time.sleep(lease_s)
        burnt = int(master.command("GET", EPOCH)) - 5
        self.assertLessEqual(burnt, len(nodes), "every node tries once, then waits for a replica")
        status = nodes[0].run("node_manager.py", "status")
        self.assertIn("term not confirmed: 0 of 1 replicas acknowledged", status.stdout)
        status_json = nodes[0].run_json("node_manager.py", "status")
        self.assertIn("0 of 1 replicas acknowledged", status_json["election"]["unconfirmed"])
        health = nodes[0].run("node_manager.py", "health")
        self.assertEqual(health.returncode, 1)
        self.assertRegex(health.stdout, r"(?m)^election\s+fail\s+term not confirmed: 0 of 1 replicas acknowledged")
        health_json = json.loads(nodes[0].run("node_manager.py", "health", "--json", "--quiet").stdout)
        self.assertIn({"check": "election", "result": "fail"},
                      [{k: c[k] for k in ("check", "result")} for c in health_json["checks"]])
        # a replica comes back: the next tick elects, and the report clears
        replica = self.server(replicaof=master, name="replica")
        replica.wait_replica_synced()
        master.wait_for_replicas(1)
        wait_until(lambda: _acked_offset(master) >= int(master.info("replication")["master_repl_offset"]),
                   5, message="the replica to acknowledge the stream")
        # On a loaded machine the replica's ack may miss one 200 ms WAIT: that node then sits out a
        # lease, so the next one tries; one of the three must lead.
        for node in nodes:
            self.beat(*nodes)
            obs = self.elect(node)
            if obs["outcome"] != "unreplicated":
                break
        self.assertEqual((obs["outcome"], obs["is_leader"]), ("acquired", True))
        self.assertNotIn("unconfirmed", node.run_json("node_manager.py", "status").get("election") or {})


class MemoryFileTest(EpochTestCase):
    def test_memory_is_written_atomically_and_survives_corruption(self):
        redis = self.server(name="plain")
        redis.command("SET", EPOCH, 41)
        a = _node(self.tmp, "a", redis)
        self.beat(a)
        self.assertEqual(self.elect(a)["epoch"], 42)
        path = a.memory_path()
        with open(path) as fh:
            memory = json.load(fh)
        self.assertEqual((memory["max_epoch"], memory["is_leader"]), (42, True))
        leftovers = [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]
        self.assertEqual(leftovers, [])

        with open(path, "w") as fh:
            fh.write("{not json")
        obs = self.elect(a)
        self.assertTrue(obs["is_leader"])
        with open(path) as fh:
            self.assertEqual(json.load(fh)["max_epoch"], 42)

    def test_remembered_epoch_outlives_an_empty_restart(self):
        redis = self.server(name="plain")
        redis.command("SET", EPOCH, 9)
        a, c = _node(self.tmp, "a", redis), _node(self.tmp, "c", redis)
        self.beat(a)
        self.assertEqual(self.elect(a)["epoch"], 10)
        redis.kill()
        redis.restart(keep_data=False)
        self.beat(c)  # c never saw an epoch: alone, it could only start from 1
        first = self.elect(c)
        self.assertFalse(first["is_leader"])
        self.beat(a)  # a remembers 10
        obs = wait_until(lambda: (lambda o: o if o["is_leader"] else None)(self.elect(c)), 10, interval=0.2,
                         message="c to be elected after the bootstrap round")
        self.assertGreater(obs["epoch"], 10)
        self.assertEqual(self.elect(a)["leader"], "c")


if __name__ == "__main__":
    unittest.main()
