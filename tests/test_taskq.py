"""The task queue's state machine (scripts/taskq.py, lua.TASK_*) against a real redis-server.

Most tests drive taskq in-process with one Context per simulated node, so
they can stop a worker between two steps (claimed, not finished) the way a
crash would; test_task_queue.py runs the CLI as separate processes. The
last test records every command Redis receives (MONITOR) while the CLI and
the leader run a task workload, and checks it against Redis 5.0's command set.
"""

import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scripts"))

from distnode.core import keys  # noqa: E402
from distnode.run import runner  # noqa: E402
from distnode.tasks import queue as taskq  # noqa: E402
from support import tasks  # noqa: E402
from support.nodes import NodeEnv, process_alive, wait_for  # noqa: E402

HANDLERS = dict(
    tasks.HANDLERS,
    flaky=["sh", "-c", 'if [ "$TASK_ATTEMPT" = 1 ]; then echo not yet >&2; exit 1; fi; echo "ok $TASK_ATTEMPT"'],
    env=["sh", "-c", 'echo "$TASK_ID $TASK_TYPE $TASK_ATTEMPT $TASK_MAX_ATTEMPTS $NODE_ID"'],
)
CLI_TASKS = {"handlers": HANDLERS, "backoff_base_s": 0}
SERVER = None


def setUpModule():  # noqa: N802 - unittest API
    global SERVER
    SERVER = tasks.start_server("taskq")


def tearDownModule():  # noqa: N802
    SERVER.close()


class TaskQueueTestCase(unittest.TestCase):
    def setUp(self):
        SERVER.flushall()
        self.tmp = tempfile.mkdtemp(prefix="taskq-")
        self.ctxs = []

    def tearDown(self):
        tasks.close_contexts(self.ctxs)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def ctx(self, node_id: str, **overrides) -> runner.Context:
        """A Context for node ``node_id`` with test handlers and no retry backoff unless given."""
        base = os.path.join(self.tmp, "%s-%d" % (node_id, len(self.ctxs)))
        settings = dict({"handlers": HANDLERS, "backoff_base_s": 0, "reclaim_grace_s": 0}, **overrides)
        ctx = tasks.local_context(base, node_id, SERVER, settings)
        self.ctxs.append(ctx)
        return ctx

    def claim(self, ctx) -> taskq.Task:
        task, _, _ = taskq._claim(ctx, taskq.worker_streams(ctx), read_new=True)
        self.assertIsNotNone(task, "nothing to claim")
        return task

    def make_leader(self, node_id: str = "leader", epoch: int = 7) -> runner.Context:
        ctx = self.ctx(node_id)
        SERVER.command("SET", keys.leader(), node_id, "PX", 60000)
        SERVER.command("SET", keys.epoch(), epoch)
        SERVER.command("SET", keys.heartbeat(node_id), "1", "PX", 60000)
        from distnode.core import local_state
        SERVER.command("HSET", keys.term(), "node", node_id, "epoch", epoch, "confirmed", "1",
                       "instance", local_state.instance_token(ctx.cfg.run_dir, node_id))
        return ctx

    def state(self, task_id: str) -> dict:
        return taskq.status(self.ctxs[0], task_id)

    def zcard(self, state: str) -> int:
        return SERVER.command("ZCARD", keys.task_index(state))

    def lapse(self, task_id: str) -> None:
        """The attempt lease lapses, as Redis lets it when its worker stopped renewing for
        node.heartbeat_ttl (a claim in these tests runs no handler, so nothing renews it)."""
        SERVER.command("DEL", keys.task_lease(task_id))
        SERVER.command("HSET", keys.task(task_id), "lease_until_ms", 0)


class SubmitAndWork(TaskQueueTestCase):
    def test_submit_work_stores_result_and_acks(self):
        a, b = self.ctx("a"), self.ctx("b")
        tid = taskq.submit(a, "echo", '{"x": 1}')["id"]
        self.assertEqual(self.state(tid)["state"], "pending")
        result = taskq.work_tick(b)
        self.assertEqual((result["ran"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["result"], rec["worker"], rec["attempts"]), ("done", '{"x": 1}', "b", 1))
        self.assertGreaterEqual(rec["finished_at"], rec["started_at"])
        self.assertEqual(SERVER.command("XPENDING", keys.task_stream(), taskq.GROUP)[0], 0)
        self.assertEqual((self.zcard("pending"), self.zcard("running"), self.zcard("done")), (0, 0, 1))
        self.assertGreater(SERVER.command("PTTL", keys.task(tid)), 0)  # done records expire

    def test_handler_environment(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "env", "{}", max_attempts=5)["id"]
        taskq.work_tick(a)
        self.assertEqual(self.state(tid)["result"], "%s env 1 5 a\n" % tid)

    def test_empty_queue_tick_is_one_round_trip(self):
        a = self.ctx("a")
        taskq.work_tick(a)  # creates the groups
        before = a.redis.round_trips
        result = taskq.work_tick(a)
        self.assertEqual(result["ran"], 0)
        self.assertEqual(a.redis.round_trips - before, 1)

    def test_failure_then_success(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "flaky", "{}")["id"]
        result = taskq.work_tick(a)
        self.assertEqual((result["retry"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["result"]), ("done", 2, "ok 2\n"))
        self.assertEqual(rec["error"], "exit 1: not yet")

    def test_backoff_delays_the_retry(self):
        a = self.ctx("a", backoff_base_s=30)
        tid = taskq.submit(a, "flaky", "{}")["id"]
        self.assertEqual(taskq.work_tick(a)["retry"], 1)
        rec = self.state(tid)
        self.assertEqual(rec["state"], "pending")
        self.assertAlmostEqual(rec["due_at"] - rec["updated_at"], 30, delta=0.01)
        self.assertEqual(taskq.work_tick(a)["ran"], 0)  # not due yet
        SERVER.command("ZADD", keys.task_delayed(), 0, tid)  # make it due
        self.assertEqual(taskq.work_tick(a)["done"], 1)

    def test_timeout_kills_the_handler_and_its_children(self):
        pid_file = os.path.join(self.tmp, "pid")
        a = self.ctx("a", handlers={"slow": ["sh", "-c", "sleep 30 & echo $! > %s; wait" % pid_file]})
        tid = taskq.submit(a, "slow", "{}", timeout_s=0.5, max_attempts=1)["id"]
        t0 = time.monotonic()
        self.assertEqual(taskq.work_tick(a)["dead"], 1)
        self.assertLess(time.monotonic() - t0, 10)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["error"]), ("dead", "timed out after 0.5s: killed"))
        with open(pid_file) as fh:
            child = int(fh.read())
        self.assertFalse(process_alive(child), "the handler's child survived its timeout")

    def test_max_attempts_dead_letter_then_retry(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "fail", '{"n": 1}', max_attempts=2)["id"]
        result = taskq.work_tick(a)
        self.assertEqual((result["retry"], result["dead"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["error"]), ("dead", 2, "exit 3: boom"))
        dead = SERVER.command("XRANGE", keys.task_dead(), "-", "+")
        self.assertEqual(len(dead), 1)
        fields = dict(zip(dead[0][1][::2], dead[0][1][1::2]))
        self.assertEqual((fields["task"], fields["error"], fields["attempts"]), (tid, "exit 3: boom", "2"))
        self.assertEqual(taskq.retry(a, tid), "ok")
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 0)
        self.assertEqual(SERVER.command("PTTL", keys.task(tid)), -1)
        self.assertEqual(taskq.retry(a, tid), "pending")
        fixed = self.ctx("b", handlers=dict(HANDLERS, fail=["echo", "fixed"]))
        self.assertEqual(taskq.work_tick(fixed)["done"], 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["runs"], rec["result"]), ("done", 1, 3, "fixed\n"))
        self.assertEqual(taskq.retry(a, "no-such-task"), "missing")

    def test_unknown_type_fails_with_a_clear_error(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "nope", "{}", max_attempts=1)["id"]
        taskq.work_tick(a)
        self.assertIn("no handler for task type 'nope' on node a", self.state(tid)["error"])

    def test_idempotency_key(self):
        a = self.ctx("a")
        first = taskq.submit(a, "true", "{}", key="order-42")
        again = taskq.submit(a, "true", '{"other": 1}', key="order-42")
        self.assertTrue(first["created"])
        self.assertEqual((again["id"], again["created"]), (first["id"], False))
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 1)
        taskq.work_tick(a)
        self.assertFalse(taskq.submit(a, "true", "{}", key="order-42")["created"])  # done: still remembered
        self.assertEqual(taskq.purge(a, "done", 0), 1)
        self.assertIsNone(SERVER.command("GET", keys.task_idempotency("order-42")))
        self.assertTrue(taskq.submit(a, "true", "{}", key="order-42")["created"])  # purged: free again

    def test_resubmit_with_same_id_finds_the_task(self):
        a = self.ctx("a")
        first = taskq.submit(a, "true", "{}", task_id="fixed-id")
        again = taskq.submit(a, "true", "{}", task_id="fixed-id")
        self.assertEqual((first["id"], again["id"], again["created"]), ("fixed-id", "fixed-id", True))
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 1)

    def test_targeted_task_runs_only_on_its_node(self):
        a, b = self.ctx("a"), self.ctx("b")
        SERVER.command("HSET", keys.nodes(), "b", "{}")
        sub = taskq.submit(a, "env", "{}", target="b")
        self.assertTrue(sub["target_known"])
        self.assertFalse(taskq.submit(a, "true", "{}", target="ghost")["target_known"])
        self.assertEqual(taskq.work_tick(a)["ran"], 0)
        self.assertEqual(taskq.work_tick(b)["done"], 1)
        self.assertEqual(self.state(sub["id"])["worker"], "b")

    def test_result_is_capped(self):
        a = self.ctx("a", result_max_bytes=10)
        tid = taskq.submit(a, "echo", '"%s"' % ("x" * 100))["id"]
        taskq.work_tick(a)
        rec = self.state(tid)
        self.assertEqual((rec["result"], rec["result_truncated"]), ('"xxxxxxxxx', True))

    def test_max_per_tick_and_leftover_release(self):
        a = self.ctx("a", max_per_tick=3)
        SERVER.command("HSET", keys.nodes(), "a", "{}")
        taskq.submit(a, "true", "{}", target="a")
        for _ in range(4):
            taskq.submit(a, "true", "{}")
        result = taskq.work_tick(a)
        self.assertEqual(result["ran"], 3)
        # nothing is left delivered-but-unstarted in this node's pending lists
        for stream in taskq.worker_streams(a):
            self.assertEqual(SERVER.command("XPENDING", stream, taskq.GROUP)[0], 0)
        self.assertEqual(taskq.work_tick(a)["ran"], 2)
        self.assertEqual(self.zcard("done"), 5)

    def test_stream_trim_never_drops_undelivered_entries(self):
        a = self.ctx("a", stream_maxlen=5, max_per_tick=100)
        ids = [taskq.submit(a, "true", "{}")["id"] for _ in range(20)]
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 20)
        self.assertEqual(taskq.work_tick(a)["done"], 20)
        taskq.submit(a, "true", "{}")
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 5)
        self.assertEqual(taskq.work_tick(a)["done"], 1)
        self.assertTrue(all(self.state(t)["state"] == "done" for t in ids))

    def test_list_stats_purge(self):
        a = self.ctx("a")
        done = taskq.submit(a, "true", "{}")["id"]
        taskq.work_tick(a)
        dead = taskq.submit(a, "fail", "{}", max_attempts=1)["id"]
        taskq.work_tick(a)
        waiting = taskq.submit(a, "true", "{}")["id"]
        self.assertEqual([t["id"] for t in taskq.list_tasks(a)], [waiting, dead, done])
        self.assertEqual([t["id"] for t in taskq.list_tasks(a, "dead")], [dead])
        st = taskq.stats(a)
        self.assertEqual((st["depth"], st["running"], st["done"], st["dead"], st["dead_letters"]), (1, 0, 1, 1, 1))
        self.assertGreaterEqual(st["oldest_pending_age_s"], 0)
        claimed = self.claim(a)
        self.assertEqual(taskq.stats(a)["in_flight_by_node"], {"a": 1})
        self.assertEqual(claimed.id, waiting)
        self.assertEqual(taskq.purge(a, "done", 3600), 0)
        self.assertEqual(taskq.purge(a, "done", 0), 1)
        self.assertEqual(taskq.purge(a, "dead", 0), 1)
        self.assertIsNone(taskq.status(a, done))
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 0)


class CrashesAndReclaim(TaskQueueTestCase):
    def test_interrupted_attempt_is_counted_by_the_next_tick(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "echo", '"hi"')["id"]
        self.claim(a)  # then "crash": no finish
        self.lapse(tid)
        again = self.ctx("a")
        again.instance_token = taskq._instance(a)  # the same instance (its run dir)
        result = taskq.work_tick(again)  # the next tick of the same node
        self.assertEqual((result["interrupted"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["runs"]), ("done", 2, 2))
        self.assertIn("interrupted", rec["error"])

    def test_offline_worker_reclaimed_and_stale_finish_ignored(self):
        w1, w2, leader = self.ctx("w1"), self.ctx("w2"), self.make_leader()
        tid = taskq.submit(w1, "echo", '"first"')["id"]
        stuck = self.claim(w1)  # w1 has no hb key: it is offline
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 1))
        self.assertIn("worker w1 is offline or has left", rec["error"])
        self.assertEqual(SERVER.command("XPENDING", keys.task_stream(), taskq.GROUP)[0], 0)
        self.assertEqual(taskq.work_tick(w2)["done"], 1)
        self.assertEqual(taskq._finish(w1, stuck, True, b"late", ""), "stale")
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["result"], rec["worker"], rec["attempts"]), ("done", '"first"', "w2", 2))

    def test_reclaim_is_fenced(self):
        w1, leader = self.ctx("w1"), self.make_leader(epoch=7)
        tid = taskq.submit(w1, "true", "{}")["id"]
        self.claim(w1)
        self.assertEqual(taskq.reclaim(leader, 6), 0)
        SERVER.command("SET", keys.leader(), "someone-else", "PX", 60000)
        self.assertEqual(taskq.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        with open(leader.log.path) as fh:
            self.assertIn("task reclaim refused: FENCED", fh.read())

    def test_reclaim_dead_letters_when_attempts_are_used_up(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = taskq.submit(w1, "true", "{}", max_attempts=1)["id"]
        self.claim(w1)
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(self.state(tid)["state"], "dead")
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 1)

    def test_unstarted_entry_of_offline_worker_is_requeued_without_an_attempt(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = taskq.submit(w1, "true", "{}")["id"]
        SERVER.command("XREADGROUP", "GROUP", taskq.GROUP, "w1", "COUNT", 1, "STREAMS", keys.task_stream(), ">")
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))
        self.assertEqual(taskq.work_tick(leader)["done"], 1)

    def test_hung_worker_on_a_live_node_is_reclaimed_after_timeout_and_grace(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)  # w1 is alive
        tid = taskq.submit(w1, "true", "{}", timeout_s=2)["id"]  # 2 s: still within it below, however loaded
        self.claim(w1)
        self.assertEqual(taskq.reclaim(leader, 7), 0)  # within its timeout
        time.sleep(2.2)  # at least past it
        self.assertEqual(taskq.reclaim(leader, 7), 0)  # its attempt lease still holds
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual(rec["state"], "pending")
        self.assertIn("no result from w1", rec["error"])

    def test_grace_is_respected(self):
        w1, _ = self.ctx("w1"), self.make_leader()
        leader = self.ctx("leader", reclaim_grace_s=30)
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)
        taskq.submit(w1, "true", "{}", timeout_s=0.1)
        self.claim(w1)
        time.sleep(0.3)
        self.assertEqual(taskq.reclaim(leader, 7), 0)

    def test_running_task_whose_entry_was_acked_is_still_reclaimed(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)
        tid = taskq.submit(w1, "true", "{}", timeout_s=0.2)["id"]
        task = self.claim(w1)
        SERVER.command("XACK", task.stream, taskq.GROUP, task.entry)  # the entry is gone from every PEL
        time.sleep(0.4)
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(self.state(tid)["state"], "pending")
        self.assertEqual(taskq.work_tick(leader)["done"], 1)

    def test_pending_task_whose_entry_was_deleted_is_requeued(self):
        a, leader = self.ctx("a"), self.make_leader()
        tid = taskq.submit(a, "true", "{}")["id"]
        SERVER.command("XDEL", keys.task_stream(), self.state(tid)["entry"])
        self.assertEqual(taskq.work_tick(a)["ran"], 0)
        time.sleep(0.01)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(taskq.work_tick(a)["done"], 1)

    def test_hand_back_does_not_count_the_attempt(self):
        w1, w2 = self.ctx("w1"), self.ctx("w2")
        tid = taskq.submit(w1, "echo", '"x"')["id"]
        running = self.claim(w1)
        self.assertEqual(taskq.hand_back(w1), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))
        self.assertEqual(taskq.work_tick(w2)["done"], 1)
        self.assertEqual(taskq._finish(w1, running, True, b"late", ""), "stale")
        self.assertEqual(self.state(tid)["attempts"], 1)

    def test_reclaim_cost_does_not_grow_with_nodes(self):
        leader = self.make_leader()
        for i in range(30):
            w = self.ctx("w%d" % i)
            tid = taskq.submit(w, "true", "{}", target="w%d" % i)["id"]
            self.claim(w)
            self.lapse(tid)
        before = leader.redis.round_trips
        self.assertEqual(taskq.reclaim(leader, 7), 30)
        self.assertEqual(leader.redis.round_trips - before, 1)


# Every command of Redis 5.0 (its command table), and those it refuses inside Lua ("s" flag).
REDIS5_COMMANDS = frozenset("""
module get set setnx setex psetex append strlen del unlink exists setbit getbit bitfield setrange getrange
substr incr decr mget rpush lpush rpushx lpushx linsert rpop lpop brpop brpoplpush blpop llen lindex lset
lrange ltrim lrem rpoplpush sadd srem smove sismember scard spop srandmember sinter sinterstore sunion
sunionstore sdiff sdiffstore smembers sscan zadd zincrby zrem zremrangebyscore zremrangebyrank
zremrangebylex zunionstore zinterstore zrange zrangebyscore zrevrangebyscore zrangebylex zrevrangebylex
zcount zlexcount zrevrange zcard zscore zrank zrevrank zscan zpopmin zpopmax bzpopmin bzpopmax hset hsetnx
hget hmset hmget hincrby hincrbyfloat hdel hlen hstrlen hkeys hvals hgetall hexists hscan incrby decrby
incrbyfloat getset mset msetnx randomkey select swapdb move rename renamenx expire expireat pexpire
pexpireat keys scan dbsize auth ping echo save bgsave bgrewriteaof shutdown lastsave type multi exec
discard sync psync replconf flushdb flushall sort info monitor ttl touch pttl persist slaveof replicaof
role debug config subscribe unsubscribe psubscribe punsubscribe publish pubsub watch unwatch cluster
restore restore-asking migrate asking readonly readwrite dump object memory client eval evalsha slowlog
script time bitop bitcount bitpos wait command geoadd georadius georadius_ro georadiusbymember
georadiusbymember_ro geohash geopos geodist pfselftest pfadd pfcount pfmerge pfdebug xadd xrange xrevrange
xlen xread xreadgroup xgroup xsetid xack xpending xclaim xinfo xdel xtrim post host: latency lolwut
""".split())
REDIS5_NOSCRIPT = frozenset("""
module brpop brpoplpush blpop bzpopmin bzpopmax auth save bgsave bgrewriteaof shutdown multi exec discard
sync psync replconf monitor slaveof replicaof role debug config subscribe unsubscribe psubscribe
punsubscribe watch unwatch client eval evalsha script wait latency xread xreadgroup
""".split())
# Options newer than 5.0 of commands that exist in 5.0 (MKSTREAM landed on 5.0's release day: avoided too).
NEWER_OPTIONS = {
    "xadd": {"NOMKSTREAM", "MINID", "LIMIT"}, "xtrim": {"MINID", "LIMIT"}, "xpending": {"IDLE"},
    "xgroup": {"CREATECONSUMER", "ENTRIESREAD", "MKSTREAM"}, "xclaim": {"LASTID"}, "xreadgroup": {"CLAIM"},
    "set": {"GET", "KEEPTTL", "EXAT", "PXAT"}, "zadd": {"GT", "LT"},
    "zrange": {"BYSCORE", "BYLEX", "REV", "LIMIT"}, "expire": {"NX", "XX", "GT", "LT"},
    "pexpire": {"NX", "XX", "GT", "LT"}, "info": {"EVERYTHING"},
}
_MONITOR_LINE = re.compile(r'^\+?\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """Collect MONITOR lines from a background thread until stop()."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=0.2)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.lines, self._buf, self._stop = [], b"", threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            self._buf += data
            *done, self._buf = self._buf.split(b"\r\n")
            self.lines += [line.decode("utf-8", "replace") for line in done]

    def stop(self):
        time.sleep(0.2)
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def commands(self):
        """(source, command name in lower case, upper-cased words) for each line; source 'lua' for scripts."""
        for line in self.lines:
            match = _MONITOR_LINE.match(line)
            if not match:
                continue
            words = _QUOTED.findall(match.group(2))
            if words:
                yield match.group(1), words[0].lower(), {w.upper() for w in words[1:] if len(w) < 32}


class Issue13(TaskQueueTestCase):
    """Secrets, bounded output, an unstarvable repair sweep, a duplicate node id (issue 13)."""

    def test_a_handler_gets_no_redis_credential_in_its_environment(self):
        a = self.ctx("a", handlers={"env": ["env"]})
        secret = "pw-%s" % os.urandom(4).hex()
        with mock.patch.dict(os.environ, REDIS_PASSWORD=secret, REDISCLI_AUTH=secret, MY_REDIS_SECRET=secret):
            tid = taskq.submit(a, "env", "{}")["id"]
            self.assertEqual(taskq.work_tick(a)["done"], 1)
        rec = self.state(tid)
        self.assertTrue("TASK_ID=%s" % tid in rec["result"], "the handler's own variables are there")
        self.assertFalse(secret in rec["result"], "a handler saw the Redis password")

    def test_a_password_inside_another_variable_or_a_redis_url_never_reaches_a_handler(self):
        a = self.ctx("a", handlers={"env": ["env"]})
        secret = "pw-%s" % os.urandom(4).hex()
        a.cfg["redis"]["sentinel_password"] = secret  # a password of the config; the test server needs none
        planted = {
            "MY_REDIS_URL": "redis://:%s@127.0.0.1:6379/0" % secret,  # the password inside a URL
            "APP_DSN": "postgres://app:%s@db/app" % secret,          # inside any other variable
            "CACHE_REDIS_URI": "redis://cache-host:6379/0",            # a Redis URL with no password seen
            "INNOCENT_VAR": "kept",
        }
        with mock.patch.dict(os.environ, planted):
            tid = taskq.submit(a, "env", "{}")["id"]
            self.assertEqual(taskq.work_tick(a)["done"], 1)
        result = self.state(tid)["result"]
        self.assertTrue("INNOCENT_VAR=kept" in result, "an unrelated variable is kept")
        self.assertFalse(secret in result, "a handler saw a password embedded in a variable's value")
        for name in ("MY_REDIS_URL", "APP_DSN", "CACHE_REDIS_URI"):
            self.assertFalse(name + "=" in result, "%s reached the handler" % name)

    def test_a_short_password_is_dropped_only_by_exact_value(self):
        from distnode.procs import child
        env = child.clean_env({"redis": {"password": "ab"}}, base={"EXACT": "ab", "WORD": "about", "HOME": "/h"})
        self.assertEqual(env, {"WORD": "about", "HOME": "/h"})

    def test_output_past_the_cap_is_read_and_dropped_with_a_note(self):
        spool = os.path.join(self.tmp, "spool")
        os.mkdir(spool)
        a = self.ctx("a", max_output_bytes=1 << 20, result_max_bytes=100,
                     handlers={"yes": ["sh", "-c", "yes | head -c 30000000"], "forever": ["yes"]})
        done_id = taskq.submit(a, "yes", "{}")["id"]
        hung_id = taskq.submit(a, "forever", "{}", timeout_s=1, max_attempts=1)["id"]
        peak = [0]
        stop = threading.Event()

        def watch():  # the biggest the temporary files got while the handlers ran
            while not stop.is_set():
                size = 0
                for name in os.listdir(spool):
                    try:
                        size += os.path.getsize(os.path.join(spool, name))
                    except OSError:
                        pass
                for pid in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
                    try:
                        target = os.readlink("/proc/self/fd/" + pid)
                        if target.startswith(spool) or "(deleted)" in target:
                            size = max(size, os.fstat(int(pid)).st_size)
                    except (OSError, ValueError):
                        pass
                peak[0] = max(peak[0], size)
                time.sleep(0.01)
        watcher = threading.Thread(target=watch)
        saved_tempdir = tempfile.tempdir
        tempfile.tempdir = spool
        watcher.start()
        try:
            result = taskq.work_tick(a)
        finally:
            stop.set()
            watcher.join()
            tempfile.tempdir = saved_tempdir
        self.assertEqual((result["done"], result["dead"]), (1, 1))
        rec = self.state(done_id)
        self.assertEqual((rec["result"], rec["result_truncated"], rec["output_bytes"]), ("y\n" * 50, True, 30000000))
        hung = self.state(hung_id)
        self.assertTrue(hung["error"].startswith("timed out after 1s: killed"), hung["error"])
        self.assertLessEqual(peak[0], 2 << 20, "a handler's output filled the disk")

    def test_the_repair_sweep_reaches_a_lost_entry_behind_tasks_for_an_absent_node(self):
        a, leader = self.ctx("a"), self.make_leader()
        for _ in range(150):
            taskq.submit(a, "true", "{}", target="gone")
        lost = taskq.submit(a, "true", "{}")["id"]
        SERVER.command("XDEL", keys.task_stream(), self.state(lost)["entry"])
        time.sleep(0.01)
        for _ in range(5):
            taskq.reclaim(leader, 7)
            if taskq.work_tick(a)["done"]:
                break
        self.assertEqual(self.state(lost)["state"], "done")
        self.assertEqual(self.zcard("pending"), 150)

    def test_a_worker_with_a_taken_node_id_claims_nothing(self):
        from distnode.cluster import membership
        real = self.ctx("a")
        membership.beat(real)
        running = taskq.submit(real, "true", "{}")["id"]
        self.claim(real)  # the real node's attempt in progress
        waiting = taskq.submit(real, "echo", '"x"')["id"]
        duplicate = self.ctx("a")  # same id, another run dir: another instance token
        self.assertNotEqual(membership.node_fields(real), membership.node_fields(duplicate))
        with self.assertRaises(Exception) as caught:
            taskq.work_tick(duplicate)
        self.assertIn("another live process", str(caught.exception))
        self.assertEqual(self.state(running)["state"], "running", "the real node's attempt was counted as failed")
        self.assertEqual((self.state(running)["attempts"], self.state(waiting)["state"]), (1, "pending"))
        with self.assertRaises(Exception):
            taskq.hand_back(duplicate)  # leaving as the real node would hand its attempt back
        self.assertEqual(self.state(running)["state"], "running")
        self.lapse(running)  # never renewed: it lapses
        result = taskq.work_tick(real)  # the real node goes on: its first attempt was interrupted (never finished)
        self.assertEqual(self.state(waiting)["state"], "done")
        self.assertEqual(self.state(waiting)["worker"], "a")
        self.assertEqual(result["interrupted"], 1)


class AttemptLease(TaskQueueTestCase):
    """A running attempt is moved only when its attempt lease lapsed in Redis (issue 13, item 8)."""

    def test_a_lost_heartbeat_does_not_reclaim_an_attempt_whose_lease_holds(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = taskq.submit(w1, "true", "{}")["id"]
        self.claim(w1)  # w1 has no hb key, as when only its heartbeat loop died
        self.assertEqual(taskq.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual((self.state(tid)["state"], self.state(tid)["attempts"]), ("pending", 1))

    def test_a_duplicate_node_id_never_counts_the_others_attempt_as_its_own(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = taskq.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        dup = self.ctx("w1")  # another run dir: another instance with the same node id
        self.assertNotEqual(taskq._instance(dup), taskq._instance(w1))
        for lapsed in (False, True):
            if lapsed:
                self.lapse(tid)
            _, _, interrupted = taskq._claim(dup, taskq.worker_streams(dup), read_new=True)
            self.assertEqual(interrupted, [])
            rec = self.state(tid)
            self.assertEqual((rec["state"], rec["token"], rec["attempts"]), ("running", task.token, 1))
        self.assertEqual(taskq.reclaim(leader, 7), 1)  # the leader moves it, once the lease lapsed

    def test_the_same_instance_counts_its_interrupted_attempt_once_the_lease_lapsed(self):
        a = self.ctx("a")
        tid = taskq.submit(a, "echo", '"hi"')["id"]
        self.claim(a)
        again = self.ctx("a")
        again.instance_token = taskq._instance(a)  # a restarted worker of the same instance
        _, _, interrupted = taskq._claim(again, taskq.worker_streams(again), read_new=True)
        self.assertEqual(interrupted, [])
        self.lapse(tid)
        self.assertEqual(taskq.work_tick(again)["interrupted"], 1)
        self.assertEqual(self.state(tid)["state"], "done")

    def test_the_worker_renews_the_lease_while_its_handler_runs(self):
        # the handler outlives node.heartbeat_ttl (3 s here) twice over, with no heartbeat at all
        w1 = self.ctx("w1", handlers={"long": ["sh", "-c", "sleep 7; echo ok"]})
        leader = self.make_leader()
        tid = taskq.submit(w1, "long", "{}")["id"]
        result = {}
        worker = threading.Thread(target=lambda: result.update(taskq.work_tick(w1)))
        worker.start()
        try:
            wait_for(lambda: self.zcard("running"), 10, message="the attempt to start")
            while worker.is_alive():
                self.assertEqual(taskq.reclaim(leader, 7), 0)
                worker.join(0.5)
        finally:
            worker.join()
        self.assertEqual(result["done"], 1)
        self.assertEqual((self.state(tid)["attempts"], self.state(tid)["runs"]), (1, 1))

    def test_the_supervisor_kills_a_handler_whose_lease_is_not_renewed(self):
        from distnode.procs import child
        pid_file = os.path.join(self.tmp, "grandchild")
        argv = ["sh", "-c", 'sleep 60 & echo $! > "%s"; wait' % pid_file]
        for renewal in (None, 0):  # renewals failing, then the lease reported lost
            lease = child.Lease(time.monotonic() + 1.0, 0.3, lambda r=renewal: r)
            outcome = child.run(argv, b"", None, 60, 1000, lease=lease)
            self.assertFalse(outcome.ok)
            self.assertIn("lease", outcome.error)
            with open(pid_file) as fh:
                grandchild = int(fh.read())
            wait_for(lambda: not process_alive(grandchild), 5, message="the grandchild to be killed")

    def pre_lease(self, tid: str, keep_stale_instance: bool) -> None:
        """Make a running attempt look like one a release before the attempt lease claimed: no
        lease fields on the task, no lease key; or (``keep_stale_instance``) an earlier attempt's
        lease fields left on the hash, the old release having only written its own token."""
        SERVER.command("DEL", keys.task_lease(tid))
        if keep_stale_instance:
            SERVER.command("HSET", keys.task(tid), "token", "9@" + SERVER.command("HGET", keys.task(tid), "worker"),
                           "lease_until_ms", 0)
        else:
            SERVER.command("HDEL", keys.task(tid), "instance", "lease_of", "lease_until_ms")

    def test_a_pre_lease_attempt_moves_only_by_the_old_rule(self):
        # a rolling upgrade: w1 (an older release) claimed these; the upgraded leader must not move them
        # while w1's heartbeat lives and their deadline (+ reclaim_grace_s) has not passed
        leader = self.make_leader()
        w1 = self.ctx("w1")
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)
        ids = [taskq.submit(w1, "true", "{}")["id"] for _ in range(2)]
        for _ in ids:
            self.claim(w1)
        for tid, stale in zip(ids, (False, True)):
            self.pre_lease(tid, stale)
        self.assertEqual(taskq.reclaim(leader, 7), 0)
        self.assertEqual([self.state(t)["state"] for t in ids], ["running", "running"])
        # past its deadline (grace 0 here): the old rule moves the first
        SERVER.command("ZADD", keys.task_index("running"), 1, ids[0])
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(self.state(ids[0])["state"], "pending")
        self.assertIn("deadline", self.state(ids[0])["error"])
        # w1's heartbeat gone: the old rule moves the second
        SERVER.command("DEL", keys.heartbeat("w1"))
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(self.state(ids[1])["state"], "pending")

    def test_a_wrong_typed_lease_key_wedges_nothing(self):
        leader, w1 = self.make_leader(), self.ctx("w1")
        stuck = taskq.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        lapsed = taskq.submit(w1, "true", "{}")["id"]
        self.claim(w1)
        self.lapse(lapsed)
        SERVER.command("DEL", keys.task_lease(stuck))
        SERVER.command("HSET", keys.task_lease(stuck), "x", "1")  # an operator's (or a script's) mistake
        self.assertEqual(taskq.reclaim(leader, 7), 1)  # the other task still moves; this one is not lapsed yet
        self.assertEqual((self.state(stuck)["state"], self.state(lapsed)["state"]), ("running", "pending"))
        taskq._claim(w1, taskq.worker_streams(w1), read_new=True)  # the worker's claim is not wedged either
        lease = taskq.attempt_lease(w1, task)
        self.assertTrue(lease.renew())  # the renewal puts its lease back as a string
        self.assertEqual(SERVER.command("TYPE", keys.task_lease(stuck)), "string")
        SERVER.command("DEL", keys.task_lease(stuck))
        SERVER.command("HSET", keys.task_lease(stuck), "x", "1")
        SERVER.command("HSET", keys.task(stuck), "lease_until_ms", 0)  # past the attempt's lease
        self.assertEqual(taskq.reclaim(leader, 7), 1)
        self.assertEqual(self.state(stuck)["state"], "pending")
        self.assertEqual(SERVER.command("EXISTS", keys.task_lease(stuck)), 0)
        events = SERVER.command("XRANGE", keys.events(), "-", "+")
        self.assertTrue(any(keys.task_lease(stuck).encode() in b" ".join(
            f if isinstance(f, bytes) else str(f).encode() for f in e[1]) for e in events), events)
        self.assertEqual(lease.renew(), 0)  # and the old attempt learns it lost its lease

    def test_a_deleted_lease_key_moves_nothing_before_the_attempt_s_lease_until(self):
        leader, w1 = self.make_leader(), self.ctx("w1")
        tid = taskq.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        SERVER.command("DEL", keys.task_lease(tid))  # an operator's DEL, or a replica that missed the key
        self.assertEqual(taskq.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        self.assertTrue(taskq.attempt_lease(w1, task).renew())  # its worker renews it back
        self.assertEqual(SERVER.command("TYPE", keys.task_lease(tid)), "string")
        self.lapse(tid)
        self.assertEqual(taskq.reclaim(leader, 7), 1)


class ChildSupervisor(unittest.TestCase):
    """The supervisor's lean start (no ctypes, no os.execvpe, a text protocol) keeps its guarantees."""

    @unittest.skipUnless(sys.platform.startswith("linux"), "PR_SET_PDEATHSIG is Linux's")
    def test_the_handler_still_gets_pr_set_pdeathsig(self):
        from distnode.procs import child
        probe = "import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
        outcome = child.run([sys.executable, "-c", probe], b"", None, 60, 1000)
        self.assertTrue(outcome.ok, outcome.error)
        self.assertEqual(outcome.output.strip(), b"9")  # PR_GET_PDEATHSIG: SIGKILL

    def test_a_handler_that_closed_its_output_is_still_waited_for_and_stopped(self):
        from distnode.procs import child
        outcome = child.run(["sh", "-c", "exec >&- 2>&-; sleep 0.2; exit 3"], b"", None, 60, 1000)
        self.assertEqual(outcome.error, "exit 3")
        calls = []
        outcome = child.run(["sh", "-c", "exec >&- 2>&-; sleep 60"], b"", None, 60, 1000, term_grace_s=5,
                            should_stop=lambda: calls.append(1) or len(calls) > 2)
        self.assertTrue(outcome.stopped, outcome.error)

    def test_the_path_search_and_bad_argv_end_as_errors(self):
        from distnode.procs import child
        env = dict(os.environ, PATH=os.pathsep.join(["/nonexistent", os.path.dirname(shutil.which("sh"))]))
        self.assertTrue(child.run(["sh", "-c", "exit 0"], b"", env, 60, 1000).ok)
        for argv in (["no-such-command-here"], ["/nonexistent/x"], ["sh", "a\0b"], []):
            outcome = child.run(argv, b"", env, 60, 1000)
            self.assertFalse(outcome.ok, argv)
            self.assertTrue(outcome.error.startswith("cannot "), outcome.error)

    def test_a_cut_report_is_no_report(self):
        from distnode.procs import child
        self.assertEqual(child._report(b"exit 0 12 -\n"), {"code": 0, "out_bytes": 12, "reason": None})
        self.assertEqual(child._report(b"exit -9 0 owner gone\n")["reason"], "owner gone")
        for cut in (b"", b"exit 0 12 -", b"exit 0", b"error cannot", b"exit x 1 -\n", b"exit 0 1 -\nexit 0 1 -\n"):
            self.assertIsNone(child._report(cut), cut)
        status = {"error": "cannot run x: two\nlines"}
        self.assertEqual(child._report(child._report_line(status)), {"error": "cannot run x: two lines"})


class LeftoverKiller(unittest.TestCase):
    """child.kill_leftover kills only what a killed supervisor's child left, never another group."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="leftover-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record = os.path.join(self.tmp, "rec.json")
        self.victims = []
        self.addCleanup(self.kill_victims)

    def kill_victims(self):
        import signal
        for pid in self.victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def dead_pid(self) -> int:
        import subprocess
        proc = subprocess.Popen(["true"])
        proc.wait()
        return proc.pid

    def orphaned_group(self, mark=None):
        """(pid, pgid) of a sleeper left in a group whose leader exited, as a killed supervisor's handler
        leaves it; with ``mark``, the sleeper carries the marker the supervisor gives the handler."""
        import subprocess
        from distnode.procs import child
        env = dict(os.environ)
        if mark:
            env[child.MARK_ENV] = mark
        proc = subprocess.Popen(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE, env=env,
                                start_new_session=True)
        pid = int(proc.stdout.read())
        proc.wait()
        proc.stdout.close()
        self.victims.append(pid)
        return pid, proc.pid

    def write(self, path=None, **fields):
        from distnode.procs import child
        rec = dict(pgid=0, start="4242", owner=self.dead_pid(), owner_start="1", boot=child._boot_id(), mark="m-1")
        rec.update(fields)
        with open(path or self.record, "w") as fh:
            json.dump(rec, fh)

    def alive(self, pid) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return process_alive(pid)

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_record_naming_group_0_1_or_the_caller_s_own_is_refused(self):
        import subprocess
        for pgid in (0, 1, -5, "own"):
            code = ("import json, os, sys; sys.path.insert(0, %r); from distnode.procs import child\n"
                    "rec = json.load(open(%r)); rec['pgid'] = os.getpgid(0) if rec['pgid'] == 'own' else rec['pgid']\n"
                    "json.dump(rec, open(%r, 'w')); print(child.kill_leftover(%r)); print('survived')"
                    % (os.path.join(os.path.dirname(HERE), "scripts"), self.record, self.record, self.record))
            self.write(pgid=pgid)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True,
                                 timeout=60)
            self.assertEqual(out.stdout.split(), ["None", "survived"], (pgid, out.returncode, out.stderr))
            self.assertFalse(os.path.exists(self.record))

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_group_whose_leader_is_gone_loses_only_the_processes_carrying_the_marker(self):
        from distnode.procs import child
        stranger, stranger_group = self.orphaned_group()  # e.g. a daemon whose group got the recorded id
        self.write(pgid=stranger_group, start="4242", mark="m-%s" % os.urandom(4).hex())
        self.assertIsNone(child.kill_leftover(self.record))
        self.assertTrue(self.alive(stranger))
        ours, our_group = self.orphaned_group(mark="m-ours")
        self.write(pgid=our_group, start="4242", mark="m-ours", boot="another-boot")
        self.assertIsNone(child.kill_leftover(self.record))  # a record from another boot names nothing of ours
        self.assertTrue(self.alive(ours))
        self.write(pgid=our_group, start="4242", mark="m-ours")
        self.assertEqual(child.kill_leftover(self.record), our_group)
        wait_for(lambda: not self.alive(ours), 5, message="the marked leftover to be killed")
        self.assertTrue(self.alive(stranger))

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_killed_writer_s_temporary_record_is_not_left_behind(self):
        from distnode.procs import child
        ours, our_group = self.orphaned_group(mark="m-tmp")
        dead = self.dead_pid()
        self.write(path="%s.tmp.%d" % (self.record, dead), pgid=our_group, owner=dead, mark="m-tmp")
        child.kill_leftover(self.record)
        self.assertEqual(os.listdir(self.tmp), [])
        wait_for(lambda: not self.alive(ours), 5, message="the group the unfinished record named to be killed")


class Redis5Compatibility(TaskQueueTestCase):
    def test_task_workload_sends_only_redis_5_commands(self):
        monitor = Monitor(SERVER)
        try:
            self._workload()
        finally:
            monitor.stop()
        seen = list(monitor.commands())
        names = {name for _, name, _ in seen}
        for expected in ("evalsha", "xreadgroup", "xadd", "xack", "xclaim", "xpending", "xinfo", "xgroup", "xtrim"):
            self.assertIn(expected, names, "the workload did not exercise %s" % expected)
        problems = set()
        for source, name, words in seen:
            if name not in REDIS5_COMMANDS:
                problems.add("%s is not a Redis 5.0 command" % name)
            elif source == "lua" and name in REDIS5_NOSCRIPT:
                problems.add("%s is called from Lua, which Redis 5.0 refuses" % name)
            elif words & NEWER_OPTIONS.get(name, set()):
                problems.add("%s uses %s, newer than Redis 5.0" % (name, words & NEWER_OPTIONS[name]))
        self.assertEqual(problems, set())

    def _workload(self):
        settings = {"tasks": dict(CLI_TASKS, stream_maxlen=2)}
        n1, n2 = (NodeEnv(self.tmp, node_id, SERVER, config=settings) for node_id in ("n1", "n2"))
        for node in (n1, n2):
            node.run("heartbeat.py")
        n1.run("leader_election.py")
        for args in (("--type", "echo", "--key", "same"), ("--type", "echo", "--key", "same"),
                     ("--type", "echo", "--node", "n2"), ("--type", "fail", "--max-attempts", "1"),
                     ("--type", "fail", "--max-attempts", "2")):
            self.assertEqual(n1.run("task_queue.py", "submit", *args).returncode, 0)
        n2.run("task_queue.py", "work")
        n1.run("task_queue.py", "work")
        dead = n1.run_json("task_queue.py", "list", "--state", "dead")["tasks"]
        for command in (("stats",), ("list",), ("status", dead[0]["id"]), ("retry", dead[0]["id"])):
            self.assertEqual(n1.run("task_queue.py", *command).returncode, 0, command)
        ghost = self.ctx("ghost")  # claims, then is never heard of again: reclaimed
        taskq.submit(ghost, "true", "{}")
        self.lapse(taskq._claim(ghost, taskq.worker_streams(ghost), read_new=True)[0].id)
        self.assertGreaterEqual(self._leader_tick(n1)["tasks_reclaimed"], 1)
        leaving = self.ctx("n2")
        leaving.instance_token = json.loads(SERVER.command("HGET", keys.nodes(), "n2"))["instance"]  # n2's own
        taskq.submit(leaving, "true", "{}")
        taskq._claim(leaving, taskq.worker_streams(leaving), read_new=True)
        self.assertEqual(n2.run_json("node_manager.py", "deregister")["tasks_handed_back"], 1)
        for _ in range(3):
            n1.run("task_queue.py", "work")
        n1.run("task_queue.py", "purge", "--done-older-than", "0", "--dead-older-than", "0")

    def _leader_tick(self, node: NodeEnv) -> dict:
        """Run failover_manager.py on ``node`` until it acts as the leader; return that tick's result."""
        def tick():
            node.run("heartbeat.py")
            result = node.run_json("failover_manager.py")
            return result if result["role"] == "leader" else None
        return wait_for(tick, 15, interval_s=0.2, message="%s to lead" % node.node_id)


if __name__ == "__main__":
    unittest.main()
