"""scripts/state_sync.py (with cluster_state.py and shared_state.py) against a real Redis.

The cluster snapshot: the leader publishes (three round trips), followers
mirror it (one), a stale leader's publish is refused and changes nothing, the
mirror is never seen half-written and is not rewritten while nothing changed,
a node that remembers a higher epoch does not mirror a lower one. The
key-value store: get/set/delete/list/cas/watch with their exit codes, no lost
update under concurrent compare-and-set writers, and bad input that writes
nothing.
"""

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
from unittest import mock

from support.base import SCRIPTS, RedisCase  # first: puts scripts/ on sys.path
from distnode import lua
from distnode.core import config
from distnode.core import keys
from distnode.core import local_state
from distnode.core import log as log_mod
from distnode.cluster import membership
from distnode.run.context import Context
from distnode.cluster import shared_state
from distnode.cluster import cluster_state
import state_sync
from distnode.redis.client import Redis
from support.fake_servers import FakeServer, lose_reply_proxy
from support.nodes import NodeEnv, wait_for
from support.redis_server import RedisServer

SERVER = RedisServer(name="state-sync")  # the module's; support.base starts and closes it
# Long heartbeat interval, TTL and lease: nothing expires, and no member turns suspect (1.5 intervals
# after its beat) while a test runs, however loaded the machine: the snapshot only changes when a
# test changes the cluster.
STEADY = {"node": {"heartbeat_interval": 20, "heartbeat_ttl": 60}, "election": {"lease_ttl": 60, "renew_interval": 1}}
EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_TIMEOUT = 4, 5, 6


class Case(RedisCase):
    shared_server = SERVER
    tmp_prefix = "dn-state-"

    def node(self, node_id: str, **config) -> NodeEnv:
        return self.new_node(node_id, dict(STEADY, **config))

    def sync(self, node: NodeEnv, *args) -> dict:
        return node.run_json("state_sync.py", *args)

    def kv_keys(self) -> list:
        return sorted(SERVER.command("KEYS", "openclaw:cluster:kv*"))


class SnapshotTest(Case):
    def setUp(self):
        super().setUp()
        SERVER.command("SET", keys.epoch(), "0")  # an existing cluster: no bootstrap wait
        self.a, self.b = self.node("a"), self.node("b")
        for n in (self.a, self.b):
            n.run_json("heartbeat.py")
        self.assertEqual(self.a.run_json("leader_election.py")["outcome"], "acquired")
        self.assertEqual(self.b.run_json("leader_election.py")["outcome"], "follower")

    def mirror_of(self, node: NodeEnv) -> str:
        return os.path.join(node.run_dir, "cluster-%s.json" % node.node_id)

    def read_mirror(self, node: NodeEnv) -> dict:
        with open(self.mirror_of(node)) as fh:
            return json.load(fh)

    def published(self) -> dict:
        flat = SERVER.command("HGETALL", keys.state())
        return dict(zip(flat[::2], flat[1::2]))

    def test_leader_publishes_and_followers_mirror(self):
        lead = self.sync(self.a)
        self.assertEqual((lead["role"], lead["published"], lead["mirrored"]), ("leader", True, True))
        self.assertEqual(lead["round_trips"], 3, "gather (2) + fenced publish (1)")
        follow = self.sync(self.b)
        self.assertEqual((follow["role"], follow["mirrored"], follow["version"]), ("follower", True, 1))
        self.assertEqual(follow["round_trips"], 1)
        doc = self.read_mirror(self.b)
        self.assertEqual(doc, self.read_mirror(self.a))
        self.assertEqual((doc["leader"], doc["epoch"], doc["version"]), ("a", 1, 1))
        self.assertEqual([(n["id"], n["state"]) for n in doc["nodes"]], [("a", "online"), ("b", "online")])
        redis_now = float(SERVER.command("TIME")[0])
        self.assertLess(abs(doc["updated"] - redis_now), 10, "updated is Redis's clock")
        shown = self.b.run("state_sync.py", "show", "--json", env={"REDIS_PORT": "1"})  # no Redis needed
        self.assertEqual((shown.returncode, json.loads(shown.stdout)), (0, doc))

    def test_nothing_is_republished_or_rewritten_while_the_cluster_stays_the_same(self):
        self.sync(self.a)
        self.sync(self.b)
        before = os.stat(self.mirror_of(self.b))
        again = self.sync(self.a)
        self.assertEqual((again["published"], again["version"], again["mirrored"]), (False, 1, False))
        follow = self.sync(self.b)
        self.assertEqual((follow["mirrored"], follow["round_trips"]), (False, 1))
        after = os.stat(self.mirror_of(self.b))
        self.assertEqual((after.st_ino, after.st_mtime_ns), (before.st_ino, before.st_mtime_ns))
        self.node("c").run_json("heartbeat.py")  # the cluster changes: a new version
        self.assertEqual(self.sync(self.a)["version"], 2)
        self.assertTrue(self.sync(self.b)["mirrored"])
        self.assertEqual([n["id"] for n in self.read_mirror(self.b)["nodes"]], ["a", "b", "c"])

    def test_a_leader_whose_lease_was_taken_over_does_not_publish(self):
        self.sync(self.a)
        published = self.published()
        SERVER.command("SET", keys.leader(), "b", "PX", 60000)  # b took over while a was paused
        SERVER.command("INCR", keys.epoch())
        SERVER.command("HSET", keys.nodes(), "new", json.dumps({"id": "new", "status": "online"}))
        result = self.sync(self.a)  # a's memory still says it leads
        self.assertEqual(result["role"], "follower")
        self.assertEqual(self.published(), published)

    def test_a_publish_from_a_stale_snapshot_is_fenced_and_changes_nothing(self):
        self.sync(self.a)
        ctx = self.ctx(self.a)
        rows = [("lease taken over", [("SET", keys.leader(), "b"), ("INCR", keys.epoch())]),
                ("epoch changed", [("INCR", keys.epoch())])]
        for name, takeover in rows:
            with self.subTest(name):
                SERVER.command("SET", keys.leader(), "a")
                SERVER.command("HSET", keys.nodes(), name, json.dumps({"id": name, "status": "online"}))
                stale = membership.snapshot(ctx.redis)  # a new member seen while a leads ...
                self.assertEqual(stale["leader"], "a")
                for command in takeover:  # ... then a pauses past its lease
                    SERVER.command(*command)
                published, mirror = self.published(), os.stat(self.mirror_of(self.a))
                with mock.patch.object(cluster_state.membership, "snapshot", lambda client: stale):
                    result = cluster_state.sync(ctx)  # the state_sync job's tick
                self.assertEqual(result["role"], "fenced")
                self.assertEqual(self.published(), published, "a fenced publish writes nothing")
                self.assertEqual(os.stat(self.mirror_of(self.a)).st_mtime_ns, mirror.st_mtime_ns)
        self.assertEqual(self.a.log_text("state_sync").count("snapshot not published: FENCED a at epoch"), 2)

    def test_a_snapshot_above_the_publishers_epoch_is_not_overwritten(self):
        self.sync(self.a)
        SERVER.command("HSET", keys.state(), "epoch", "7")
        SERVER.command("HSET", keys.nodes(), "new", json.dumps({"id": "new", "status": "online"}))
        published = self.published()
        self.assertEqual(self.sync(self.a)["role"], "fenced")
        self.assertEqual(self.published(), published)
        self.assertIn("STALE", self.a.log_text("state_sync"))

    def test_a_node_that_remembers_a_higher_epoch_does_not_mirror_a_lower_one(self):
        self.sync(self.a)
        memory = self.b.memory_path()
        local_state.atomic_write_json(memory, dict(local_state.read_json(memory), max_epoch=9))
        result = self.sync(self.b)
        self.assertEqual((result["epoch"], result["mirrored"]), (1, False))
        self.assertFalse(os.path.exists(self.mirror_of(self.b)))
        self.assertIn("not mirroring snapshot version 1 of epoch 1: this node has seen epoch 9",
                      self.b.log_text("state_sync"))

    def test_mirroring_a_higher_epoch_raises_what_the_node_remembers(self):
        SERVER.command("SET", keys.leader(), "b", "PX", 60000)
        SERVER.command("SET", keys.epoch(), "5")
        SERVER.command("HSET", keys.term(), "node", "b", "instance", local_state.instance_token(self.b.run_dir, "b"),
                       "epoch", "5", "confirmed", "1")
        result = self.sync(self.b)  # b's elector memory lags: Redis says b leads
        self.assertEqual((result["role"], result["published"], result["epoch"]), ("leader", True, 5))
        self.assertEqual(result["round_trips"], 4, "read (1), then gather (2) and publish (1)")
        self.assertEqual(local_state.remembered_epoch(self.b.run_dir, "b"), 5)

    def test_the_mirror_is_never_seen_half_written(self):
        many = {"m%03d" % i: json.dumps({"id": "m%03d" % i, "status": "online", "host": "h" * 100})
                for i in range(300)}  # a mirror of ~50 KB: a torn write would show
        SERVER.command("HSET", keys.nodes(), *[x for kv in many.items() for x in kv])
        SERVER.command("MSET", *[x for i in many for x in ("hb:" + i, "1")])
        self.sync(self.a)
        self.sync(self.b)
        path, stop = self.mirror_of(self.b), threading.Event()
        seen = {"reads": 0, "torn": 0, "versions": set()}

        def reader():
            while not stop.is_set():
                with open(path, "rb") as fh:
                    raw = fh.read()
                try:
                    seen["versions"].add(json.loads(raw)["version"])
                    seen["reads"] += 1
                except ValueError:
                    seen["torn"] += 1

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for round_no in range(6):
                SERVER.command("HSET", keys.nodes(), "m000", json.dumps({"id": "m000", "host": "r%d" % round_no}))
                self.assertTrue(self.sync(self.a)["published"])
                self.assertTrue(self.sync(self.b)["mirrored"])
        finally:
            stop.set()
            thread.join()
        self.assertEqual(seen["torn"], 0, "a reader saw a half-written mirror")
        self.assertGreater(seen["reads"], 20)
        self.assertGreaterEqual(len(seen["versions"]), 4, "the reader raced the rewrites")

    def test_mirror_file_setting(self):
        c = self.node("c", cluster={"mirror_file": "shared/cluster.json"})
        self.sync(self.a)
        result = self.sync(c)
        self.assertEqual(result["mirror_file"], os.path.join(c.log_dir, "shared", "cluster.json"))
        self.assertTrue(os.path.isfile(result["mirror_file"]))

    def test_loop_mode_mirrors_each_new_version_and_stops_on_sigterm(self):
        self.sync(self.a)
        self.b.update_config({"node": {"heartbeat_interval": 1}})  # the loop's pace (b's record keeps 20)
        loop = subprocess.Popen(self.b.argv("state_sync.py", "--loop", "--quiet"), env=self.b.env)
        self.addCleanup(lambda: loop.poll() is None and (loop.kill(), loop.wait()))
        wait_for(lambda: os.path.exists(self.mirror_of(self.b)), 30, message="the first mirror")
        self.node("c").run_json("heartbeat.py")
        self.assertEqual(self.sync(self.a)["version"], 2)
        wait_for(lambda: self.read_mirror(self.b)["version"] == 2, 30, message="version 2 mirrored")
        loop.send_signal(signal.SIGTERM)
        self.assertEqual(loop.wait(30), 0)

    def test_only_tick_takes_the_per_node_lock(self):
        self.sync(self.a)
        os.makedirs(self.b.run_dir, exist_ok=True)
        fd = os.open(os.path.join(self.b.run_dir, "state_sync.b.lock"), os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a previous tick still running
        skipped = self.b.run("state_sync.py", "--json")
        self.assertEqual((skipped.returncode, skipped.stdout), (0, ""))
        self.assertFalse(os.path.exists(self.mirror_of(self.b)))
        self.assertEqual(self.b.run("state_sync.py", "set", "k", "1").returncode, 0)
        self.assertEqual(self.b.run("state_sync.py", "get", "k").stdout.strip(), "1")

    def ctx(self, node: NodeEnv) -> Context:
        env = dict(os.environ, REDIS_HOST=SERVER.host, REDIS_PORT=str(SERVER.port), OPENCLAW_NODE_ID=node.node_id)
        with mock.patch.dict(os.environ, env):
            cfg = config.load(node.config_dir, node.log_dir)
        ctx = Context("state_sync", cfg, log_mod.Logger("state_sync", node.node_id, node.log_dir,
                                                                console=None, use_syslog=False), {})
        self.addCleanup(ctx.close)
        return ctx


class KvTest(Case):
    def setUp(self):
        super().setUp()
        self.n = self.node("n1")

    def kv(self, *args, input: str = None):
        return self.n.run("state_sync.py", *args, input=input)

    def ok(self, *args, input: str = None) -> str:
        result = self.kv(*args, input=input)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout

    def test_set_get_list_delete(self):
        self.assertEqual(self.kv("get", "job/1").returncode, EXIT_NOT_FOUND)
        self.ok("set", "job/1", '{"step": 1, "by": "n1"}')
        self.assertEqual(json.loads(self.ok("get", "job/1")), {"step": 1, "by": "n1"})
        first = json.loads(self.ok("get", "job/1", "--json"))
        self.assertEqual(first["value"], {"step": 1, "by": "n1"})
        self.assertLess(abs(first["updated"] - float(SERVER.command("TIME")[0])), 10)
        self.ok("set", "job/1", "2")
        self.ok("set", "job/2", '"two"')
        self.ok("set", "other", "null")
        second = json.loads(self.ok("get", "job/1", "--json"))
        self.assertGreater(second["version"], first["version"])
        self.assertEqual(self.ok("list").split(), ["job/1", "job/2", "other"])
        listed = json.loads(self.ok("list", "--prefix", "job/", "--json"))
        self.assertEqual([(e["key"], e["version"]) for e in listed["keys"]][0], ("job/1", second["version"]))
        self.assertEqual(len(listed["keys"]), 2)
        self.assertEqual(json.loads(self.ok("list", "--limit", "1", "--json"))["truncated"], True)
        self.assertIn("deleted job/1", self.ok("delete", "job/1"))
        self.assertEqual(self.kv("get", "job/1").returncode, EXIT_NOT_FOUND)
        self.assertIn("did not exist", self.ok("delete", "job/1"))
        self.assertEqual(self.ok("list", "--prefix", "job/").split(), ["job/2"])
        self.ok("set", "job/1", "3")
        again = json.loads(self.ok("get", "job/1", "--json"))
        self.assertGreater(again["version"], second["version"], "versions never repeat, even after a delete")

    def test_value_sources(self):
        path = os.path.join(self.tmp, "value.json")
        with open(path, "w") as fh:
            fh.write('{\n  "from": "file"\n}\n')
        self.ok("set", "f", "--value-file", path)
        self.ok("set", "s", "-", input='["stdin"]')
        self.ok("set", "t", "--value-file", "-", input="true")
        argv = self.n.argv("state_sync.py")
        negative = subprocess.run(argv + ["set", "neg", "--", "-1"], env=self.n.env, capture_output=True, text=True)
        self.assertEqual(negative.returncode, 0, negative.stderr)
        self.assertEqual([json.loads(self.ok("get", k)) for k in ("f", "s", "t", "neg")],
                         [{"from": "file"}, ["stdin"], True, -1])

    def test_cas_and_conditional_delete(self):
        made = json.loads(self.ok("cas", "lock", "--version", "0", '"n1"', "--json"))
        self.assertTrue(made["ok"])
        taken = self.kv("cas", "lock", "--version", "0", '"n2"')
        self.assertEqual(taken.returncode, EXIT_CONFLICT)
        self.assertIn("already exists at version %d" % made["version"], taken.stderr)
        stale = self.kv("cas", "lock", "--version", str(made["version"] - 1), '"n2"', "--json")
        self.assertEqual((stale.returncode, json.loads(stale.stdout)["version"]), (EXIT_CONFLICT, made["version"]))
        self.assertEqual(json.loads(self.ok("get", "lock")), "n1", "a failed cas writes nothing")
        moved = json.loads(self.ok("cas", "lock", "--version", str(made["version"]), '"n3"', "--json"))
        self.assertGreater(moved["version"], made["version"])
        self.assertEqual(self.kv("cas", "missing", "--version", "3", "1").returncode, EXIT_CONFLICT)
        self.assertEqual(self.kv("delete", "lock", "--version", str(made["version"])).returncode, EXIT_CONFLICT)
        self.assertEqual(json.loads(self.ok("get", "lock")), "n3")
        self.ok("delete", "lock", "--version", str(moved["version"]))
        self.assertEqual(self.kv("get", "lock").returncode, EXIT_NOT_FOUND)

    def lost_reply(self, script: str, *args):
        """state_sync.py ``args`` through a proxy that runs the first call of Lua ``script`` but loses
        its reply (the connection closes), so the command's retry sends it again."""
        sent = lua.script(script)
        proxy = FakeServer(lose_reply_proxy(SERVER.host, SERVER.port, {sent.source.encode(), sent.sha.encode()}))
        self.addCleanup(proxy.stop)
        result = self.n.run("state_sync.py", *args, env={"REDIS_PORT": str(proxy.start().port)})
        self.assertEqual(proxy.connections, 2, "the first reply was not lost, so this proved nothing")
        return result

    def test_a_write_whose_reply_was_lost_runs_once_and_reports_what_it_did(self):
        self.n.update_config({"node": {"retry_count": 1}})
        self.ok("set", "k", "0")
        first = int(SERVER.command("GET", keys.kv_version()))
        written = self.lost_reply("kv_set", "set", "k", "1", "--json")
        self.assertEqual((written.returncode, json.loads(written.stdout)["version"]), (0, first + 1), written.stderr)
        self.assertEqual(int(SERVER.command("GET", keys.kv_version())), first + 1, "the set ran twice")
        swapped = self.lost_reply("kv_set", "cas", "k", "--version", str(first + 1), "2", "--json")
        self.assertEqual(swapped.returncode, 0, swapped.stderr)
        entry = json.loads(self.ok("get", "k", "--json"))
        self.assertEqual(json.loads(swapped.stdout), {"key": "k", "ok": True, "version": first + 2,
                                                      "updated": entry["updated"]})
        self.assertEqual((entry["value"], entry["version"]), (2, first + 2))
        deleted = self.lost_reply("kv_delete", "delete", "k", "--version", str(first + 2))
        self.assertEqual((deleted.returncode, deleted.stdout.strip()), (0, "deleted k (was version %d)" % (first + 2)),
                         deleted.stderr)
        self.ok("set", "k", "3")
        deleted = self.lost_reply("kv_delete", "delete", "k")
        self.assertEqual((deleted.returncode, deleted.stdout.strip()), (0, "deleted k (was version %d)" % (first + 3)),
                         deleted.stderr)
        self.assertEqual(self.kv("get", "k").returncode, EXIT_NOT_FOUND)
        records = SERVER.command("KEYS", keys.kv_op("*"))
        self.assertEqual(len(records), 6, "one record per write")
        self.assertTrue(all(0 < SERVER.command("PTTL", key) <= 120000 for key in records), "a record without a TTL")

    def test_cas_under_concurrent_writers_loses_no_update(self):
        workers, increments = 4, 40
        self.ok("set", "counter", "0")
        go = os.path.join(self.tmp, "go")
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, SCRIPTS, go, str(increments)] + self.n.argv("x")[2:],
                                  env=self.n.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(workers)]
        for proc in procs:  # each says "ready" once imported, so they start together
            self.assertEqual(proc.stdout.readline().strip(), "ready")
        open(go, "w").close()
        conflicts = 0
        for proc in procs:
            out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err)
            conflicts += int(out.split()[-1])
        self.assertEqual(json.loads(self.ok("get", "counter")), workers * increments)
        self.assertGreater(conflicts, 0, "the writers never raced, so this proved nothing")

    def test_watch(self):
        timed_out = self.kv("watch", "w", "--timeout", "0.3", "--json")
        self.assertEqual(timed_out.returncode, EXIT_TIMEOUT)
        self.assertFalse(json.loads(timed_out.stdout)["changed"])
        self.ok("set", "w", "1")
        version = json.loads(self.ok("get", "w", "--json"))["version"]
        watcher = subprocess.Popen(self.n.argv("state_sync.py", "watch", "w", "--version", str(version),
                                               "--timeout", "20", "--json"),
                                   env=self.n.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        self.assertIsNone(watcher.poll(), "watch returned before the key changed")
        self.ok("set", "w", '{"n": 2}')
        out, err = watcher.communicate(timeout=10)
        self.assertEqual(watcher.returncode, 0, err)
        seen = json.loads(out)
        self.assertEqual((seen["changed"], seen["value"], seen["previous_version"]), (True, {"n": 2}, version))
        already = json.loads(self.ok("watch", "w", "--version", str(version), "--json"))
        self.assertEqual(already["value"], {"n": 2}, "a version that is already gone returns at once")
        version = already["version"]
        deleted = subprocess.Popen(self.n.argv("state_sync.py", "watch", "w", "--version", str(version),
                                               "--timeout", "20", "--json"),
                                   env=self.n.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ok("delete", "w")
        out, err = deleted.communicate(timeout=10)
        self.assertEqual((deleted.returncode, json.loads(out)["version"]), (0, 0), err)
        self.assertIn("was deleted", err)

    def test_a_value_is_stored_as_given_and_bounded_as_stored(self):
        self.ok("set", "u", '[ "caf\u00e9",  "\\u00e9\\ud83d\\ude00" ]')
        self.assertEqual(SERVER.command("HGET", keys.kv("u"), "value"), '["caf\u00e9","\u00e9\U0001f600"]')
        self.assertEqual(json.loads(self.ok("get", "u")), ["caf\u00e9", "\u00e9\U0001f600"])
        grown = self.kv("set", "n", "-", input="[" + "1e15," * 120000 + "1]")  # 600 KB given, 2.3 MB as stored
        self.assertEqual(grown.returncode, 2, grown.stderr)
        self.assertIn("as stored", grown.stderr)
        self.assertEqual(self.kv("get", "n").returncode, EXIT_NOT_FOUND)

    def test_a_value_at_its_bound_is_read_back_at_the_least_reply_bound(self):
        self.n.update_config({"redis": {"max_reply_bytes": 2 * 1024 * 1024}, "tasks": {"max_payload_bytes": 1000}})
        big = '"%s"' % ("\u00e9" * ((1024 * 1024 - 2) // 2))  # 1 MiB of UTF-8, given and stored
        self.ok("set", "big", "-", input=big)
        self.assertEqual(len(json.loads(self.ok("get", "big"))), (1024 * 1024 - 2) // 2)

    def test_watch_without_a_limit_outlives_redis_restarts(self):
        # the retry budget (node.retry_count) is for faults in a row: each poll is retried on its own
        server = RedisServer(name="watch-restarts").start()
        self.addCleanup(server.close)
        node = self.new_node("w1", dict(STEADY, node={"retry_count": 2, "retry_delay": 0.3}), server=server)
        watcher = subprocess.Popen(node.argv("state_sync.py", "watch", "k", "--timeout", "0", "--json"),
                                   env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: watcher.poll() is None and watcher.kill())
        time.sleep(1.0)
        for _ in range(4):  # each one costs the watch's pooled connection: a fault on its next poll
            server.restart(keep_data=False)
            time.sleep(1.5)
            self.assertIsNone(watcher.poll(), watcher.poll() is not None and watcher.communicate()[1])
        node.run_json("state_sync.py", "set", "k", "7")
        out, err = watcher.communicate(timeout=20)
        self.assertEqual(watcher.returncode, 0, err)
        self.assertEqual((json.loads(out)["value"], json.loads(out)["changed"]), (7, True))
        self.assertIn("retrying", err, "no fault reached the watch, so this proved nothing")

    def test_watch_backs_off_and_stops_at_the_deadline(self):
        client = Redis(SERVER.host, SERVER.port)
        self.addCleanup(client.close)
        now, slept = [100.0], []

        def sleep(seconds):
            slept.append(round(seconds, 3))
            now[0] += seconds

        changed, entry = shared_state.watch(client, "quiet", 0, deadline_s=103.0, clock=lambda: now[0], sleep=sleep)
        self.assertEqual((changed, entry), (False, None))
        self.assertEqual(slept, [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 0.45])
        self.assertEqual(client.round_trips, len(slept) + 1, "one small read per poll")

    def test_bad_input_is_one_line_exit_2_and_writes_nothing(self):
        empty_file = os.path.join(self.tmp, "empty.json")
        latin1 = os.path.join(self.tmp, "latin1.json")
        open(empty_file, "w").close()
        with open(latin1, "wb") as fh:
            fh.write(b'"caf\xe9"')
        rows = [
            (("set", "a b", "1"), "has a space at character 2"),
            (("set", "a\tb", "1"), "control character"),
            (("set", "k" * 201, "1"), "1 to 200 characters, got 201"),
            (("set", "", "1"), "1 to 200 characters, got 0"),
            (("set", "k", "{"), "not valid JSON: Expecting property name"),
            (("set", "k", "hello"), "quoted JSON string"),
            (("set", "k", "NaN"), "the value is not valid JSON: NaN is not JSON"),
            # JSON as every reader takes it, as task payloads are (config.parse_data)
            (("set", "k", "1e999"), "the value is not valid JSON: 1e999 is not a finite number"),
            (("set", "k", "[1e999,-1e400]"), "1e999 is not a finite number"),
            (("set", "k", '"\\ud800"'), "a string holds a lone surrogate"),
            (("set", "k", '{"a": "x\\udc00y"}'), "a string holds a lone surrogate"),
            (("set", "k", '{"a": 1, "a": 2}'), "duplicate key 'a'"),
            (("set", "k", "1" * 30), "a whole number with 30 digits"),
            (("set", "k", "1", "--value-file", empty_file), "expected: set KEY VALUE"),
            (("set", "k", "--value-file", empty_file), "the value is empty"),
            (("set", "k", "--value-file", os.path.join(self.tmp, "nope")), "No such file"),
            (("set", "k", "--value-file", latin1), "not UTF-8 (byte 4)"),
            (("set", "k"), "expected: set KEY VALUE"),
            (("cas", "k", "1"), "cas needs --version N"),
            (("cas", "k", "--version", "-1", "1"), "--version must be a whole number"),
            (("cas", "k", "--version", "x", "1"), "--version must be a whole number"),
            (("get", "k", "--prefix", "x"), "--prefix does not apply to get"),
            (("list", "--prefix", "a b"), "prefix 'a b' has a space"),
            (("list", "--limit", "0"), "--limit must be a whole number of at least 1, got '0'"),
            (("watch", "k", "--timeout", "-1"), "--timeout must be a number of at least 0, got '-1'"),
            (("frob",), "unknown command 'frob'"),
            (("get", "k", "--loop"), "--loop works only with tick"),
        ]
        for args, message in rows:
            with self.subTest(args=args):
                result = self.kv(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertNotIn("Traceback", result.stderr)
                said = [line for line in result.stderr.splitlines() if line.startswith("state_sync.py:")]
                self.assertEqual(len(said), 1, result.stderr)
        raw = subprocess.run(self.n.argv("state_sync.py", "set", "k\udcff", "1"), env=self.n.env,
                             capture_output=True)  # argv bytes that are not UTF-8
        self.assertEqual(raw.returncode, 2)
        self.assertIn(b"not UTF-8", raw.stderr)
        self.assertEqual(self.kv_keys(), [], "bad input wrote something")
        self.ok("set", "k" * 200, "1")


# A concurrent writer: get + cas until it has made its increments; prints its conflicts.
WORKER = r"""
import contextlib, io, json, os, sys, time
scripts, go, increments, common = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
sys.path.insert(0, scripts)
import state_sync

def run(*args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = state_sync.main(list(args) + common + ["--quiet"])
    return code, out.getvalue()

print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
done = conflicts = 0
while done < increments:
    code, out = run("get", "counter", "--json")
    entry = json.loads(out)
    code, _ = run("cas", "counter", "--version", str(entry["version"]), str(entry["value"] + 1))
    if code == 0:
        done += 1
    elif code == 5:
        conflicts += 1
    else:
        sys.exit("cas exited %d" % code)
print(conflicts)
"""


if __name__ == "__main__":
    unittest.main()
