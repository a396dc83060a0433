"""The term (issue 13, items 2, 3 and 5): who may act as leader, and at which epoch.

Real processes against a real redis-server; a replica where a failover matters. Cases:

- ``election.min_replicas_acked``: a term WAIT has not confirmed yet acts nowhere: the
  elector died between elect.lua and WAIT, and the node's failover tick, state sync and task
  reclaim, in other processes, find the lease theirs but refuse to act on it;
- a second process with a taken node id (a copied config on another machine): once the
  owner's heartbeat lapsed it takes the record, but it never renews the owner's lease, never
  writes through it: it waits the lease out (``predecessor``) and leads at a new epoch, and a
  stopped owner that resumes exits 1; a live duplicate, stopped or deregistered, changes
  nothing; ``--foreground`` with a taken id exits 1 at once with one line;
- a Sentinel-style failover to a replica frozen at an older epoch, where the node that never
  saw the newest epoch steps first: no epoch is led by two nodes.
"""

import json
import os
import signal
import subprocess
import unittest

from support.base import RedisCase, TempDirCase  # first: puts scripts/ on sys.path
from support.fence import fenced_probe
from support import tasks
from support.nodes import NodeEnv
from support.redis_server import RedisServer, wait_until
from distnode.core import config
from distnode.core import keys
from distnode.core import local_state
from distnode.core import log as log_mod
from distnode.cluster import membership
from distnode.run.context import Context
from distnode.tasks import admin, reclaim, routes, submit, worker
from distnode.cluster.elector import Elector
from distnode.redis.errors import ResponseError
from distnode.redis.script import Script

# Nothing expires while a test runs, unless the test makes it.
STEADY = {"node": {"heartbeat_interval": 1, "heartbeat_ttl": 60}, "election": {"lease_ttl": 30}}
PROBE = Script("probe", fenced_probe("redis.call('SET', KEYS[4], ARGV[4])\nreturn 1"), 4)


def fenced_write(client, node_id: str, epoch, token: str) -> str:
    """A fenced write as ``node_id`` at ``epoch`` with instance ``token``: 'ok' or the refusal's first word."""
    try:
        PROBE(client, (keys.leader(), keys.epoch(), keys.term(), "openclaw:cluster:probe"),
              (node_id, str(epoch), token, "written"))
        return "ok"
    except ResponseError as exc:
        return str(exc).split()[0]


def in_process(node: NodeEnv, server, script: str = "leader_election") -> Context:
    """A Context for ``node``'s own config and run dir (so its instance token) in this process."""
    cfg = config.load(node.config_dir, node.log_dir)
    cfg.values["node"]["id"] = node.node_id  # the node's processes get these from their environment
    cfg.values["redis"].update(host=server.host, port=server.port)
    return Context(script, cfg, log_mod.for_config(script, cfg, console=None), {})


def record_of(server, node_id: str) -> dict:
    return json.loads(server.command("HGET", keys.nodes(), node_id))


def leaders_by_epoch(*nodes) -> dict:
    """{epoch: [node ids that logged 'became leader at epoch N']} from the nodes' election logs."""
    found = {}
    for node in nodes:
        for script in ("leader_election", "failover_manager"):
            for line in node.log_text(script).splitlines():
                if "became leader at epoch " in line:
                    epoch = int(line.rsplit("became leader at epoch ", 1)[1].split()[0])
                    found.setdefault(epoch, []).append(node.node_id)
    return found


class OneServer(RedisCase):
    tmp_prefix = "dn-term-"

    def setUp(self):
        super().setUp()
        self.server.command("SET", keys.epoch(), 5)  # an established cluster: no bootstrap round

    def node(self, node_id: str, machine: str = "m1", **config) -> NodeEnv:
        """A node on ``machine`` (its own dir, so its own instance token for a node id)."""
        return self.new_node(node_id, dict(STEADY, **config), sub=machine, timeout_s=40)


class UnconfirmedTerm(OneServer):
    def test_an_unconfirmed_term_cannot_sweep_reclaim_or_publish(self):
        a = self.node("a", election=dict(STEADY["election"], min_replicas_acked=1, replica_wait_ms=100))
        a.run_json("heartbeat.py")
        # a member whose heartbeat lapsed while it ran a task
        gone = tasks.local_context(os.path.join(self.tmp, "gone"), "gone", self.server,
                                   {"handlers": {"noop": ["true"]}, "reclaim_grace_s": 0})
        self.addCleanup(tasks.close_contexts, [gone])
        membership.beat(gone)
        task_id = submit.submit(gone, "noop", "{}")["id"]
        claimed, _, _ = worker.claim(gone, routes.worker_streams(gone), read_new=True)
        self.assertEqual(claimed.id, task_id)
        self.server.command("DEL", keys.heartbeat("gone"))

        # a's elector takes the lease, then dies before WAIT could confirm the term
        ctx = in_process(a, self.server)
        self.addCleanup(tasks.close_contexts, [ctx])
        elector = Elector(ctx)

        class Died(Exception):
            pass

        def die(_obs):
            raise Died()
        elector._confirm_replicated = die
        with self.assertRaises(Died):
            elector.try_acquire_or_renew()
        self.assertEqual(self.server.command("GET", keys.leader()), "a")
        epoch = int(self.server.command("GET", keys.epoch()))

        # the node's other processes find the lease theirs, at that epoch: they must not act on it
        sweep = a.run("failover_manager.py", "--json", "--quiet")
        self.assertNotEqual(sweep.returncode, 3, sweep.stderr)
        self.assertEqual(record_of(self.server, "gone")["status"], "online", "an unconfirmed term marked a member")
        self.assertEqual(admin.status(gone, task_id)["state"], "running", "an unconfirmed term reclaimed a task")
        reclaimer = in_process(a, self.server, "task_queue")
        self.addCleanup(tasks.close_contexts, [reclaimer])
        self.assertEqual(reclaim.reclaim(reclaimer, epoch), 0)
        self.assertEqual(admin.status(gone, task_id)["state"], "running")
        state = a.run("state_sync.py", "--json", "--quiet")
        self.assertNotEqual(state.returncode, 3, state.stderr)
        self.assertEqual(self.server.command("EXISTS", keys.state()), 0, "an unconfirmed term published state")
        token = local_state.instance_token(a.run_dir, "a")
        self.assertEqual(fenced_write(ctx.redis, "a", epoch, token), "FENCED")
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:probe"))


class DuplicateNodeId(OneServer):
    def owner_leads(self, **config):
        owner = self.node("a", "m1", **config)
        owner.run_json("heartbeat.py")
        obs = owner.run_json("leader_election.py")
        self.assertEqual(obs["outcome"], "acquired")
        return owner, self.node("a", "m2", **config), obs["epoch"]  # the duplicate: a copied config elsewhere

    def test_a_duplicate_never_renews_or_writes_through_the_owners_lease(self):
        """The owner's heartbeat lapsed (a pause, or it died) and the duplicate took the record: its election
        step waits the owner's lease out (``predecessor``, exit 0: its --loop goes on), renewing nothing."""
        owner, dup, epoch = self.owner_leads()
        self.server.command("PEXPIRE", keys.leader(), 20000)
        self.server.command("DEL", keys.heartbeat("a"))  # the owner's heartbeat lapsed (a pause)
        for beat in ("before", "after"):  # the duplicate's first heartbeat, which takes the record over
            if beat == "after":
                self.assertEqual(dup.run("heartbeat.py").returncode, 0)
            obs = dup.run_json("leader_election.py")
            self.assertEqual((obs["outcome"], obs["leader"], obs["epoch"], obs["is_leader"]),
                             ("predecessor", "a", epoch, False), beat)
        self.assertLessEqual(int(self.server.command("PTTL", keys.leader())), 20000, "the duplicate renewed")
        self.assertEqual(self.server.command("GET", keys.epoch()), str(epoch))
        sweep = dup.run("failover_manager.py", "--json", "--quiet")
        self.assertFalse(sweep.returncode == 0 and json.loads(sweep.stdout)["role"] == "leader", sweep.stdout)
        ctx = in_process(dup, self.server)
        self.addCleanup(tasks.close_contexts, [ctx])
        self.assertEqual(fenced_write(ctx.redis, "a", epoch, local_state.instance_token(dup.run_dir, "a")), "FENCED")
        self.assertFalse(Elector(ctx).release(), "the duplicate released the owner's lease")
        self.assertEqual(self.server.command("GET", keys.leader()), "a")
        # the owner's own term still writes (it holds the lease until it lapses)
        self.assertEqual(fenced_write(ctx.redis, "a", epoch, local_state.instance_token(owner.run_dir, "a")), "ok")

    def test_a_successor_stepping_before_its_first_heartbeat_is_no_duplicate(self):
        """The id's previous process died (its heartbeat and lease lapsed; its record stays): a successor's
        election or failover step that runs before its first heartbeat (three --loops start in any order)
        is ineligible, not refused as a duplicate (exit 1 would end its --loop for good); after its beat it
        leads. With the previous process's heartbeat live, the same step is refused (exit 1)."""
        owner, successor, epoch = self.owner_leads()
        dup = self.node("a", "m3")
        for script in ("leader_election.py", "failover_manager.py"):
            refused = dup.run(script, "--json", "--quiet")  # the owner's heartbeat is live: a duplicate
            self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
        owner.kill_all()
        self.server.command("DEL", keys.heartbeat("a"), keys.leader(), keys.term())  # both lapsed
        for script in ("leader_election.py", "failover_manager.py"):
            step = successor.run(script, "--json", "--quiet")
            self.assertEqual(step.returncode, 0, step.stdout + step.stderr)
        self.assertEqual(successor.run_json("leader_election.py")["outcome"], "ineligible")
        successor.run_json("heartbeat.py")
        obs = successor.run_json("leader_election.py")
        self.assertEqual((obs["outcome"], obs["epoch"]), ("acquired", epoch + 1))

    def test_a_successor_waits_out_a_killed_or_stopped_leaders_lease_then_leads(self):
        """The id's leading process (all three --loops) is SIGKILLed, or SIGSTOPped past heartbeat_ttl; a
        successor with the id (another machine: another instance token) starts its --loops while the old
        lease still lives. Its election loop waits (``predecessor``) instead of exiting 1, and leads at a
        new epoch once the lease lapsed; a stopped owner that resumes then finds the id taken: exit 1."""
        timing = {"node": {"heartbeat_interval": 1, "heartbeat_ttl": 2},
                  "election": {"lease_ttl": 6, "renew_interval": 1}, "logging": {"level": "DEBUG"}}
        for sig in (signal.SIGKILL, signal.SIGSTOP):
            with self.subTest(signal=sig.name):
                self.server.flushall()
                self.server.command("SET", keys.epoch(), 5)
                owner = self.node("a", "m1-" + sig.name, **timing)
                successor = self.node("a", "m2-" + sig.name, **timing)
                token = local_state.instance_token(successor.run_dir, "a")
                owner_loops = owner.spawn_all()
                wait_until(lambda: self.server.command("HGET", keys.term(), "epoch"), 20, message="the owner leads")
                epoch = int(self.server.command("HGET", keys.term(), "epoch"))
                owner.signal_all(sig)
                wait_until(lambda: self.server.command("EXISTS", keys.heartbeat("a")) == 0, 10,
                           message="the owner's heartbeat lapses")
                self.assertGreater(int(self.server.command("PTTL", keys.leader())), 1500, "too slow to test anything")
                loops = successor.spawn_all()
                wait_until(lambda: self.server.command("HGET", keys.term(), "instance") == token
                           or any(p.poll() is not None for p in loops), 30, message="the successor leads")
                self.assertEqual([p.poll() for p in loops], [None] * 3, successor.log_text(tail_chars=1500))
                self.assertIn("election: predecessor (leader a, epoch %d)" % epoch,
                              successor.log_text("leader_election"), "the successor never saw the old lease")
                self.assertGreater(int(self.server.command("HGET", keys.term(), "epoch")), epoch)
                if sig == signal.SIGSTOP:
                    owner.signal_all(signal.SIGCONT)
                    for proc in owner_loops:
                        self.assertEqual(proc.wait(20), 1, owner.log_text(tail_chars=1500))
                    self.assertEqual(self.server.command("HGET", keys.term(), "instance"), token)
                    self.assertEqual([p.poll() for p in loops], [None] * 3, successor.log_text(tail_chars=1500))
                successor.stop_all()
                owner.kill_all()

    def test_a_duplicate_finding_the_owners_record_gone_while_it_beats_is_refused(self):
        """The owner leads and beats but its record is gone (an operator's HDEL): the term names another
        instance while the id's heartbeat lives, so the duplicate's step is refused (exit 1), renewing nothing."""
        owner, dup, epoch = self.owner_leads()
        self.server.command("HDEL", keys.nodes(), "a")
        self.server.command("PEXPIRE", keys.leader(), 20000)
        elect = dup.run("leader_election.py", "--json", "--quiet")
        self.assertEqual(elect.returncode, 1, elect.stdout + elect.stderr)
        self.assertLessEqual(int(self.server.command("PTTL", keys.leader())), 20000, "the duplicate renewed")
        self.assertEqual(owner.run_json("leader_election.py")["outcome"], "renewed")

    def test_a_duplicate_that_deregisters_changes_nothing(self):
        owner, dup, epoch = self.owner_leads()
        gone = dup.run("node_manager.py", "deregister")
        self.assertEqual(gone.returncode, 1, gone.stdout + gone.stderr)
        self.assertEqual(len(gone.stderr.strip().splitlines()), 1, gone.stderr)
        self.assertEqual(record_of(self.server, "a")["status"], "online")
        self.assertEqual(self.server.command("EXISTS", keys.heartbeat("a")), 1)
        self.assertEqual(self.server.command("GET", keys.leader()), "a")
        self.assertEqual(owner.run_json("leader_election.py")["outcome"], "renewed")

    def test_a_refused_duplicate_heartbeat_changes_no_epoch_and_starts_no_round(self):
        """A duplicate that remembers a higher epoch (an older cluster's) is refused: it must not raise the
        epoch, start a bootstrap round or push the owner into a new term; nor wedge it with a huge epoch."""
        for remembered in (50, 10 ** 12, 10 ** 17):
            with self.subTest(remembered=remembered):
                self.server.flushall()
                self.server.command("SET", keys.epoch(), 5)
                owner, dup = self.node("a", "m1-%d" % remembered), self.node("a", "m2-%d" % remembered)
                owner.run_json("heartbeat.py")
                epoch = owner.run_json("leader_election.py")["epoch"]
                local_state.atomic_write_json(dup.memory_path(), {"max_epoch": remembered})
                beat = dup.run("heartbeat.py")
                self.assertEqual(beat.returncode, 1, beat.stdout + beat.stderr)
                self.assertEqual(self.server.command("GET", keys.epoch()), str(epoch))
                self.assertEqual(self.server.command("EXISTS", keys.bootstrap()), 0, "a refused beat started a round")
                obs = owner.run_json("leader_election.py")
                self.assertEqual((obs["outcome"], obs["epoch"]), ("renewed", epoch))

    def test_a_duplicate_that_deregisters_after_the_record_was_deleted_takes_nothing(self):
        """The owner's record is gone (an operator's HDEL, a prune) while it runs a task: a duplicate's
        deregister must not hand back the owner's task nor delete its heartbeat."""
        owner, dup, epoch = self.owner_leads(tasks={"handlers": {"noop": ["true"]}})
        ctx = in_process(owner, self.server, "task_queue")
        self.addCleanup(tasks.close_contexts, [ctx])
        task_id = submit.submit(ctx, "noop", "{}")["id"]
        claimed, _, _ = worker.claim(ctx, routes.worker_streams(ctx), read_new=True)
        self.assertEqual(claimed.id, task_id)
        self.server.command("HDEL", keys.nodes(), "a")
        gone = dup.run("node_manager.py", "deregister")
        self.assertNotIn("Traceback", gone.stderr)
        self.assertEqual(admin.status(ctx, task_id)["state"], "running", "the owner's running task was handed back")
        self.assertEqual(self.server.command("EXISTS", keys.heartbeat("a")), 1, "the owner's heartbeat was deleted")
        self.assertEqual(self.server.command("GET", keys.leader()), "a")
        self.assertEqual(owner.run_json("leader_election.py")["outcome"], "renewed")

    def test_foreground_with_a_taken_id_exits_1_and_its_stop_changes_nothing(self):
        owner, dup, epoch = self.owner_leads()
        proc = subprocess.Popen(dup.argv("node_manager.py", "run"), env=dup.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=15)  # well within the owner's 30 s lease
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # stopped: it must not take the real node down with it
            out, err = proc.communicate(timeout=60)
        self.assertEqual(record_of(self.server, "a")["status"], "online")
        self.assertEqual(self.server.command("EXISTS", keys.heartbeat("a")), 1)
        self.assertEqual(self.server.command("GET", keys.leader()), "a")
        self.assertEqual(proc.returncode, 1, "a --foreground with a taken node id must exit 1 by itself")
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn("'a'", err)


class HugeEpochs(OneServer):
    """Epochs past what a Lua number (a double) prints or counts exactly: a corrupt memory file, an
    operator's bad value in Redis. Neither may spread, half-write, or start a term per renewal."""

    def test_a_remembered_epoch_past_the_limit_is_ignored_and_spreads_nowhere(self):
        for planted in (local_state.EPOCH_LIMIT, 10 ** 14 + 12345, 10 ** 17, 2 ** 63):
            with self.subTest(planted=planted):
                self.server.flushall()
                self.server.command("SET", keys.epoch(), 5)
                a, b = self.node("a", "m%d" % planted), self.node("b", "n%d" % planted)
                local_state.atomic_write_json(a.memory_path(), {"max_epoch": planted})
                self.assertEqual(local_state.max_epoch_of(a.memory()), 0)
                for node in (a, b):
                    node.run_json("heartbeat.py")
                obs = a.run_json("leader_election.py")
                self.assertEqual((obs["outcome"], obs["epoch"]), ("acquired", 6))
                self.assertEqual(a.run_json("leader_election.py")["outcome"], "renewed")
                b.run_json("heartbeat.py")
                self.assertEqual(self.server.command("GET", keys.epoch()), "6")
                self.assertEqual(a.memory()["max_epoch"], 6, "the corrupt memory was not replaced")
                self.assertIn(b.memory().get("max_epoch"), (5, 6), "the corrupt epoch spread to b")
                self.assertIn("max_epoch", a.log_text())

    def test_renewals_near_the_limit_stay_in_one_term(self):
        near = local_state.EPOCH_LIMIT - 3
        self.server.command("SET", keys.epoch(), near)
        a = self.node("a")
        a.run_json("heartbeat.py")
        self.assertEqual(a.run_json("leader_election.py")["epoch"], near + 1)
        for _ in range(2):
            obs = a.run_json("leader_election.py")
            self.assertEqual((obs["outcome"], obs["epoch"]), ("renewed", near + 1))
        self.assertEqual(self.server.command("GET", keys.epoch()), str(near + 1))
        self.assertEqual(self.server.command("HGET", keys.term(), "epoch"), str(near + 1))

    def test_an_epoch_key_that_is_no_plain_integer_below_the_limit_is_refused_whole(self):
        a = self.node("a")
        for bad in (str(local_state.EPOCH_LIMIT), "123456789012346", "1e+17", "abc", "-3", "007", "", " 5"):
            with self.subTest(bad=bad):
                self.server.flushall()
                a.run_json("heartbeat.py")  # the heartbeat ignores a bad epoch key: membership goes on
                self.server.command("SET", keys.epoch(), bad)
                beat = a.run("heartbeat.py")
                self.assertEqual(beat.returncode, 0, beat.stderr)
                elect = a.run("leader_election.py")
                self.assertEqual(elect.returncode, 1, elect.stdout + elect.stderr)
                self.assertEqual(len(elect.stderr.strip().splitlines()), 1, elect.stderr)
                self.assertIn(keys.epoch(), elect.stderr)
                self.assertNotIn("Traceback", elect.stderr + a.log_text())
                self.assertEqual(self.server.command("GET", keys.epoch()), bad, "the epoch key was rewritten")
                for key in (keys.leader(), keys.term(), keys.bootstrap(), keys.server(), keys.events()):
                    self.assertEqual(self.server.command("EXISTS", key), 0, "%s written" % key)
                raw = a.memory().get("max_epoch", 0)
                self.assertTrue(isinstance(raw, int) and 0 <= raw < local_state.EPOCH_LIMIT, "remembered %r" % raw)


class LaggingReplica(TempDirCase):
    """A failover to a replica frozen at an older epoch; the node that never saw the newest one steps first."""

    tmp_prefix = "dn-term-"

    def setUp(self):
        super().setUp()
        self.master = RedisServer(name="master").start()
        self.addCleanup(self.master.close)
        self.replica = RedisServer(replicaof=self.master, name="replica").start()
        self.addCleanup(self.replica.close)
        self.replica.wait_replica_synced()
        self.master.command("SET", keys.epoch(), 5)

    def node(self, node_id: str) -> NodeEnv:
        return self.new_node(node_id, STEADY, timeout_s=40, redis={"host": self.master.host, "port": self.master.port})

    def fail_over(self, nodes) -> None:
        self.master.kill()
        for node in nodes:
            node.update_config({"redis": {"host": self.replica.host, "port": self.replica.port}})

    def run_until_one_leads(self, first, second) -> int:
        """Both nodes tick, ``first`` first each round, until one leads; its epoch."""
        def step():
            for node in (first, second):
                node.run_json("heartbeat.py")
                obs = node.run_json("leader_election.py")
                if obs["is_leader"]:
                    return obs["epoch"]
            return None
        return wait_until(step, 30, interval=0.2, message="a leader on the promoted replica")

    def lagging_failover(self, lease_lapsed: bool):
        a, b = self.node("a"), self.node("b")
        for node in (a, b):
            node.run_json("heartbeat.py")
        self.assertEqual(a.run_json("leader_election.py")["epoch"], 6)
        self.assertEqual(b.run_json("leader_election.py")["outcome"], "follower")
        wait_until(lambda: self.replica.command("GET", keys.epoch()) == "6", 10, message="epoch 6 on the replica")
        self.replica.command("REPLICAOF", "NO", "ONE")  # frozen here: it never sees what follows
        self.master.command("DEL", keys.leader())  # a's lease lapses on the master; a leads again at 7
        obs = a.run_json("leader_election.py")
        self.assertEqual((obs["outcome"], obs["epoch"]), ("acquired", 7))
        self.fail_over([a, b])
        if lease_lapsed:
            self.replica.command("DEL", keys.leader())
        epoch = self.run_until_one_leads(b, a)  # b, which never saw epoch 7, steps first
        self.assertGreater(epoch, 7)
        led = leaders_by_epoch(a, b)
        self.assertEqual({e: n for e, n in led.items() if len(n) > 1}, {}, "epochs led twice: %s" % led)

    def test_vacant_lease_the_node_that_never_saw_the_newest_epoch_steps_first(self):
        self.lagging_failover(lease_lapsed=True)

    def test_live_lease_of_an_older_term_the_node_that_never_saw_the_newest_epoch_steps_first(self):
        self.lagging_failover(lease_lapsed=False)


if __name__ == "__main__":
    unittest.main()
