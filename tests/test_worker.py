"""tasks/worker.py and tasks/handler.py: claim, run, finish, hand back, the attempt lease, against a real
redis-server, one in-process Context per simulated node (test_task_queue.py runs the CLI); and a living
worker (``work --loop``, ``node_manager.py run``) that blocks between ticks (issue 15), as processes.
"""

import os
import signal
import tempfile
import threading
import time
import unittest
from unittest import mock

from support.base import RedisCase, RedisServer  # first: puts scripts/ on sys.path
from support.fake_servers import FakeServer, lose_reply_proxy
from support.nodes import merge, process_alive, wait_for
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


def blocked_readers(server) -> list:
    """Ids of the clients whose last command was XREAD: a worker blocked between ticks."""
    lines = server.command("CLIENT", "LIST").splitlines()
    return [line.split()[0] for line in lines if " cmd=xread " in line + " "]


class WorkerJobWaits(TaskCase):
    """WorkerJob.wait in-process: what wakes an idle worker, and what its ticks tell the wait."""

    shared_server = SERVER

    def loop_ctx(self, node_id: str = "w", labels=(), **tasks):
        ctx = self.ctx(node_id, **tasks)
        ctx.loop = True
        ctx.cfg["node"]["labels"] = list(labels)
        return ctx

    def test_a_new_requirement_is_announced_once_as_a_route_added_event(self):
        a = self.ctx("a")
        for _ in range(2):
            submit.submit(a, "true", "{}", requires=["gpu", "big"])
        submit.submit(a, "true", "{}", requires=["gpu"])
        added = [dict(zip(*[iter(fields)] * 2)) for _, fields in SERVER.command("XRANGE", keys.events(), "-", "+")]
        self.assertEqual([(e["type"], e["node"], e.get("detail")) for e in added],
                         [("route_added", "a", "big,gpu"), ("route_added", "a", "gpu")])

    def test_task_prepare_says_when_the_earliest_retry_comes_due(self):
        a = self.ctx("a", backoff_base_s=30)
        submit.submit(a, "flaky", "{}")
        self.assertEqual(worker.work_tick(a)["retry"], 1)
        self.assertEqual(worker.work_tick(a)["ran"], 0)
        left_s = a.next_retry_s - time.monotonic()
        self.assertTrue(20 < left_s <= 30, left_s)
        SERVER.command("DEL", keys.task_delayed())
        worker.work_tick(a)
        self.assertIsNone(a.next_retry_s, "no retry is delayed")

    def test_after_a_tick_that_ran_a_task_the_next_follows_at_once(self):
        w = self.loop_ctx(poll_interval_s=60)
        job = worker.WorkerJob(w)
        self.addCleanup(job.stop, w)
        submit.submit(w, "true", "{}")
        self.assertEqual(job(w)["done"], 1)
        self.assertEqual(job.wait(w, 60), "primed")

    def test_a_route_added_wakes_only_the_workers_that_qualify(self):
        w = self.loop_ctx(labels=["gpu"], poll_interval_s=1)
        job = worker.WorkerJob(w)
        self.addCleanup(job.stop, w)
        job(w)
        self.assertEqual(job.wait(w, 1), "primed")  # it reads where its streams end, then ticks
        job(w)
        a = self.ctx("a")
        submit.submit(a, "true", "{}", requires=["cpu"])
        self.assertEqual(job.wait(w, 1), "due", "a route it may not read woke it")
        submit.submit(a, "true", "{}", requires=["gpu"])
        self.assertEqual(job.wait(w, 1), "woken")
        self.assertEqual(job(w)["done"], 1, "the tick it woke for reads the new route")

    def test_without_blocking_reads_or_a_loop_it_sleeps_the_period(self):
        for loop, blocking in ((True, False), (False, True)):
            with self.subTest(loop=loop, blocking_reads=blocking):
                w = self.ctx("w")
                w.loop = loop
                w.cfg["redis"]["blocking_reads"] = blocking
                job = worker.WorkerJob(w)
                job(w)
                with mock.patch.object(w, "sleep") as sleep:
                    self.assertEqual(job.wait(w, 0.7), "slept")
                sleep.assert_called_once_with(0.7)
                self.assertIsNone(job.watch, "a wait without blocking reads opened a connection")


# Periods far longer than any test waits: only a blocking read explains a quick pickup.
LONG = {"node": {"heartbeat_interval": 60, "heartbeat_ttl": 120, "retry_count": 10, "retry_delay": 0.3},
        "tasks": {"handlers": TASK_HANDLERS, "poll_interval_s": 60, "backoff_base_s": 0}}


class LivingWorker(RedisCase):
    """``work --loop`` and ``node_manager.py run`` (start-node.sh --foreground) block between ticks."""

    redis_options = {"name": "living-worker"}

    def worker(self, node_id: str = "w", extra: dict = None, script=("task_queue.py", "work", "--loop")):
        node = self.new_node(node_id, merge(LONG, extra or {}))
        node.spawn(*script, "--quiet")
        return node

    def wait_blocked(self):
        return wait_for(lambda: blocked_readers(self.server), 15, message="the worker to block between ticks")

    def state(self, task_id: str) -> str:
        return self.server.command("HGET", keys.task(task_id), "state")

    def submit(self, node, *args) -> str:
        done = node.run("task_queue.py", "submit", *args)
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.strip()

    def wait_done(self, task_id: str, within_s: float = 15):
        """Done within ``within_s``: far less than the 60 s poll and safety periods."""
        wait_for(lambda: self.state(task_id) == "done", within_s, message="task %s to be done" % task_id)

    def test_a_blocked_worker_runs_a_task_on_a_route_new_since_it_blocked(self):
        node = self.worker(extra={"node": {"labels": ["gpu"]}})
        self.wait_blocked()
        self.assertEqual(self.server.command("SMEMBERS", keys.task_routes()), [], "the route existed already")
        task_id = self.submit(node, "--type", "echo", "--payload", '"routed"', "--require", "gpu")
        self.wait_done(task_id)
        self.assertEqual(self.server.command("HGET", keys.task(task_id), "result"), '"routed"')

    def test_a_blocked_worker_survives_redis_restarting(self):
        node = self.worker()
        self.wait_blocked()
        worker_proc = node.procs[0]
        self.server.restart()
        self.wait_blocked()  # the same process blocks again, on the restarted server
        self.assertIsNone(worker_proc.poll(), "the worker exited")
        task_id = self.submit(node, "--type", "echo", "--payload", '"after"')
        self.wait_done(task_id)

    def test_a_one_shot_tick_never_loads_the_blocking_reads(self):
        node = self.new_node("w", merge(LONG, {}))
        done = node.run("task_queue.py", "work", env={"PYTHONPROFILEIMPORTTIME": "1"})
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("distnode.tasks.worker", done.stderr, "the import profile is missing")
        self.assertNotIn("distnode.run.wake", done.stderr)

    def test_with_blocking_reads_off_it_polls(self):
        node = self.worker(extra={"redis": {"blocking_reads": False}, "tasks": {"poll_interval_s": 0.2}})
        wait_for(lambda: self.server.command("EXISTS", keys.task_stream()), 15, message="the worker's first tick")
        task_id = self.submit(node, "--type", "true")
        self.wait_done(task_id)
        self.assertEqual(blocked_readers(self.server), [], "a blocking read with redis.blocking_reads false")

    def test_an_idle_blocked_worker_runs_a_task_at_the_default_poll(self):
        node = self.worker(extra={"node": {"heartbeat_interval": 10, "heartbeat_ttl": 30},
                                  "tasks": {"poll_interval_s": 1}})
        self.wait_blocked()
        self.wait_done(self.submit(node, "--type", "true"))

    def test_a_delayed_retry_runs_when_due_despite_long_periods(self):
        node = self.worker(extra={"tasks": {"backoff_base_s": 2}})
        self.wait_blocked()
        task_id = self.submit(node, "--type", "flaky")
        self.wait_done(task_id, 20)
        self.assertEqual(self.server.command("HGET", keys.task(task_id), "attempts"), "2")

    def test_a_foreground_node_runs_a_task_on_a_new_route_and_stops_at_once(self):
        # reads that block 20 s (worker) and 60 s (election): a stop that waited for them would take that long
        node = self.worker(extra={"node": {"labels": ["gpu"]}, "redis": {"socket_timeout": 40},
                                  "election": {"lease_ttl": 100, "renew_interval": 60}},
                           script=("node_manager.py", "run"))
        self.wait_blocked()
        task_id = self.submit(node, "--type", "true", "--require", "gpu")
        self.wait_done(task_id)
        proc = node.procs[0]
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(15), 0)  # interrupt_all() ended the blocked reads
        self.assertEqual(blocked_readers(self.server), [])


if __name__ == "__main__":
    unittest.main()
