"""Redis Sentinel: finding the master, checking it is one, and surviving a failover.

Real processes only: redis-server as master and replica, the same binary in
--sentinel mode, and the project's scripts as subprocesses (one-shot ticks and
--loop). The failover tests run three nodes (heartbeat, leader_election,
failover_manager in --loop, interval 1 s, ttl 3 s) against a master, a replica
and three sentinels (quorum 2), force a failover (SENTINEL FAILOVER; kill -9
of the master) and check what a user would see: heartbeats on the new master
within about an interval of the sentinels agreeing, exactly one leader, an
epoch above every epoch seen before, every node online.
"""

import socket
import sys
import threading
import time
import unittest

from support.base import RedisCase, TempDirCase, slow  # first: puts scripts/ on sys.path
from support.nodes import FAST, RETRYING, ClusterView, NodeEnv, merge
from support.redis_server import RedisServer, Sentinel, free_port, wait_until
from distnode.core import keys
from distnode.redis import errors, sentinel
from distnode.redis.client import Redis
from support import fake_servers as fakes

NAME = "dnmaster"
SENTINEL_PW = "s3ntinel-pw"
INTERVAL_S = FAST["node"]["heartbeat_interval"]


def cluster_node(base_dir: str, node_id: str, redis: dict, secrets: dict = None) -> NodeEnv:
    """A node that finds Redis through ``redis`` (Sentinel addresses or host and port) in its config."""
    return NodeEnv(base_dir, node_id, redis=redis, secrets=secrets, config=RETRYING, timeout_s=20)


class Topology:
    """A master, a replica and ``count`` sentinels watching the master."""

    def __init__(self, count: int = 1, quorum: int = 1, sentinel_password: str = None):
        self.master = RedisServer(name="master").start()
        self.replica = RedisServer(replicaof=self.master, name="replica").start()
        self.replica.wait_replica_synced()
        extra = ["sentinel sentinel-pass %s" % sentinel_password] if sentinel_password and count > 1 else []
        self.sentinels = [Sentinel(self.master, NAME, quorum=quorum, down_after_ms=1000, failover_timeout_ms=3000,
                                   password=sentinel_password, extra_conf=extra, name="sentinel%d" % i).start()
                          for i in range(count)]
        self.servers = [self.master, self.replica] + self.sentinels

    def wait_discovered(self, timeout_s: float = 20) -> None:
        """Every sentinel knows the replica and every other sentinel (needed to agree on a failover)."""
        others = len(self.sentinels) - 1

        def ready():
            states = [s.master_state() for s in self.sentinels]
            return all(int(st["num-other-sentinels"]) == others and int(st["num-slaves"]) == 1 for st in states)
        wait_until(ready, timeout_s, interval=0.1, message="sentinels to discover each other and the replica")

    def redis_cfg(self, **extra) -> dict:
        return dict({"sentinels": [{"host": s.host, "port": s.port} for s in self.sentinels],
                     "master_name": NAME}, **extra)

    def agreed_master(self):
        """The master's (host, port) if every sentinel names the same one, else None."""
        addresses = {s.get_master_addr() for s in self.sentinels}
        return addresses.pop() if len(addresses) == 1 else None

    def close(self) -> None:
        for server in reversed(self.servers):
            server.close()


def _commands(sentinel) -> int:
    """Commands the sentinel has processed (this query included)."""
    return int(sentinel.info("stats")["total_commands_processed"])


class SentinelClientTest(TempDirCase):
    """Discovery, the ROLE check and READONLY handling, with one sentinel."""

    tmp_prefix = "dn-sentinel-"

    def setUp(self):
        super().setUp()
        self.topo = Topology()
        self.addCleanup(self.topo.close)
        self.sentinel = self.topo.sentinels[0]

    def node(self, node_id="n1", secrets=None, **redis) -> NodeEnv:
        return cluster_node(self.tmp, node_id, redis or self.topo.redis_cfg(), secrets=secrets)

    def client(self, **extra) -> Redis:
        client = Redis.from_settings(dict(self.topo.redis_cfg(**extra), host="127.0.0.1", port=1,
                                             connect_timeout=1, socket_timeout=1))
        self.addCleanup(client.close)
        return client

    def test_one_shot_tick_asks_one_sentinel_once_and_checks_the_role_once(self):
        dead = {"host": "127.0.0.1", "port": free_port()}  # listed first: skipped, not fatal
        node = self.node(sentinels=[dead, {"host": self.sentinel.host, "port": self.sentinel.port}],
                         master_name=NAME)
        before, roles_before = _commands(self.sentinel), self.topo.master.command_calls("role")
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(_commands(self.sentinel) - before, 2)  # get-master-addr-by-name + our INFO
        self.assertEqual(self.topo.master.command_calls("role") - roles_before, 1)
        self.assertIsNotNone(self.topo.master.command("GET", "hb:n1"))

    def test_without_sentinels_no_role_check(self):
        node = self.node(host=self.topo.master.host, port=self.topo.master.port)
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(self.topo.master.command_calls("role"), 0)

    def test_client_resolves_lazily_and_rechecks_after_a_while(self):
        before = _commands(self.sentinel)
        client = self.client()
        client.sentinel.recheck_s = 0.3
        self.assertEqual(_commands(self.sentinel) - before, 1)  # building the client sent nothing
        for _ in range(5):
            client.execute("SET", "k", "v")
        self.assertEqual(client.sentinel.round_trips, 1)
        self.assertEqual(client.peer, "127.0.0.1:%d" % self.topo.master.port)
        time.sleep(0.4)
        self.assertEqual(client.execute("GET", "k"), b"v")
        self.assertEqual(client.sentinel.round_trips, 2)
        self.assertEqual(client.round_trips, 6)

    def test_unknown_master_name_is_one_clear_line(self):
        node = self.node(sentinels=self.topo.redis_cfg()["sentinels"], master_name="nope")
        proc = node.run("heartbeat.py", "--quiet")
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
        self.assertIn("Redis Sentinel", proc.stderr)
        self.assertIn("'nope'", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        with self.assertRaises(sentinel.MasterNotFoundError):
            self.client(master_name="nope").execute("PING")

    def test_no_sentinel_reachable_names_them_all(self):
        ports = [free_port(), free_port()]
        node = self.node(sentinels=[{"host": "127.0.0.1", "port": p} for p in ports], master_name=NAME)
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 1)
        for port in ports:
            self.assertIn("127.0.0.1:%d" % port, proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)

    def test_role_check_refuses_a_replica_the_sentinel_names(self):
        # A sentinel with a stale or wrong view names the replica as the master.
        self.sentinel.command("SENTINEL", "REMOVE", NAME)
        self.sentinel.command("SENTINEL", "MONITOR", NAME, "127.0.0.1", self.topo.replica.port, 1)
        with self.assertRaises(errors.NotMasterError) as caught:
            self.client().execute("PING")
        self.assertIn("127.0.0.1:%d is a replica" % self.topo.replica.port, str(caught.exception))
        proc = self.node().run("heartbeat.py")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("is a replica, not the master", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)

    def test_readonly_reply_sends_the_command_again_to_the_new_master(self):
        client = self.client()
        client.sentinel.recheck_s = 60  # only the READONLY reply may make it ask again
        self.assertEqual(client.execute("SET", "k", "1"), "OK")
        master, replica = self.topo.master, self.topo.replica
        replica.command("REPLICAOF", "NO", "ONE")  # a failover by hand: the pooled connection survives it
        master.command("REPLICAOF", "127.0.0.1", replica.port)
        self.sentinel.command("SENTINEL", "REMOVE", NAME)
        self.sentinel.command("SENTINEL", "MONITOR", NAME, "127.0.0.1", replica.port, 1)
        self.assertEqual(client.execute("SET", "k", "2"), "OK")
        self.assertEqual(client.peer, "127.0.0.1:%d" % replica.port)
        self.assertEqual(client.sentinel.round_trips, 2)
        self.assertEqual(replica.command("GET", "k"), "2")

    def test_sentinel_password(self):
        self.topo.close()
        self.topo = Topology(sentinel_password=SENTINEL_PW)
        self.addCleanup(self.topo.close)
        node = self.node()
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("sentinel_password", proc.stderr)
        node.write_secrets({"redis": {"sentinel_password": "wrong-pw"}})
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 1)
        self.assertIn("refused the credentials", proc.stderr)
        self.assertNotIn("wrong-pw", proc.stderr + node.log_text())
        node.write_secrets({"redis": {"sentinel_password": SENTINEL_PW}})
        proc = node.run("heartbeat.py")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn(SENTINEL_PW, proc.stderr + node.log_text())
        self.assertIsNotNone(self.topo.master.command("GET", "hb:n1"))

    def test_status_and_health_show_the_server_in_use(self):
        node = self.node()
        self.assertEqual(node.run("heartbeat.py").returncode, 0)
        status = node.run_json("node_manager.py", "status")
        server = status["server"]
        self.assertEqual(server["address"], "127.0.0.1:%d" % self.topo.master.port)
        self.assertEqual(server["role"], "master")
        self.assertEqual(server["replicas_online"], 1)
        self.assertEqual(server["sentinel"]["master_name"], NAME)
        self.assertEqual(server["persistence"]["detail"], "off")
        text = node.run("node_manager.py", "status").stdout
        self.assertIn("redis: 127.0.0.1:%d (master, 1 replica online" % self.topo.master.port, text)
        self.assertIn("via Sentinel master %r" % NAME, text)
        self.assertIn("warning: persistence: off", text)
        self.assertIn("only 1 sentinel(s)", text)
        health = node.run("node_manager.py", "health")
        self.assertIn("persistence warn", health.stdout.replace("  ", " "))
        self.assertIn("role", health.stdout)

    def test_submit_returns_only_once_a_replica_has_the_task(self):
        node = self.node()
        node.update_config({"election": {"min_replicas_acked": 1, "replica_wait_ms": 300},
                            "tasks": {"handlers": {"noop": ["true"]}}})
        client = self.client()  # a replica fresh from its first sync acknowledges nothing for about a second
        wait_until(lambda: client.request([("SET", "warm", "1"), ("WAIT", 1, 100)])[1] == 1, 10,
                   message="the replica to acknowledge writes")
        waits = self.topo.master.command_calls("wait")
        proc = node.run("task_queue.py", "submit", "--type", "noop", "--key", "a")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        first = proc.stdout.strip()
        self.assertEqual(self.topo.master.command_calls("wait") - waits, 1)  # in the submit's round trip
        self.topo.replica.pause()  # connected but acknowledging nothing
        self.addCleanup(self.topo.replica.resume)
        proc = node.run("task_queue.py", "submit", "--type", "noop", "--key", "b", "--quiet")
        self.topo.replica.resume()
        self.assertEqual(proc.returncode, 1)
        self.assertEqual(proc.stdout, "")  # no id: not confirmed
        self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
        self.assertIn("may not survive a failover", proc.stderr)
        self.assertIn("same --key b", proc.stderr)
        self.topo.replica.wait_replica_synced()
        again = node.run("task_queue.py", "submit", "--type", "noop", "--key", "b")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertNotEqual(again.stdout.strip(), first)
        self.assertEqual(self.topo.master.command("ZCARD", keys.task_index("pending")), 2)  # b queued once


class SentinelFailoverTest(TempDirCase):
    """Three nodes in --loop against a master, a replica and three sentinels; then a failover."""

    tmp_prefix = "dn-failover-"

    def setUp(self):
        super().setUp()
        self.topo = Topology(count=3, quorum=2)
        self.addCleanup(self.topo.close)
        self.topo.wait_discovered()
        self.nodes = [cluster_node(self.tmp, "n%d" % i, self.topo.redis_cfg()) for i in (1, 2, 3)]
        for node in self.nodes:
            node.spawn_all()
            self.addCleanup(node.stop_all)
        self.view = ClusterView(self.nodes)

    def failover(self, trigger) -> None:
        old, new, view = self.topo.master, self.topo.replica, self.view
        view.wait_steady(old)
        time.sleep(INTERVAL_S)  # a few renewals at this epoch
        seen = view.epochs_seen(old)
        trigger()
        wait_until(lambda: self.topo.agreed_master() == new.address, 30, interval=0.05,
                   message="the sentinels to agree on the new master")
        sec, usec = new.command("TIME")
        agreed_at = int(sec) + int(usec) / 1e6
        started = time.monotonic()

        def all_beat():
            members = view.members(new)
            return all(members.get(n.node_id, (None, 0, False))[1] >= agreed_at for n in self.nodes)
        wait_until(all_beat, 10, interval=0.05, message="heartbeats on the new master")
        resumed_s = time.monotonic() - started
        # one interval, plus slack for a loaded machine
        self.assertLess(resumed_s, INTERVAL_S + 1.0, "heartbeats resumed %.2fs after the sentinels agreed" % resumed_s)

        # Settled means settled on the new master: a lease replicated from the old master can
        # look steady for a moment before its holder's first election step on the new one.
        master = "%s:%d" % new.address

        def settled_on_new():
            state = view.steady(new)
            holder = state and [n for n in self.nodes if n.node_id == state[0]][0]
            return state if holder and holder.memory().get("redis_master") == master else None
        leader, epoch = wait_until(settled_on_new, 20, interval=0.1,
                                   message="one leader that has stepped on the new master")
        self.assertGreater(epoch, seen, "epoch after the failover must be above every epoch seen before")
        for _ in range(10):  # and it stays that way: one leader, nobody else believing otherwise
            time.sleep(0.2)
            self.assertEqual(view.believers(), [leader])
            self.assertEqual(new.command("GET", "openclaw:cluster:leader"), leader)
        elected = view.elected_epochs(new)
        self.assertEqual(elected, sorted(set(elected)), "leader_elected epochs must strictly grow")
        self.assertEqual(elected[-1], epoch)

        status = self.nodes[0].run_json("node_manager.py", "status")
        self.assertEqual(status["server"]["address"], "127.0.0.1:%d" % new.port)
        self.assertEqual(status["server"]["role"], "master")
        self.assertEqual(status["leader"], leader)
        self.assertEqual(self.nodes[1].run("heartbeat.py").returncode, 0)  # one-shot ticks follow too

    def test_forced_failover(self):
        self.failover(lambda: self.topo.sentinels[0].command("SENTINEL", "FAILOVER", NAME))

    def test_master_killed(self):
        self.failover(self.topo.master.kill)


class SentinelTaskQueueTest(TempDirCase):
    """No confirmed task lost when the master is killed, with election.min_replicas_acked 1.

    Three nodes run the usual loops plus ``task_queue.py work --loop``; a
    submitter submits tasks with idempotency keys before, during and after a
    ``kill -9`` of the master, retrying a failed submit with the same key
    until it is confirmed. The old master comes back as a replica of the new
    one (a confirmed submit needs one). Every confirmed task must end
    ``done`` on the new master.
    """

    TASK_CONFIG = {"election": {"min_replicas_acked": 1, "replica_wait_ms": 300},
                   "tasks": {"handlers": {"noop": ["true"]}, "poll_interval_s": 0.1, "backoff_base_s": 0}}
    tmp_prefix = "dn-failover-tasks-"

    def setUp(self):
        super().setUp()
        self.topo = Topology(count=3, quorum=2)
        self.addCleanup(self.topo.close)
        self.topo.wait_discovered()
        config = merge(RETRYING, self.TASK_CONFIG)
        self.nodes = [NodeEnv(self.tmp, "n%d" % i, redis=self.topo.redis_cfg(), config=config, timeout_s=20)
                      for i in (1, 2, 3)]
        for node in self.nodes:
            node.spawn_all()
            node.spawn("task_queue.py", "work", "--loop", "--quiet")
            self.addCleanup(node.stop_all)
        self.confirmed = {}  # idempotency key -> task id printed by a confirmed submit
        self.failures = []  # stderr lines of failed submits
        self.stop = threading.Event()

    def submitter(self, count_before_stop: int) -> None:
        """Submit keys k0, k1, ... one at a time; a failed submit is retried with the same key."""
        node, i = self.nodes[0], 0
        while not self.stop.is_set() or len(self.confirmed) < count_before_stop:
            key = "k%d" % i
            proc = node.run("task_queue.py", "submit", "--type", "noop", "--key", key, "--quiet")
            if proc.returncode == 0:
                self.confirmed[key] = proc.stdout.strip()
                i += 1
            else:
                self.failures.append(proc.stderr.strip())
                time.sleep(0.1)
            if time.monotonic() > self.deadline:
                return

    @slow("a Sentinel failover under a stream of submits")
    def test_master_killed_loses_no_confirmed_task(self):
        old, new = self.topo.master, self.topo.replica
        ClusterView(self.nodes).wait_steady(old)
        self.deadline = time.monotonic() + 25
        thread = threading.Thread(target=self.submitter, args=(1,), daemon=True)
        thread.start()
        wait_until(lambda: len(self.confirmed) >= 8, 10, interval=0.05, message="tasks submitted before the kill")
        old.kill()
        wait_until(lambda: self.topo.agreed_master() == new.address, 30, interval=0.05,
                   message="the sentinels to agree on the new master")
        during = len(self.confirmed)
        old.restart(keep_data=False)  # back, empty, as the new master's replica
        old.command("REPLICAOF", new.host, new.port)
        old.wait_replica_synced()
        wait_until(lambda: len(self.confirmed) >= during + 8, 15, interval=0.05, message="tasks submitted after")
        self.stop.set()
        thread.join(30)
        self.assertFalse(thread.is_alive(), "the submitter did not finish")
        self.assertGreaterEqual(len(self.confirmed), 16)

        def states():
            return {key: new.command("HGET", keys.task(tid), "state") for key, tid in self.confirmed.items()}
        try:
            wait_until(lambda: all(v == "done" for v in states().values()), 15, interval=0.2,
                       message="every confirmed task done on the new master")
        except Exception:
            lost = {k: v for k, v in states().items() if v != "done"}
            self.fail("confirmed tasks not done on the new master: %s" % lost)
        for line in self.failures:
            self.assertEqual(len(line.splitlines()), 1, line)
            self.assertNotIn("Traceback", line)
        unconfirmed = sum("may not survive a failover" in f for f in self.failures)
        ids = set(self.confirmed.values())
        tasks_on_new = [k for k in new.command("KEYS", keys.task("*")) if k.rsplit(":", 1)[-1] not in ids]
        runs = sum(max(0, int(new.command("HGET", keys.task(tid), "runs") or 0) - 1) for tid in ids)
        print("\n%d tasks confirmed, none lost; %d failed submits retried (%d short of replicas); "
              "duplicates: %d extra task(s), %d extra run(s)"
              % (len(ids), len(self.failures), unconfirmed, len(tasks_on_new), runs), file=sys.stderr)


def _sentinel_reply(host: str, port: int) -> bytes:
    h, p = host.encode(), str(port).encode()
    return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(h), h, len(p), p)


class SentinelAnswerTest(RedisCase):
    """Issue 13 items 2 and 3, against fake sentinels: a malformed answer sends the client to the
    next sentinel, and the sentinels' query counts against the request's one deadline."""

    redis_options = {"name": "named-master"}

    LIES = [b"+OK\r\n", b":5\r\n", b"*1\r\n$9\r\n127.0.0.1\r\n", b"*2\r\n$9\r\n127.0.0.1\r\n$3\r\nabc\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n99999\r\n", b"*2\r\n$9\r\n127.0.0.1\r\n$2\r\n-1\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$1\r\n0\r\n", b"*2\r\n*0\r\n$4\r\n6379\r\n", b"*2\r\n$0\r\n\r\n$4\r\n6379\r\n",
            b"*3\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n$1\r\nx\r\n", b"*2\r\n+127.0.0.1\r\n:6379\r\n",
            b"*2\r\n$9\r\n127.0.0.1\r\n$5\r\n 6379\r\n"]

    def test_malformed_sentinel_answer_asks_the_next_sentinel(self):
        good_reply = _sentinel_reply(self.server.host, self.server.port)
        for lie in self.LIES:
            with self.subTest(lie=lie), fakes.FakeServer(fakes.canned(lie)) as bad, \
                    fakes.FakeServer(fakes.canned(good_reply)) as good:
                resolver = sentinel.SentinelResolver([{"host": bad.host, "port": bad.port},
                                                      {"host": good.host, "port": good.port}], "m",
                                                     connect_timeout_s=2, socket_timeout_s=2)
                self.assertEqual(resolver.master_address(), (self.server.host, self.server.port))
                resolver = sentinel.SentinelResolver([{"host": bad.host, "port": bad.port}], "m",
                                                     connect_timeout_s=2, socket_timeout_s=2)
                with self.assertRaises(sentinel.MasterNotFoundError) as ctx:
                    resolver.master_address()
                self.assertIn("127.0.0.1:%d" % bad.port, str(ctx.exception))

    def test_sentinel_query_and_resend_count_against_one_request(self):
        # The sentinel answers in ~0.7 s; it names a replica first, the real master after.
        # Sentinel, replica, sentinel again: 1.4 s, past connect_timeout + socket_timeout (1.2 s).
        replica_role = b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:1\r\n$9\r\nconnected\r\n:0\r\n"
        with fakes.FakeServer(fakes.canned(replica_role)) as replica:
            answers = [_sentinel_reply(replica.host, replica.port), _sentinel_reply(self.server.host, self.server.port)]

            def slow_sentinel(sock, fake):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                reply = answers[min(fake.connections, 2) - 1]
                for _command in fakes._each_command(sock, fake):
                    for i in range(len(reply)):
                        sock.sendall(reply[i:i + 1])
                        time.sleep(0.7 / len(reply))
            with fakes.FakeServer(slow_sentinel) as sent:
                resolver = sentinel.SentinelResolver([{"host": sent.host, "port": sent.port}], "m",
                                                     connect_timeout_s=0.2, socket_timeout_s=1)
                r = Redis("127.0.0.1", 1, sentinel=resolver, connect_timeout_s=0.2, socket_timeout_s=1)
                self.addCleanup(r.close)
                with self.assertRaises(errors.RedisConnectionError) as ctx:  # the sentinels' query ran out of time
                    r.execute("PING")
        self.assertIn("no complete reply", str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
