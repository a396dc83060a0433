"""The elector, table-driven: each row a starting state, one step, the expected state and round trips."""

import json
import os
import sys
import tempfile
import unittest

from support.nodes import SCRIPTS, NodeEnv, wait_for
from support.redis_server import RedisServer

sys.path.insert(0, SCRIPTS)
import config  # noqa: E402
import local_state  # noqa: E402
import log as log_mod  # noqa: E402
import runner  # noqa: E402
from elector import Elector  # noqa: E402
from errors import NodeIdCollision  # noqa: E402
from redis_client import WrongTypeError  # noqa: E402

ME, OTHER = "n1", "n2"
LEASE_MS = 3000


def make_ctx(base_dir: str, node_id: str, server, extra_config: dict = None) -> runner.Context:
    env = NodeEnv(base_dir, node_id, server, config=extra_config)
    cfg = config.load(env.config_dir, env.log_dir)
    cfg.values["node"]["id"] = node_id
    cfg.values["redis"].update(host=server.host, port=server.port)
    # the synthetic records below name instance "x": make it this process's own token
    local_state.atomic_write(os.path.join(cfg.run_dir, node_id + ".instance"), b"x")
    logger = log_mod.Logger("test", node_id, env.log_dir, console=None, use_syslog=False)
    return runner.Context("test", cfg, logger, {})


def remember(elector: Elector, state: dict) -> None:
    """Set what the node remembers (its memory file, shared by its processes)."""
    local_state.atomic_write_json(elector.state_path, state)


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
    ("held by another at an epoch below what I remember: raised to a fresh one",
     dict(holder=OTHER, epoch=3, alive=True, rec=record()), ("follower", OTHER, 8), 7),
    ("held by me at an epoch below what I remember: I adopt a fresh one",
     dict(holder=ME, epoch=3, alive=True, rec=record()), ("renewed", ME, 8), 7),
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
        import membership
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
        remember(confused, {"is_leader": False, "epoch": 0, "leader": "", "max_epoch": 2})
        self.assertTrue(confused.release())
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:leader"))
        # releasing one term by its epoch (an unconfirmed new term) leaves a newer term alone
        self.server.command("SET", "openclaw:cluster:leader", ME, "PX", LEASE_MS)
        self.server.command("SET", "openclaw:cluster:epoch", 99)
        self.assertFalse(confused._release_at(2))
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
            ctx.close()

    def test_a_failing_or_hanging_hook_never_blocks_the_tick(self):
        with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
            hang = [sys.executable, "-c", "import time; time.sleep(60)"]
            ctx = make_ctx(tmp, ME, server, {"hooks": {"on_become_leader": hang, "timeout_s": 1,
                                                       "on_leader_change": ["/nonexistent/hook"]}})
            server.command("SET", "hb:" + ME, "1", "PX", LEASE_MS)
            server.command("HSET", "openclaw:cluster:nodes", ME, record())
            server.command("SET", "openclaw:cluster:epoch", 0)
            import time
            started = time.monotonic()
            self.assertEqual(Elector(ctx).try_acquire_or_renew().outcome, "acquired")
            self.assertLess(time.monotonic() - started, 2, "the tick does not wait for its hooks")
            hooks_log = os.path.join(ctx.cfg.log_dir, "hooks.log")

            def logged():
                try:
                    with open(hooks_log) as fh:
                        return fh.read()
                except OSError:
                    return ""
            wait_for(lambda: "killed after 1s" in logged() and "failed to start" in logged(), 15,
                     message="both hook outcomes logged")
            ctx.close()


if __name__ == "__main__":
    unittest.main()
