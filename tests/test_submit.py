"""tasks/submit.py: enqueueing, idempotency, targets; checked before anything is sent; `submit --wait`."""

import functools
import subprocess
import threading
import time
import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.nodes import wait_for
from support.tasks import HANDLERS, TaskCase

from distnode.core import config
from distnode.core import defaults
from distnode.core import keys
from distnode.core.exits import TIMED_OUT
from distnode.tasks import admin
from distnode.tasks import reclaim
from distnode.tasks import submit
from distnode.tasks import worker

SERVER = RedisServer(name="submit")  # started by the first class, closed after the module


class Submit(TaskCase):
    shared_server = SERVER

    def test_idempotency_key(self):
        a = self.ctx("a")
        first = submit.submit(a, "true", "{}", key="order-42")
        again = submit.submit(a, "true", '{"other": 1}', key="order-42")
        self.assertTrue(first["created"])
        self.assertEqual((again["id"], again["created"]), (first["id"], False))
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 1)
        worker.work_tick(a)
        self.assertFalse(submit.submit(a, "true", "{}", key="order-42")["created"])  # done: still remembered
        self.assertEqual(admin.purge(a, "done", 0), 1)
        self.assertIsNone(SERVER.command("GET", keys.task_idempotency("order-42")))
        self.assertTrue(submit.submit(a, "true", "{}", key="order-42")["created"])  # purged: free again

    def test_an_events_stream_of_another_type_refuses_only_a_new_route(self):
        """Only a new route writes the events stream (route_added): only then may its type refuse the submit."""
        a = self.ctx("a")
        SERVER.command("SET", keys.events(), "not a stream")
        self.addCleanup(SERVER.command, "DEL", keys.events())
        self.assertTrue(submit.submit(a, "echo", "{}")["id"])
        with self.assertRaises(Exception) as refused:
            submit.submit(a, "echo", "{}", requires=["gpu"])
        self.assertIn(keys.events(), str(refused.exception))
        self.assertEqual(SERVER.command("SMEMBERS", keys.task_routes()), [], "half a submit was written")

    def test_resubmit_with_same_id_finds_the_task(self):
        a = self.ctx("a")
        first = submit.submit(a, "true", "{}", task_id="fixed-id")
        again = submit.submit(a, "true", "{}", task_id="fixed-id")
        self.assertEqual((first["id"], again["id"], again["created"]), ("fixed-id", "fixed-id", True))
        self.assertEqual(SERVER.command("XLEN", keys.task_stream()), 1)

    def test_targeted_task_runs_only_on_its_node(self):
        a, b = self.ctx("a"), self.ctx("b")
        SERVER.command("HSET", keys.nodes(), "b", "{}")
        sub = submit.submit(a, "env", "{}", target="b")
        self.assertTrue(sub["target_known"])
        self.assertFalse(submit.submit(a, "true", "{}", target="ghost")["target_known"])
        self.assertEqual(worker.work_tick(a)["ran"], 0)
        self.assertEqual(worker.work_tick(b)["done"], 1)
        self.assertEqual(self.state(sub["id"])["worker"], "b")

    def test_a_payload_is_json_as_every_reader_takes_it(self):
        for payload, why in (('"\\ud800"', "lone surrogate"), ('{"a": ["x\\udfff"]}', "lone surrogate"),
                             ('[1e999]', "1e999 is not a finite number"), ('{"a": 1, "a": 2}', "duplicate key 'a'"),
                             ("[" * 101 + "]" * 101, "nested deeper than 100 levels")):
            with self.subTest(payload=payload[:20]):
                with self.assertRaises(ValueError) as ctx:
                    submit.parse_payload(payload, "--payload")
                self.assertIn("--payload is not valid JSON: ", str(ctx.exception))
                self.assertIn(why, str(ctx.exception))
        self.assertEqual(submit.parse_payload('"\\ud83d\\ude00"', "--payload"), '"\\ud83d\\ude00"', "a pair is fine")

    def test_a_task_at_its_size_bounds_fits_every_reply_that_carries_it(self):
        # docs: "a claim or a `status` always fits": redis.max_reply_bytes at its floor, the largest payload
        # the relation allows there, a result at tasks.result_max_bytes
        reply_bytes, result_bytes = 2 * 1024 * 1024, 65536
        payload_bytes = reply_bytes - result_bytes - 65536
        a = self.ctx("a", max_payload_bytes=payload_bytes, handlers={
            "big": ["sh", "-c", "cat >/dev/null; head -c %d /dev/zero | tr '\\0' y" % (2 * result_bytes)]})
        a.cfg["redis"]["max_reply_bytes"] = reply_bytes
        config._check_relations(a.cfg)  # what load() checks: this config is accepted
        task_id = submit.submit(a, "big", '"%s"' % ("x" * (payload_bytes - 2)))["id"]
        self.assertEqual(worker.work_tick(a)["done"], 1, "the claim carried the payload")
        record = admin.status(a, task_id)
        self.assertEqual((len(record["payload"]), len(record["result"]), record["result_truncated"]),
                         (payload_bytes, result_bytes, True))


def no_poll(seconds: float) -> None:
    """The sleep a waiter that must block gets: any poll pause fails the wait."""
    raise AssertionError("polled (a %gs pause) instead of blocking on the task's end latch" % seconds)


class Waiter(threading.Thread):
    """``submit.wait`` in a thread, on a Context (and so a connection) of its own."""

    def __init__(self, ctx, task_id: str, deadline_s: float = None, sleep=no_poll, retried: bool = False):
        super().__init__(daemon=True)
        self.ctx, self.task_id, self.deadline_s, self.sleep, self.retried = ctx, task_id, deadline_s, sleep, retried
        self.record, self.error = None, None

    def run(self) -> None:
        wait = functools.partial(self.ctx.retried, submit.wait) if self.retried else submit.wait
        try:
            self.record = wait(self.ctx, self.task_id, self.deadline_s, sleep=self.sleep)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            self.error = exc

    def result(self, timeout_s: float = 20) -> dict:
        self.join(timeout_s)
        if self.is_alive():
            raise AssertionError("the waiter did not return within %gs" % timeout_s)
        if self.error is not None:
            raise self.error
        return self.record


class Wait(TaskCase):
    """``submit.wait`` wakes on the task's end latch (keys.task_ended), not on a poll."""

    shared_server = SERVER

    def waiter(self, task_id: str, deadline_s: float = None, socket_timeout_s: float = 4, retry_count: int = 0,
               **kw) -> Waiter:
        """A started Waiter on a new Context; a socket timeout of 4 s lets it block 2 s at a time."""
        ctx = self.ctx("waiter")
        ctx.cfg["redis"]["socket_timeout"] = socket_timeout_s
        ctx.cfg["node"].update(retry_count=retry_count, retry_delay=0.05)
        thread = Waiter(ctx, task_id, deadline_s, **kw)
        thread.start()
        self.addCleanup(thread.join, 10)
        return thread

    def blocked(self, count: int, *waiters) -> None:
        """Until ``count`` clients block in Redis (or a waiter failed: raised)."""
        def ready():
            failed = [w.error for w in waiters if w.error is not None]
            if failed:
                raise failed[0]
            return int(SERVER.info("clients")["blocked_clients"]) >= count
        wait_for(ready, 10, interval_s=0.01, message="%d blocked waiter(s)" % count)

    def blocked_client(self) -> str:
        """The id of the client blocked in BRPOPLPUSH."""
        lines = [line for line in SERVER.command("CLIENT", "LIST").splitlines() if "cmd=brpoplpush" in line]
        return lines[0].split()[0].partition("=")[2]

    def latch(self, task_id: str) -> list:
        return SERVER.command("LRANGE", keys.task_ended(task_id), 0, -1)

    def test_a_waiter_wakes_when_its_task_ends_not_on_a_poll(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        task = self.claim(w)
        waiting = self.waiter(tid)  # any poll pause fails it
        self.blocked(1, waiting)
        self.assertEqual(worker.finish(w, task, True, b'"hi"', ""), "done")
        rec = waiting.result()
        self.assertEqual((rec["state"], rec["result"]), ("done", '"hi"'))

    def test_an_end_that_wrote_no_latch_is_seen_after_one_block(self):
        """A node of an older release ends tasks without the latch: the state read after the block sees it."""
        a = self.ctx("a")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        def calls() -> int:
            stat = SERVER.info("commandstats").get("cmdstat_brpoplpush", "calls=0,")
            return int(stat["calls"]) if isinstance(stat, dict) else int(stat.split(",")[0].partition("=")[2])
        before = calls()
        waiting = self.waiter(tid, socket_timeout_s=8)  # blocks of 4 s
        self.blocked(1, waiting)
        SERVER.command("HSET", keys.task(tid), "state", "done")  # ended, no latch
        self.assertEqual(waiting.result()["state"], "done")
        self.assertEqual(calls() - before, 1, "a second block before seeing the end")

    def test_a_latch_redis_refuses_falls_back_to_polling(self):
        """A latch of another type (or an ACL without BRPOPLPUSH, a demoted master): poll, do not fail."""
        a = self.ctx("a")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        SERVER.command("SET", keys.task_ended(tid), "not a list")
        polls = []

        def poll(seconds):
            polls.append(seconds)
            if len(polls) == 2:
                SERVER.command("HSET", keys.task(tid), "state", "done")
        waiting = self.waiter(tid, sleep=poll)
        self.assertEqual(waiting.result()["state"], "done")
        self.assertEqual(len(polls), 2)

    def test_every_waiter_on_a_task_wakes(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "echo", '"hi"')["id"]
        task = self.claim(w)
        waiters = [self.waiter(tid) for _ in range(3)]
        self.blocked(3, *waiters)
        worker.finish(w, task, True, b"out", "")
        self.assertEqual([x.result()["state"] for x in waiters], ["done"] * 3)
        self.assertEqual(self.latch(tid), ["done"], "the element stays for a later waiter")
        self.assertEqual(submit.wait(self.ctx("late"), tid, sleep=no_poll)["state"], "done")

    def test_a_task_retried_after_its_end_is_waited_for_anew(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "flaky", "{}", max_attempts=1)["id"]
        worker.finish(w, self.claim(w), False, b"", "not yet")
        self.assertEqual(self.latch(tid), ["dead"])
        self.assertEqual(admin.retry(a, tid, a.operation()), "ok")
        self.assertEqual(self.latch(tid), [], "back in the queue: the old end is gone")
        task = self.claim(w)
        waiting = self.waiter(tid)  # woken by the old end, it would find the task running and poll: fails
        self.blocked(1, waiting)
        worker.finish(w, task, True, b"second run", "")
        rec = waiting.result()
        self.assertEqual((rec["state"], rec["result"], rec["runs"]), ("done", "second run", 2))

    def test_the_deadline_bounds_the_wait_and_the_latch_expires(self):
        a = self.ctx("a")
        tid = submit.submit(a, "echo", "{}")["id"]
        pauses = []
        started = time.monotonic()
        # a 60 s socket timeout lets a block last 30 s: only the deadline ends this wait early
        rec = self.waiter(tid, time.monotonic() + 1.5, socket_timeout_s=60, sleep=pauses.append).result(25)
        self.assertEqual(rec["state"], "pending", "the task stays queued")
        self.assertLess(time.monotonic() - started, 15, "a block ran past the deadline")
        worker.work_tick(self.ctx("w", done_ttl_s=5))  # the node that ends a task sets its retention
        self.assertEqual(self.latch(tid), ["done"])
        self.assertTrue(0 < SERVER.command("PTTL", keys.task_ended(tid)) <= 5000, "never past the record's ttl")
        tid = submit.submit(a, "echo", "{}")["id"]
        worker.work_tick(self.ctx("w"))
        self.assertTrue(5000 < SERVER.command("PTTL", keys.task_ended(tid)) <= defaults.TASK_END_LATCH_TTL_MS)
        self.assertEqual(admin.purge(a, "done", 0), 2)
        self.assertEqual(self.latch(tid), [], "purged with its task")

    def test_dead_lettering_ends_the_wait_by_each_path(self):
        a, w, leader = self.ctx("a"), self.ctx("w"), self.make_leader()
        for path in ("attempts used up", "reclaimed", "interrupted"):
            with self.subTest(path=path):
                tid = submit.submit(a, "fail", "{}", max_attempts=1)["id"]
                task = self.claim(w)
                waiting = self.waiter(tid)
                self.blocked(1, waiting)
                if path == "attempts used up":
                    worker.finish(w, task, False, b"", "boom")
                elif path == "reclaimed":
                    self.lapse(tid)
                    self.assertEqual(reclaim.reclaim(leader, 7), 1)
                else:  # the worker restarted: its next claim counts the lapsed attempt as interrupted
                    self.lapse(tid)
                    self.assertIsNone(worker.claim(w, [keys.task_stream()], read_new=False)[0])
                self.assertEqual(waiting.result()["state"], "dead")
                self.assertEqual(self.latch(tid), ["dead"])

    def test_a_worker_that_fails_every_attempt_ends_the_wait(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "fail", "{}", max_attempts=2)["id"]
        self.assertEqual(worker.work_tick(w)["dead"], 1)  # both attempts in one tick (no backoff)
        self.assertEqual(self.latch(tid), ["dead"])
        self.assertEqual(submit.wait(self.ctx("late"), tid, sleep=no_poll)["state"], "dead")

    def test_without_blocking_reads_it_polls(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "echo", "{}")["id"]
        task = self.claim(w)
        pauses = []

        def pause(seconds: float) -> None:
            pauses.append(seconds)
            time.sleep(seconds)
        SERVER.command("CONFIG", "RESETSTAT")
        ctx = self.ctx("waiter")
        ctx.cfg["redis"].update(blocking_reads=False, socket_timeout=4)
        waiting = Waiter(ctx, tid, sleep=pause)
        waiting.start()
        wait_for(lambda: pauses, 10, interval_s=0.01, message="a poll pause")
        worker.finish(w, task, True, b"out", "")
        self.assertEqual(waiting.result()["state"], "done")
        self.assertEqual(SERVER.command_calls("brpoplpush"), 0)

    def test_a_waiter_whose_connection_drops_waits_on(self):
        a, w = self.ctx("a"), self.ctx("w")
        tid = submit.submit(a, "echo", "{}")["id"]
        task = self.claim(w)
        waiting = self.waiter(tid, retried=True, retry_count=2)
        self.blocked(1, waiting)
        first = self.blocked_client()
        SERVER.command("CLIENT", "KILL", "ID", first)  # as a restart or a dropped link would
        self.blocked(1, waiting)
        self.assertNotEqual(self.blocked_client(), first, "the retried wait blocks again, on a new connection")
        worker.finish(w, task, True, b"out", "")
        self.assertEqual(waiting.result()["state"], "done")

    def test_submit_wait_prints_the_result_of_a_task_a_worker_ran(self):
        # a 60 s socket timeout lets a block last 30 s: returning sooner means the end woke it
        client = self.new_node("client", {"redis": {"socket_timeout": 60}, "election": {"lease_ttl": 150}})
        runner = self.new_node("runner", {"tasks": {"handlers": HANDLERS}})
        proc = subprocess.Popen(client.argv("task_queue.py", "submit", "--type", "echo", "--payload", '"hi"',
                                            "--wait", "--wait-timeout", "100"),
                                env=client.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        self.blocked(1)
        self.assertEqual(runner.run_json("task_queue.py", "work")["done"], 1)
        out, err = proc.communicate(timeout=15)
        self.assertEqual((proc.returncode, out), (0, '"hi"\n'), err)
        late = client.run("task_queue.py", "submit", "--type", "echo", "--require", "nobody", "--wait",
                          "--wait-timeout", "1.5", "--quiet")
        self.assertEqual(late.returncode, TIMED_OUT, late.stderr)


if __name__ == "__main__":
    unittest.main()
