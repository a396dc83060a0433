"""tasks/worker.py and tasks/handler.py: claim, run, finish, hand back, the attempt lease, against a real
redis-server, one in-process Context per simulated node (test_task_queue.py runs the CLI).
"""

import os
import tempfile
import threading
import time
import unittest
from unittest import mock

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.fake_servers import FakeServer, lose_reply_proxy
from support.nodes import process_alive, wait_for
from support.tasks import TASK_HANDLERS, TaskCase, local_context

from distnode import lua
from distnode.core import keys
from distnode.redis.errors import RedisConnectionError
from distnode.tasks import common
from distnode.tasks import reclaim
from distnode.tasks import routes
from distnode.tasks import submit
from distnode.tasks import worker

SERVER = RedisServer(name="worker")  # started by the first class, closed after the module


class Work(TaskCase):
    shared_server = SERVER

    def test_submit_work_stores_result_and_acks(self):
        a, b = self.ctx("a"), self.ctx("b")
        tid = submit.submit(a, "echo", '{"x": 1}')["id"]
        self.assertEqual(self.state(tid)["state"], "pending")
        result = worker.work_tick(b)
        self.assertEqual((result["ran"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["result"], rec["worker"], rec["attempts"]), ("done", '{"x": 1}', "b", 1))
        self.assertGreaterEqual(rec["finished_at"], rec["started_at"])
        self.assertEqual(SERVER.command("XPENDING", keys.task_stream(), common.GROUP)[0], 0)
        self.assertEqual((self.zcard("pending"), self.zcard("running"), self.zcard("done")), (0, 0, 1))
        self.assertGreater(SERVER.command("PTTL", keys.task(tid)), 0)  # done records expire

    def test_handler_environment(self):
        a = self.ctx("a")
        tid = submit.submit(a, "env", "{}", max_attempts=5)["id"]
        worker.work_tick(a)
        self.assertEqual(self.state(tid)["result"], "%s env 1 5 a\n" % tid)

    def test_empty_queue_tick_is_one_round_trip(self):
        a = self.ctx("a")
        worker.work_tick(a)  # creates the groups
        before = a.redis.round_trips
        result = worker.work_tick(a)
        self.assertEqual(result["ran"], 0)
        self.assertEqual(a.redis.round_trips - before, 1)

    def test_failure_then_success(self):
        a = self.ctx("a")
        tid = submit.submit(a, "flaky", "{}")["id"]
        result = worker.work_tick(a)
        self.assertEqual((result["retry"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["result"]), ("done", 2, "ok 2\n"))
        self.assertEqual(rec["error"], "exit 1: not yet")

    def test_backoff_delays_the_retry(self):
        a = self.ctx("a", backoff_base_s=30)
        tid = submit.submit(a, "flaky", "{}")["id"]
        self.assertEqual(worker.work_tick(a)["retry"], 1)
        rec = self.state(tid)
        self.assertEqual(rec["state"], "pending")
        self.assertAlmostEqual(rec["due_at"] - rec["updated_at"], 30, delta=0.01)
        self.assertEqual(worker.work_tick(a)["ran"], 0)  # not due yet
        SERVER.command("ZADD", keys.task_delayed(), 0, tid)  # make it due
        self.assertEqual(worker.work_tick(a)["done"], 1)

    def test_timeout_kills_the_handler_and_its_children(self):
        pid_file = os.path.join(self.tmp, "pid")
        a = self.ctx("a", handlers={"slow": ["sh", "-c", "sleep 30 & echo $! > %s; wait" % pid_file]})
        tid = submit.submit(a, "slow", "{}", timeout_s=0.5, max_attempts=1)["id"]
        t0 = time.monotonic()
        self.assertEqual(worker.work_tick(a)["dead"], 1)
        self.assertLess(time.monotonic() - t0, 10)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["error"]), ("dead", "timed out after 0.5s: killed"))
        with open(pid_file) as fh:
            child = int(fh.read())
        self.assertFalse(process_alive(child), "the handler's child survived its timeout")

    def test_unknown_type_fails_with_a_clear_error(self):
        a = self.ctx("a")
        tid = submit.submit(a, "nope", "{}", max_attempts=1)["id"]
        worker.work_tick(a)
        self.assertIn("no handler for task type 'nope' on node a", self.state(tid)["error"])

    def test_result_is_capped(self):
        a = self.ctx("a", result_max_bytes=10)
        tid = submit.submit(a, "echo", '"%s"' % ("x" * 100))["id"]
        worker.work_tick(a)
        rec = self.state(tid)
        self.assertEqual((rec["result"], rec["result_truncated"]), ('"xxxxxxxxx', True))

    def test_max_per_tick_and_leftover_release(self):
        a = self.ctx("a", max_per_tick=3)
        SERVER.command("HSET", keys.nodes(), "a", "{}")
        submit.submit(a, "true", "{}", target="a")
        for _ in range(4):
            submit.submit(a, "true", "{}")
        result = worker.work_tick(a)
        self.assertEqual(result["ran"], 3)
        # nothing is left delivered-but-unstarted in this node's pending lists
        for stream in routes.worker_streams(a):
            self.assertEqual(SERVER.command("XPENDING", stream, common.GROUP)[0], 0)
        self.assertEqual(worker.work_tick(a)["ran"], 2)
        self.assertEqual(self.zcard("done"), 5)

    def test_stream_trim_never_drops_undelivered_entries(self):
        a = self.ctx("a", stream_maxlen=5, max_per_tick=100)
        ids = [submit.submit(a, "true", "{}")["id"] for _ in range(20)]
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 20)
        self.assertEqual(worker.work_tick(a)["done"], 20)
        submit.submit(a, "true", "{}")
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 5)
        self.assertEqual(worker.work_tick(a)["done"], 1)
        self.assertTrue(all(self.state(t)["state"] == "done" for t in ids))


class CrashesAndHandBack(TaskCase):
    shared_server = SERVER

    def test_interrupted_attempt_is_counted_by_the_next_tick(self):
        a = self.ctx("a")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        self.claim(a)  # then "crash": no finish
        self.lapse(tid)
        again = self.ctx("a")
        again.instance_token = common.instance(a)  # the same instance (its run dir)
        result = worker.work_tick(again)  # the next tick of the same node
        self.assertEqual((result["interrupted"], result["done"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["runs"]), ("done", 2, 2))
        self.assertIn("interrupted", rec["error"])

    def test_hand_back_does_not_count_the_attempt(self):
        w1, w2 = self.ctx("w1"), self.ctx("w2")
        tid = submit.submit(w1, "echo", '"x"')["id"]
        running = self.claim(w1)
        self.assertEqual(worker.hand_back(w1), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))
        self.assertEqual(worker.work_tick(w2)["done"], 1)
        self.assertEqual(worker.finish(w1, running, True, b"late", ""), "stale")
        self.assertEqual(self.state(tid)["attempts"], 1)


class Issue13(TaskCase):
    """Secrets, bounded output, a duplicate node id (issue 13)."""

    shared_server = SERVER

    def test_a_handler_gets_no_redis_credential_in_its_environment(self):
        a = self.ctx("a", handlers={"env": ["env"]})
        secret = "pw-%s" % os.urandom(4).hex()
        with mock.patch.dict(os.environ, REDIS_PASSWORD=secret, REDISCLI_AUTH=secret, MY_REDIS_SECRET=secret):
            tid = submit.submit(a, "env", "{}")["id"]
            self.assertEqual(worker.work_tick(a)["done"], 1)
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
            tid = submit.submit(a, "env", "{}")["id"]
            self.assertEqual(worker.work_tick(a)["done"], 1)
        result = self.state(tid)["result"]
        self.assertTrue("INNOCENT_VAR=kept" in result, "an unrelated variable is kept")
        self.assertFalse(secret in result, "a handler saw a password embedded in a variable's value")
        for name in ("MY_REDIS_URL", "APP_DSN", "CACHE_REDIS_URI"):
            self.assertFalse(name + "=" in result, "%s reached the handler" % name)

    def test_output_past_the_cap_is_read_and_dropped_with_a_note(self):
        spool = os.path.join(self.tmp, "spool")
        os.mkdir(spool)
        a = self.ctx("a", max_output_bytes=1 << 20, result_max_bytes=100,
                     handlers={"yes": ["sh", "-c", "yes | head -c 30000000"], "forever": ["yes"]})
        done_id = submit.submit(a, "yes", "{}")["id"]
        hung_id = submit.submit(a, "forever", "{}", timeout_s=1, max_attempts=1)["id"]
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
            result = worker.work_tick(a)
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

    def test_the_note_on_cut_output_names_the_setting_that_cut_it(self):
        for caps, kept, setting in (({}, 100, "tasks.result_max_bytes"),
                                    ({"max_output_bytes": 50}, 50, "tasks.max_output_bytes")):
            with self.subTest(setting=setting):
                a = self.ctx("a", result_max_bytes=100, handlers={"big": ["sh", "-c", "yes | head -c 5000"]}, **caps)
                tid = submit.submit(a, "big", "{}")["id"]
                with mock.patch.object(a.log, "warning") as warn:
                    worker.work_tick(a)
                notes = [call.args[0] % call.args[1:] for call in warn.call_args_list]
                self.assertIn("task %s (big) wrote 5000 bytes of output; the first %d were kept (%s)"
                              % (tid, kept, setting), notes)
                self.assertEqual(len(self.state(tid)["result"]), kept)

    def test_a_worker_with_a_taken_node_id_claims_nothing(self):
        from distnode.cluster import membership
        real = self.ctx("a")
        membership.beat(real)
        running = submit.submit(real, "true", "{}")["id"]
        self.claim(real)  # the real node's attempt in progress
        waiting = submit.submit(real, "echo", '"x"')["id"]
        duplicate = self.ctx("a")  # same id, another run dir: another instance token
        self.assertNotEqual(membership.node_fields(real), membership.node_fields(duplicate))
        with self.assertRaises(Exception) as caught:
            worker.work_tick(duplicate)
        self.assertIn("another live process", str(caught.exception))
        self.assertEqual(self.state(running)["state"], "running", "the real node's attempt was counted as failed")
        self.assertEqual((self.state(running)["attempts"], self.state(waiting)["state"]), (1, "pending"))
        with self.assertRaises(Exception):
            worker.hand_back(duplicate)  # leaving as the real node would hand its attempt back
        self.assertEqual(self.state(running)["state"], "running")
        self.lapse(running)  # never renewed: it lapses
        result = worker.work_tick(real)  # the real node goes on: its first attempt was interrupted (never finished)
        self.assertEqual(self.state(waiting)["state"], "done")
        self.assertEqual(self.state(waiting)["worker"], "a")
        self.assertEqual(result["interrupted"], 1)


class ClaimFaults(TaskCase):
    """A claim batch that Redis ran but whose reply did not come back whole: every task still runs once."""

    shared_server = SERVER

    def test_a_claim_batch_with_task_prepare_evicted_claims_and_runs_each_task_once(self):
        a, w = self.ctx("a"), self.ctx("w")
        worker.work_tick(w)  # w's client sends task_prepare and task_claim as EVALSHA from now on
        ids = [submit.submit(a, "true", "{}", max_attempts=1)["id"] for _ in range(2)]
        SERVER.command("SCRIPT", "FLUSH")
        SERVER.command("SCRIPT", "LOAD", lua.script("task_claim").source)  # as another node's EVAL of it would
        result = worker.work_tick(w)  # [task_prepare: NOSCRIPT, XREADGROUP, task_claim: ran]
        self.assertEqual((result["ran"], result["done"], result["interrupted"]), (2, 2, 0))
        for tid in ids:
            rec = self.state(tid)
            self.assertEqual((rec["state"], rec["attempts"], rec["runs"]), ("done", 1, 1), tid)

    def test_a_claim_whose_reply_was_lost_runs_its_task_when_the_tick_is_retried(self):
        a = self.ctx("a")
        claim = lua.script("task_claim")
        proxy = FakeServer(lose_reply_proxy(SERVER.host, SERVER.port, {claim.source.encode(), claim.sha.encode()}))
        self.addCleanup(proxy.stop)
        w = local_context(os.path.join(self.tmp, "w-proxy"), "w", proxy.start(),
                          {"handlers": TASK_HANDLERS, "backoff_base_s": 0})
        self.ctxs.append(w)
        w.cfg["node"]["retry_count"] = 1  # the runner's retry of the whole tick (ctx.retried)
        tid = submit.submit(a, "echo", '"hi"', max_attempts=1)["id"]
        with mock.patch.object(worker, "claim", wraps=worker.claim) as claims:
            result = w.retried(worker.work_tick, w)
        self.assertGreaterEqual(claims.call_count, 2, "the first claim's reply was not lost")
        self.assertEqual((result["ran"], result["done"], result["interrupted"]), (1, 1, 0))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["runs"], rec["result"]), ("done", 1, 1, '"hi"'))
        self.assertIsNone(w.claim_nonce, "a claim that got its reply leaves no nonce behind")

    def test_a_loop_tick_after_a_lost_claim_reply_runs_the_task(self):
        a = self.ctx("a")
        claim = lua.script("task_claim")
        proxy = FakeServer(lose_reply_proxy(SERVER.host, SERVER.port, {claim.source.encode(), claim.sha.encode()}))
        self.addCleanup(proxy.stop)
        w = local_context(os.path.join(self.tmp, "w-proxy"), "w", proxy.start(), {"handlers": TASK_HANDLERS})
        self.ctxs.append(w)
        tid = submit.submit(a, "echo", '"hi"', max_attempts=1)["id"]
        with self.assertRaises(RedisConnectionError):
            worker.work_tick(w)  # the tick fails (retry_count 0); in loop mode the next one follows
        self.assertEqual(self.state(tid)["state"], "running", "the lost claim ran")
        SERVER.command("HSET", keys.nodes(), "w", "{}")
        # on w's own stream, which task_claim scans first: the lost claim's attempt still comes back first
        second = submit.submit(a, "echo", '"second"', target="w", max_attempts=1)["id"]
        result = worker.work_tick(w)
        self.assertEqual((result["ran"], result["done"], result["interrupted"]), (2, 2, 0))
        for task_id in (tid, second):
            rec = self.state(task_id)
            self.assertEqual((rec["state"], rec["attempts"], rec["runs"]), ("done", 1, 1), task_id)


class AttemptLease(TaskCase):
    """A running attempt is moved only when its attempt lease lapsed in Redis (issue 13, item 8)."""

    shared_server = SERVER

    def test_a_duplicate_node_id_never_counts_the_others_attempt_as_its_own(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = submit.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        dup = self.ctx("w1")  # another run dir: another instance with the same node id
        self.assertNotEqual(common.instance(dup), common.instance(w1))
        for lapsed in (False, True):
            if lapsed:
                self.lapse(tid)
            _, _, interrupted = worker.claim(dup, routes.worker_streams(dup), read_new=True)
            self.assertEqual(interrupted, [])
            rec = self.state(tid)
            self.assertEqual((rec["state"], rec["token"], rec["attempts"]), ("running", task.token, 1))
        self.assertEqual(reclaim.reclaim(leader, 7), 1)  # the leader moves it, once the lease lapsed

    def test_the_same_instance_counts_its_interrupted_attempt_once_the_lease_lapsed(self):
        a = self.ctx("a")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        self.claim(a)
        again = self.ctx("a")
        again.instance_token = common.instance(a)  # a restarted worker of the same instance
        _, _, interrupted = worker.claim(again, routes.worker_streams(again), read_new=True)
        self.assertEqual(interrupted, [])
        self.lapse(tid)
        self.assertEqual(worker.work_tick(again)["interrupted"], 1)
        self.assertEqual(self.state(tid)["state"], "done")

    def test_the_worker_renews_the_lease_while_its_handler_runs(self):
        # the handler outlives node.heartbeat_ttl (3 s here) twice over, with no heartbeat at all
        w1 = self.ctx("w1", handlers={"long": ["sh", "-c", "sleep 7; echo ok"]})
        leader = self.make_leader()
        tid = submit.submit(w1, "long", "{}")["id"]
        result = {}
        thread = threading.Thread(target=lambda: result.update(worker.work_tick(w1)))
        thread.start()
        try:
            wait_for(lambda: self.zcard("running"), 10, message="the attempt to start")
            while thread.is_alive():
                self.assertEqual(reclaim.reclaim(leader, 7), 0)
                thread.join(0.5)
        finally:
            thread.join()
        self.assertEqual(result["done"], 1)
        self.assertEqual((self.state(tid)["attempts"], self.state(tid)["runs"]), (1, 1))


if __name__ == "__main__":
    unittest.main()
