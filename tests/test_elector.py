"""The elector, table-driven: each row a starting state, one step, the expected state and round trips."""

import json
import os
import sys
import tempfile
import unittest

from support.base import RedisCase  # first: puts scripts/ on sys.path
from support.nodes import NodeEnv, processes_using, wait_for, wait_processes_gone
from support.redis_server import RedisServer

from distnode.core import config
from distnode.core import local_state
from distnode.core import log as log_mod
from distnode.run.context import Context
from distnode.cluster.elector import Elector
from distnode.core.errors import NodeIdCollision
from distnode.redis.errors import RedisError, WrongTypeError

ME, OTHER = "n1", "n2"
LEASE_MS = 3000


def make_ctx(base_dir: str, node_id: str, server, extra_config: dict = None) -> Context:
    env = NodeEnv(base_dir, node_id, server, config=extra_config)
    cfg = config.load(env.config_dir, env.log_dir)
    cfg.values["node"]["id"] = node_id
    cfg.values["redis"].update(host=server.host, port=server.port)
    # the synthetic records below name instance "x": make it this process's own token
    local_state.atomic_write(os.path.join(cfg.run_dir, node_id + ".instance"), b"x")
    logger = log_mod.Logger("test", node_id, env.log_dir, console=None, use_syslog=False)
    return Context("test", cfg, logger, {})


def remember(elector: Elector, state: dict) -> None:
    """Set what the node remembers (its memory file, shared by its processes)."""
    local_state.atomic_write_json(elector.state_path, state)


def hold(server, node_id: str, epoch: int, instance: str = None, confirmed: str = "1") -> None:
    """Write the term of a lease ``node_id`` holds (instance "x" is this test's own process for n1)."""
    server.command("DEL", "openclaw:cluster:term")
    server.command("HSET", "openclaw:cluster:term", "node", node_id, "instance",
                   instance or ("x" if node_id == ME else "other-" + node_id), "epoch", epoch, "confirmed", confirmed)


def record(status="online") -> str:
    return json.dumps({"id": ME, "status": status, "instance": "x", "interval": 1, "ttl": 3})


# Each row: name, starting state, (outcome, leader after, epoch after), remembered epoch.
# State keys: holder (lease owner), epoch (in Redis), alive (hb:n1 exists), rec (n1's record or None).
ROWS = [
    ("vacant, registered and alive: acquire at epoch+1",
     dict(holder=None, epoch=4, alive=True, rec=record()), ("acquired", ME, 5), 0),
    ("held by me and alive: renew, same epoch",
     dict(holder=ME, epoch=4, alive=True, rec=record()), ("renewed", ME, 4), 4),
    ("held by another: follow",
     dict(holder=OTHER, epoch=4, alive=True, rec=record()), ("follower", OTHER, 4), 0),
    ("held by me but my heartbeat expired: step down",
     dict(holder=ME, epoch=4, alive=False, rec=record()), ("stepped_down", None, 4), 4),
    ("vacant, not registered: never take the lease",
     dict(holder=None, epoch=4, alive=True, rec=None), ("ineligible", None, 4), 0),
    ("vacant, deregistered (left): never take the lease",
     dict(holder=None, epoch=4, alive=True, rec=record("left")), ("ineligible", None, 4), 0),
    ("vacant, registered but heartbeat expired: no",
     dict(holder=None, epoch=4, alive=False, rec=record()), ("ineligible", None, 4), 0),
    ("vacant and Redis has no epoch (new, or lost its data): wait one round, floor at what I remember",
     dict(holder=None, epoch=None, alive=True, rec=record()), ("waiting", None, 9), 9),
    ("vacant, but I just released the lease: let another node take it",
     dict(holder=None, epoch=4, alive=True, rec=record(), released=True), ("ineligible", None, 4), 4),
    ("held by another at an epoch below what I remember: raised to it, a bootstrap round starts",
     dict(holder=OTHER, epoch=3, alive=True, rec=record()), ("follower", OTHER, 7), 7),
    ("held by me at an epoch below what I remember: I keep the lease, fenced, until the round is over",
     dict(holder=ME, epoch=3, alive=True, rec=record()), ("waiting", ME, 7), 7),
]


class ElectorTable(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = RedisServer().start()
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.server.close()
        cls.tmp.cleanup()

    def setUp(self):
        self.server.flushall()

    def arrange(self, state: dict) -> None:
        s = self.server
        if state["holder"]:
            s.command("SET", "openclaw:cluster:leader", state["holder"], "PX", LEASE_MS)
            hold(s, state["holder"], state["epoch"] or 0)
        if state["epoch"] is not None:
            s.command("SET", "openclaw:cluster:epoch", state["epoch"])
        if state["alive"]:
            s.command("SET", "hb:" + ME, "1", "PX", LEASE_MS)
        if state["rec"]:
            s.command("HSET", "openclaw:cluster:nodes", ME, state["rec"])
        if state.get("released"):
            s.command("SET", "openclaw:cluster:released:" + ME, "1", "PX", LEASE_MS)

    def test_rows(self):
        for name, state, (outcome, leader, epoch), remembered in ROWS:
            with self.subTest(name):
                self.server.flushall()
                self.arrange(state)
                ctx = make_ctx(self.tmp.name, ME, self.server)
                elector = Elector(ctx)
                remember(elector, {"max_epoch": remembered, "is_leader": state["holder"] == ME,
                                   "epoch": state["epoch"] or 0, "leader": state["holder"] or ""})
                obs = elector.try_acquire_or_renew()
                self.assertEqual((obs.outcome, obs.epoch), (outcome, epoch))
                self.assertEqual(self.server.command("GET", "openclaw:cluster:leader"), leader)
                self.assertEqual(int(self.server.command("GET", "openclaw:cluster:epoch") or 0), epoch)
                self.assertEqual(ctx.redis.round_trips, 1, "one election step is one round trip")
                self.assertGreaterEqual(elector.state["max_epoch"], epoch, "the node remembers what it saw")
                ctx.close()

    def test_record_of_another_instance_is_a_collision_that_changes_nothing(self):
        """Another live process claims my node id (its heartbeat owns the record): never renew or take the lease."""
        for holder in (ME, None):
            with self.subTest(holder=holder):
                self.server.flushall()
                self.arrange(dict(holder=holder, epoch=4, alive=True, rec=record().replace('"x"', '"elsewhere"')))
                if holder:
                    self.server.command("PEXPIRE", "openclaw:cluster:leader", 1000)
                ctx = make_ctx(self.tmp.name, ME, self.server)
                elector = Elector(ctx)
                remember(elector, {"max_epoch": 4, "is_leader": bool(holder), "epoch": 4, "leader": holder or ""})
                with self.assertRaises(NodeIdCollision) as cm:
                    elector.try_acquire_or_renew()
                self.assertIn("node id 'n1' is claimed by another live process", str(cm.exception))
                self.assertEqual(self.server.command("GET", "openclaw:cluster:leader"), holder)
                self.assertLessEqual(self.server.command("PTTL", "openclaw:cluster:leader"), 1000, "not renewed")
                self.assertEqual(self.server.command("GET", "openclaw:cluster:epoch"), "4")
                self.assertEqual(self.server.command("EXISTS", "openclaw:cluster:events"), 0)
                self.assertFalse(elector.state["is_leader"], "its memory no longer says it leads")
                ctx.close()

    def test_after_the_bootstrap_wait_the_epoch_is_above_every_remembered_one(self):
        ctx = make_ctx(self.tmp.name, ME, self.server)
        self.arrange(dict(holder=None, epoch=None, alive=True, rec=record()))
        elector = Elector(ctx)
        remember(elector, {"max_epoch": 3})
        self.assertEqual(elector.try_acquire_or_renew().outcome, "waiting")
        # meanwhile another live node's heartbeat reports that it remembers epoch 9
        other = make_ctx(self.tmp.name, OTHER, self.server)
        remember(Elector(other), {"max_epoch": 9})
        from distnode.cluster import membership
        membership.beat(other)
        self.assertEqual(self.server.command("GET", "openclaw:cluster:epoch"), "9")
        self.assertEqual(elector.try_acquire_or_renew().outcome, "waiting", "still within the wait")
        self.server.command("DEL", "openclaw:cluster:bootstrap")  # the wait is over
        obs = elector.try_acquire_or_renew()
        self.assertEqual((obs.outcome, obs.epoch), ("acquired", 10))
        ctx.close()
        other.close()

    def test_epochs_only_grow_over_many_terms(self):
        ctx = make_ctx(self.tmp.name, ME, self.server)
        self.arrange(dict(holder=None, epoch=0, alive=True, rec=record()))
        remember(Elector(ctx), {})  # an earlier test's memory would be above this Redis's epoch: a round
        seen = []
        for _ in range(5):
            obs = Elector(ctx).try_acquire_or_renew()
            seen.append(obs.epoch)
            self.server.command("DEL", "openclaw:cluster:leader")  # the lease expires
        self.assertEqual(seen, sorted(set(seen)), "every acquisition gets a new, higher epoch")
        ctx.close()

    def test_release_deletes_only_my_own_lease(self):
        ctx = make_ctx(self.tmp.name, ME, self.server)
        self.arrange(dict(holder=None, epoch=1, alive=True, rec=record()))
        elector = Elector(ctx)
        remember(elector, {})
        self.assertEqual(elector.try_acquire_or_renew().outcome, "acquired")
        self.assertTrue(elector.release())
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:leader"))
        events = self.server.command("XRANGE", "openclaw:cluster:events", "-", "+")
        self.assertEqual([e[1][1] for e in events], ["leader_elected", "leader_released"])
        # another node's lease is never touched, whatever this node remembers
        self.server.command("SET", "openclaw:cluster:leader", OTHER, "PX", LEASE_MS)
        confused = Elector(ctx)
        remember(confused, {"is_leader": True, "epoch": 2, "leader": ME, "max_epoch": 2})
        self.assertFalse(confused.release())
        self.assertEqual(self.server.command("GET", "openclaw:cluster:leader"), OTHER)
        # a lease this node took a moment ago, before its memory file says so, is released
        self.server.command("SET", "openclaw:cluster:leader", ME, "PX", LEASE_MS)
        hold(self.server, ME, 2)
        remember(confused, {"is_leader": False, "epoch": 0, "leader": "", "max_epoch": 2})
        self.assertTrue(confused.release())
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:leader"))
        # releasing one term by its epoch (an unconfirmed new term) leaves a newer term alone
        self.server.command("SET", "openclaw:cluster:leader", ME, "PX", LEASE_MS)
        self.server.command("SET", "openclaw:cluster:epoch", 99)
        hold(self.server, ME, 99)
        self.assertFalse(confused.data.release(2))
        self.assertEqual(self.server.command("GET", "openclaw:cluster:leader"), ME)
        ctx.close()

    def test_wrong_typed_key_is_named(self):
        ctx = make_ctx(self.tmp.name, ME, self.server)
        self.server.command("HSET", "openclaw:cluster:leader", "x", "y")
        with self.assertRaises(WrongTypeError) as cm:
            Elector(ctx).try_acquire_or_renew()
        self.assertIn("openclaw:cluster:leader", str(cm.exception))
        ctx.close()


class Hooks(unittest.TestCase):
    """The hooks an election step fires (how a hook runs, its deadline and environment: test_hooks.py)."""

    def test_hooks_run_with_node_leader_and_epoch_in_their_environment(self):
        with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "hooks.jsonl")
            dump = [sys.executable, "-c",
                    "import json, os; open(%r, 'a').write(json.dumps({k: os.environ.get(k) for k in "
                    "('HOOK', 'NODE_ID', 'LEADER_ID', 'EPOCH')}) + '\\n')" % out]
            hook_cfg = {"hooks": {"on_become_leader": dump, "on_lose_leadership": dump, "on_leader_change": dump}}
            ctx = make_ctx(tmp, ME, server, hook_cfg)
            server.command("SET", "hb:" + ME, "1", "PX", LEASE_MS)
            server.command("HSET", "openclaw:cluster:nodes", ME, record())
            server.command("SET", "openclaw:cluster:epoch", 0)
            Elector(ctx).try_acquire_or_renew()

            def lines():
                try:
                    with open(out) as fh:
                        return [json.loads(line) for line in fh]
                except OSError:
                    return []
            wait_for(lambda: len(lines()) >= 2, 10, message="two hooks to run")
            got = sorted(lines(), key=lambda d: d["HOOK"])
            self.assertEqual(got, [
                {"HOOK": "on_become_leader", "NODE_ID": ME, "LEADER_ID": ME, "EPOCH": "1"},
                {"HOOK": "on_leader_change", "NODE_ID": ME, "LEADER_ID": ME, "EPOCH": "1"}])
            # losing the lease (heartbeat gone) fires on_lose_leadership
            server.command("DEL", "hb:" + ME)
            Elector(ctx).try_acquire_or_renew()
            wait_for(lambda: any(d["HOOK"] == "on_lose_leadership" for d in lines()), 10,
                     message="on_lose_leadership")
            wait_processes_gone(tmp)  # the hooks' supervisors still append to logs/hooks.log
            ctx.close()

    def test_a_failing_or_hanging_hook_never_blocks_the_tick(self):
        with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
            hang = [sys.executable, "-c", "import time; time.sleep(60)"]
            ctx = make_ctx(tmp, ME, server, {"hooks": {"on_become_leader": hang, "timeout_s": 3,
                                                       "on_leader_change": ["/nonexistent/hook"]}})
            server.command("SET", "hb:" + ME, "1", "PX", LEASE_MS)
            server.command("HSET", "openclaw:cluster:nodes", ME, record())
            server.command("SET", "openclaw:cluster:epoch", 0)
            self.assertEqual(Elector(ctx).try_acquire_or_renew().outcome, "acquired")
            # no timing: the tick is back while its hook still runs (the supervisor kills it at 3 s)
            self.assertTrue(processes_using(ctx.cfg.log_dir), "the tick does not wait for its hooks")
            hooks_log = os.path.join(ctx.cfg.log_dir, "hooks.log")

            def logged():
                try:
                    with open(hooks_log) as fh:
                        return fh.read()
                except OSError:
                    return ""
            wait_for(lambda: "killed after 3s" in logged() and "failed to start" in logged(), 30,
                     message="both hook outcomes logged")
            wait_processes_gone(tmp)
            ctx.close()


class HookTransitions(RedisCase):
    """Which hooks fire, and with which EPOCH, when one node's processes see its terms out of order."""

    def setUp(self):
        from distnode.cluster import hooks
        super().setUp()
        self.fired = []
        real_fire = hooks.fire
        hooks.fire = lambda ctx, name, leader, epoch, **kw: self.fired.append((name, int(epoch))) or True
        self.addCleanup(setattr, hooks, "fire", real_fire)
        self.ctx = make_ctx(self.tmp, ME, self.server)
        self.addCleanup(self.ctx.close)
        self.server.command("SET", "hb:" + ME, "1", "PX", 60000)
        self.server.command("HSET", "openclaw:cluster:nodes", ME, record())
        self.server.command("SET", "openclaw:cluster:epoch", 4)
        remember(Elector(self.ctx), {})

    def lapse(self) -> None:
        """The lease lapses (its holder paused past it)."""
        self.server.command("DEL", "openclaw:cluster:leader", "openclaw:cluster:term")

    def test_a_step_paused_after_elect_does_not_record_its_stale_view(self):
        first = Elector(self.ctx)
        self.assertEqual(first.try_acquire_or_renew().epoch, 5)
        real = first.store.acquire_or_renew

        def paused():  # the store replied (renewed at 5); the step is paused past the lease
            obs = real()
            self.assertEqual((obs.outcome, obs.epoch), ("renewed", 5))
            self.lapse()
            other = Elector(self.ctx)  # meanwhile another process of this node takes a new term
            self.assertEqual((other.try_acquire_or_renew().outcome, other.state["epoch"]), ("acquired", 6))
            return obs
        first.store.acquire_or_renew = paused
        del self.fired[:]
        first.try_acquire_or_renew()  # resumes and records what it saw at epoch 5
        memory = local_state.read_json(first.state_path)
        self.assertEqual((memory["epoch"], memory["max_epoch"], memory["is_leader"]), (6, 6, True))
        self.assertEqual([f for f in self.fired if f[0] != "on_leader_change"], [("on_become_leader", 6)])
        self.assertEqual(Elector(self.ctx).try_acquire_or_renew().outcome, "renewed")
        self.assertEqual([f for f in self.fired if f[0] != "on_leader_change"], [("on_become_leader", 6)])

    def test_moving_straight_into_a_new_term_fires_no_lose_hook(self):
        elector = Elector(self.ctx)
        self.assertEqual(elector.try_acquire_or_renew().epoch, 5)
        self.lapse()
        del self.fired[:]
        obs = Elector(self.ctx).try_acquire_or_renew()
        self.assertEqual((obs.outcome, obs.epoch), ("acquired", 6))
        self.assertEqual(self.fired, [("on_become_leader", 6)])
        # a real loss still fires on_lose_leadership, with the epoch of the term that was lost
        self.lapse()
        self.server.command("SET", "openclaw:cluster:leader", OTHER, "PX", LEASE_MS)
        self.server.command("SET", "openclaw:cluster:epoch", 7)
        hold(self.server, OTHER, 7)
        del self.fired[:]
        self.assertEqual(Elector(self.ctx).try_acquire_or_renew().outcome, "follower")
        self.assertEqual(sorted(self.fired), [("on_leader_change", 7), ("on_lose_leadership", 6)])

    def test_keeping_the_lease_through_a_bootstrap_round_fires_no_lose_hook(self):
        self.assertEqual(Elector(self.ctx).try_acquire_or_renew().epoch, 5)
        # the master changed (a failover, a restart from files): the server key names another server
        self.server.command("SET", "openclaw:cluster:server", "the-old-master")
        del self.fired[:]
        obs = Elector(self.ctx).try_acquire_or_renew()
        self.assertEqual((obs.outcome, obs.leader), ("waiting", ME))
        self.assertEqual(self.server.command("GET", "openclaw:cluster:leader"), ME)
        self.assertEqual(self.fired, [])  # fenced, yet no other node can lead: nothing lost
        self.server.command("DEL", "openclaw:cluster:bootstrap")  # the round is over
        obs = Elector(self.ctx).try_acquire_or_renew()
        self.assertEqual((obs.outcome, obs.epoch), ("acquired", 6))
        self.assertEqual(self.fired, [("on_become_leader", 6)])


class RedlockLease(unittest.TestCase):
    """Redlock (issue 13, items 4 and 6): the data Redis's lease never outlives the quorum,
    the announce never overwrites another node's lease, and never reuses an epoch."""

    LEASE_MS = 3000

    def setUp(self):
        self.instances = [RedisServer().start() for _ in range(3)]
        self.data = RedisServer().start()
        self.tmp = tempfile.TemporaryDirectory()
        self.proxy = None

    def tearDown(self):
        if self.proxy is not None:
            self.proxy.close()
        for s in self.instances + [self.data]:
            s.close()
        self.tmp.cleanup()

    def ctx(self, node_id: str, endpoints=None):
        endpoints = endpoints or [{"host": s.host, "port": s.port} for s in self.instances]
        ctx = make_ctx(self.tmp.name, node_id, self.data, {"redis": {"instances": endpoints, "socket_timeout": 1.4}})
        self.data.command("SET", "hb:" + node_id, "1", "PX", 60000)
        self.data.command("HSET", "openclaw:cluster:nodes", node_id, record().replace('"n1"', '"%s"' % node_id))
        self.addCleanup(ctx.close)
        return ctx

    def quorum_pttl(self) -> int:
        """What is left of the lease on the majority: the second-longest PTTL of three, read directly."""
        left = sorted((int(s.command("PTTL", "openclaw:cluster:leader")) for s in self.instances), reverse=True)
        return left[len(self.instances) // 2]

    def test_with_a_slow_instance_the_data_lease_ends_before_the_quorum(self):
        from chaos.proxy import StallProxy
        slow = self.instances[2]
        self.proxy = StallProxy(slow.host, slow.port)
        port = self.proxy.add("slow")
        self.proxy.set_mode("slow", "delay", 0.3)  # each request and reply 0.3 s late: 0.6 s per round trip
        endpoints = [{"host": s.host, "port": s.port} for s in self.instances[:2]] + [{"host": "127.0.0.1",
                                                                                          "port": port}]
        elector = Elector(self.ctx(ME, endpoints))
        self.addCleanup(elector.close)
        obs = elector.try_acquire_or_renew()
        data_pttl = int(self.data.command("PTTL", "openclaw:cluster:leader"))  # read first: the safe order
        quorum = self.quorum_pttl()
        self.assertEqual(obs.outcome, "acquired")
        read_slack_ms = 50  # the reads above are sequential, a few ms apart
        self.assertLessEqual(data_pttl, quorum + read_slack_ms,
                             "the data Redis's lease outlives the quorum's by %dms" % (data_pttl - quorum))
        self.assertLessEqual(obs.lease_ms, quorum + read_slack_ms, "lease_ms reports more than is left")
        term = self.data.command("HGETALL", "openclaw:cluster:term")
        self.assertEqual((term[term.index("node") + 1], term[term.index("epoch") + 1]), (ME, str(obs.epoch)))
        self.assertLessEqual(int(self.data.command("PTTL", "openclaw:cluster:term")), quorum + read_slack_ms)

    def test_announce_never_overwrites_another_nodes_live_lease(self):
        # n2's lease lives in the data Redis; the instances lost theirs (restarted empty)
        self.data.command("SET", "openclaw:cluster:epoch", 5)
        self.data.command("SET", "openclaw:cluster:leader", OTHER, "PX", 60000)
        elector = Elector(self.ctx(ME))
        self.addCleanup(elector.close)
        remember(elector, {"max_epoch": 5})  # so its epoch (6) is above the data Redis's
        obs = elector.try_acquire_or_renew()
        self.assertFalse(obs.is_leader, obs.as_dict())
        self.assertEqual(self.data.command("GET", "openclaw:cluster:leader"), OTHER)
        self.assertEqual(self.data.command("GET", "openclaw:cluster:epoch"), "5")
        for s in self.instances:
            self.assertIsNone(s.command("GET", "openclaw:cluster:leader"), "a refused attempt keeps no claim")

    def test_announce_never_reuses_the_current_epoch_after_the_instances_lost_their_data(self):
        # n2 led at epoch 5 (its lease has lapsed); the instances restarted empty; n1 remembers 4
        self.data.command("SET", "openclaw:cluster:epoch", 5)
        ctx = self.ctx(ME)
        elector = Elector(ctx)
        self.addCleanup(elector.close)
        remember(elector, {"max_epoch": 4})
        obs = elector.try_acquire_or_renew()
        if obs.is_leader:
            self.assertGreater(obs.epoch, 5, "epoch 5 was n2's: n1 may not lead at it")
        self.assertNotEqual(self.data.command("GET", "openclaw:cluster:epoch"), "5" if obs.is_leader else None)

    def test_a_leader_whose_data_lease_lapsed_starts_a_new_term(self):
        elector = Elector(self.ctx(ME))
        self.addCleanup(elector.close)
        won = elector.try_acquire_or_renew()
        self.assertEqual(elector.try_acquire_or_renew().outcome, "renewed")
        self.data.command("DEL", "openclaw:cluster:leader", "openclaw:cluster:term")  # lapsed in the data Redis
        again = elector.try_acquire_or_renew()
        self.assertEqual((again.outcome, again.epoch), ("acquired", won.epoch + 1))

    def test_a_release_matches_the_term_not_just_the_node_id(self):
        elector = Elector(self.ctx(ME))
        self.addCleanup(elector.close)
        won = elector.try_acquire_or_renew()
        self.assertEqual(won.outcome, "acquired")
        # an attempt of this node at another epoch (a second job, a stale process) gives up: it must
        # not release the term that won
        elector.store.release(won.epoch + 1)
        self.assertEqual(self.data.command("GET", "openclaw:cluster:leader"), ME)
        self.assertEqual(sum(s.command("GET", "openclaw:cluster:leader") == ME for s in self.instances), 3)


class RedlockDroppedTerm(unittest.TestCase):
    """A Redlock leader that drops its term gives up its data-Redis lease at that term in the same
    step (what it reports is what Redis shows), and a leader whose data Redis is unreachable or
    refuses it keeps no claim on the instances (so another node wins the quorum)."""

    LEASE_MS = RedlockLease.LEASE_MS
    setUp, tearDown, ctx = RedlockLease.setUp, RedlockLease.tearDown, RedlockLease.ctx

    def data_lease(self):
        term = self.data.command("HMGET", "openclaw:cluster:term", "node", "epoch")
        return self.data.command("GET", "openclaw:cluster:leader"), term[0], term[1]

    def claims_of(self, node_id: str) -> int:
        return sum(s.command("GET", "openclaw:cluster:leader") == node_id for s in self.instances if s.is_running)

    def lead(self, ctx):
        elector = Elector(ctx)
        self.addCleanup(elector.close)
        won = elector.try_acquire_or_renew()
        self.assertEqual(won.outcome, "acquired")
        return elector, won

    def assert_lease_given_up(self, obs, won):
        self.assertFalse(obs.is_leader, obs.as_dict())
        self.assertEqual(self.data_lease(), (None, None, None),
                         "the step said %s (not leading) but Redis still shows n1 at epoch %d" % (obs.outcome,
                                                                                                    won.epoch))
        self.assertEqual(self.claims_of(ME), 0, "claims of a dropped term are released")

    def test_a_leader_that_loses_the_quorum_gives_up_its_data_lease(self):
        elector, won = self.lead(self.ctx(ME))
        for s in self.instances[:2]:  # a majority of the lease instances is down
            s.stop()
        self.assert_lease_given_up(elector.try_acquire_or_renew(), won)

    def test_a_leader_that_sees_another_holder_on_the_majority_gives_up_its_data_lease(self):
        elector, won = self.lead(self.ctx(ME))
        for s in self.instances[:2]:  # restarted empty, then claimed by n2 (whose announce the lease refused)
            s.command("FLUSHALL")
            s.command("SET", "openclaw:cluster:leader", OTHER, "PX", 60000)
        obs = elector.try_acquire_or_renew()
        self.assertEqual(obs.leader, OTHER)
        self.assertFalse(obs.is_leader, obs.as_dict())
        self.assertEqual(self.data_lease(), (None, None, None), "Redis still shows n1 at epoch %d" % won.epoch)
        self.assertEqual(self.instances[2].command("GET", "openclaw:cluster:leader"), None)
        for s in self.instances[:2]:
            self.assertEqual(s.command("GET", "openclaw:cluster:leader"), OTHER, "never another node's claim")

    def test_a_leader_whose_heartbeat_is_gone_keeps_no_claim_and_no_lease(self):
        elector, won = self.lead(self.ctx(ME))
        self.data.command("DEL", "hb:" + ME)
        obs = elector.try_acquire_or_renew()
        self.assertEqual(obs.outcome, "ineligible")
        self.assert_lease_given_up(obs, won)

    def test_dropping_a_term_never_touches_another_term_of_this_node(self):
        elector, won = self.lead(self.ctx(ME))
        # the data Redis moved on: this node's lease there is now a newer term (another of its processes)
        self.data.command("HSET", "openclaw:cluster:term", "epoch", won.epoch + 1)
        self.data.command("SET", "openclaw:cluster:epoch", won.epoch + 1)
        for s in self.instances[:2]:
            s.stop()
        self.assertFalse(elector.try_acquire_or_renew().is_leader)
        self.assertEqual(self.data_lease(), (ME, ME, str(won.epoch + 1)))

    def test_a_leader_cut_off_from_the_data_redis_releases_its_claims_and_stays_off(self):
        from chaos.proxy import StallProxy
        self.proxy = StallProxy(self.data.host, self.data.port)
        port = self.proxy.add("data")
        ctx = self.ctx(ME)
        ctx.cfg.values["redis"].update(port=port)  # n1 reaches the data Redis through the proxy only
        elector, won = self.lead(ctx)
        self.proxy.set_mode("data", "cut")
        wait_for(lambda: int(self.data.command("PTTL", "openclaw:cluster:leader")) < self.LEASE_MS / 2, 30,
                 message="n1's data lease to be half gone")
        with self.assertRaises(RedisError):  # not leading: the step fails, as any step whose Redis is away
            elector.try_acquire_or_renew()
        # its claims now end with its data lease (that it cannot delete), not a whole lease after this step
        claims_left = [int(s.command("PTTL", "openclaw:cluster:leader")) for s in self.instances]
        data_left = int(self.data.command("PTTL", "openclaw:cluster:leader"))
        self.assertTrue(all(data_left <= left <= self.LEASE_MS * 3 / 4 for left in claims_left),  # renewed: ~3000
                        "claims %s ms, data lease %d ms: a leader whose announce failed renewed its claims (nobody "
                        "else can win a quorum) or cut them below its data lease" % (claims_left, data_left))
        # the data lease lapses by itself; meanwhile n1 must not claim the instances again while it cannot
        # announce (it would hold them for a socket timeout each step, and others would never win)
        for s in self.instances:
            s.command("CONFIG", "RESETSTAT")
        self.proxy.set_mode("data", "delay", 2.0)  # slower than the socket timeout: a stalled link
        with self.assertRaises(RedisError):
            elector.try_acquire_or_renew()
        touched = sum("cmdstat_eval" in s.command("INFO", "commandstats") for s in self.instances)
        self.assertEqual(touched, 0, "n1 claimed the instances again while it could not announce")
        wait_for(lambda: self.claims_of(ME) == 0, 30, message="n1's claims to lapse")
        wait_for(lambda: self.data.command("GET", "openclaw:cluster:leader") is None, 30,
                 message="n1's data lease to lapse")
        other = Elector(self.ctx(OTHER))
        self.addCleanup(other.close)
        obs = other.try_acquire_or_renew()
        self.assertEqual((obs.outcome, obs.leader), ("acquired", OTHER))
        self.proxy.set_mode("data", "pass")  # healed: n1 follows
        self.assertEqual(elector.try_acquire_or_renew().leader, OTHER)

    def test_a_candidate_cut_off_from_the_data_redis_keeps_no_claim(self):
        from chaos.proxy import StallProxy
        self.proxy = StallProxy(self.data.host, self.data.port)
        port = self.proxy.add("data")
        ctx = self.ctx(ME)
        ctx.cfg.values["redis"].update(port=port)
        elector = Elector(ctx)
        self.addCleanup(elector.close)
        self.proxy.set_mode("data", "cut")
        with self.assertRaises(RedisError):
            elector.try_acquire_or_renew()
        self.assertEqual(self.claims_of(ME), 0, "a quorum won but never announced is given back")


class RedlockOneNodeTwoJobs(unittest.TestCase):
    """Issue 13 item 6: one node's leader_election and failover_manager ticks, started at the same
    moment against a vacant Redlock lease, make one term between them: one on_become_leader per
    term, no on_lose_leadership while the quorum holds, no spurious second term."""

    ROUNDS = 6

    def test_concurrent_ticks_of_one_node_make_one_term(self):
        import subprocess
        instances = [RedisServer().start() for _ in range(3)]
        data = RedisServer().start()
        tmp = tempfile.TemporaryDirectory()
        try:
            out = os.path.join(tmp.name, "hooks.txt")
            hook = [sys.executable, "-c", "import os; open(%r, 'a').write(os.environ['HOOK'] + ' ' + "
                                          "os.environ['EPOCH'] + '\\n')" % out]
            node = NodeEnv(tmp.name, ME, data, config={
                "redis": {"instances": [{"host": s.host, "port": s.port} for s in instances]},
                "hooks": {"on_become_leader": hook, "on_lose_leadership": hook}})
            node.run_json("heartbeat.py")
            data.command("PEXPIRE", "hb:" + ME, 600000)  # alive for the whole test
            memory = local_state.epoch_memory_path(node.run_dir, ME)

            def lines():
                try:
                    with open(out) as fh:
                        return fh.read().split()
                except OSError:
                    return []
            epochs = []
            for _ in range(self.ROUNDS):
                for s in instances + [data]:
                    s.command("DEL", "openclaw:cluster:leader", "openclaw:cluster:term")
                # the node forgets it led without a transition (no hook): the lease is vacant again
                local_state.update_json(memory, lambda st: st.update(is_leader=False, leader="", epoch=0))
                before = int(data.command("GET", "openclaw:cluster:epoch") or 0)
                procs = [subprocess.Popen(node.argv(script, "--quiet"), env=node.env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
                         for script in ("leader_election.py", "failover_manager.py")]
                for proc in procs:
                    proc.wait(60)
                after = int(data.command("GET", "openclaw:cluster:epoch") or 0)
                epochs.append(after)
                self.assertEqual(data.command("GET", "openclaw:cluster:leader"), ME,
                                 "the lease one job won was lost to the other (round %d)" % len(epochs))
                self.assertEqual(after, before + 1, "a spurious second term (epoch %d -> %d)" % (before, after))
            wait_for(lambda: lines().count("on_become_leader") >= self.ROUNDS, 20, message="the hooks to run")
            wait_processes_gone(tmp.name)  # every hook fired (an extra one too) has run and logged
            got = lines()
            become = sorted(int(e) for h, e in zip(got[::2], got[1::2]) if h == "on_become_leader")
            self.assertEqual(become, sorted(epochs), "one on_become_leader per term")
            self.assertNotIn("on_lose_leadership", got)
        finally:
            wait_processes_gone(tmp.name, kill=True)  # no hook supervisor writes into tmp while it goes
            for s in instances + [data]:
                s.close()
            tmp.cleanup()


if __name__ == "__main__":
    unittest.main()
