"""tasks/admin.py: status, list, stats, retry and purge of tasks in a real redis-server."""

import os
import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.fake_servers import FakeServer, lose_reply_proxy
from support.tasks import TASK_HANDLERS as HANDLERS
from support.tasks import TaskCase, local_context

from distnode import lua
from distnode.core import keys
from distnode.tasks import admin
from distnode.tasks import submit
from distnode.tasks import worker

SERVER = RedisServer(name="admin")  # started by the first class, closed after the module


class Admin(TaskCase):
    shared_server = SERVER

    def test_list_stats_purge(self):
        a = self.ctx("a")
        done = submit.submit(a, "true", "{}")["id"]
        worker.work_tick(a)
        dead = submit.submit(a, "fail", "{}", max_attempts=1)["id"]
        worker.work_tick(a)
        waiting = submit.submit(a, "true", "{}")["id"]
        self.assertEqual([t["id"] for t in admin.list_tasks(a)], [waiting, dead, done])
        self.assertEqual([t["id"] for t in admin.list_tasks(a, "dead")], [dead])
        st = admin.stats(a)
        self.assertEqual((st["depth"], st["running"], st["done"], st["dead"], st["dead_letters"]), (1, 0, 1, 1, 1))
        self.assertGreaterEqual(st["oldest_pending_age_s"], 0)
        claimed = self.claim(a)
        self.assertEqual(admin.stats(a)["in_flight_by_node"], {"a": 1})
        self.assertEqual(claimed.id, waiting)
        self.assertEqual(admin.purge(a, "done", 3600), 0)
        self.assertEqual(admin.purge(a, "done", 0), 1)
        self.assertEqual(admin.purge(a, "dead", 0), 1)
        self.assertIsNone(admin.status(a, done))
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 0)

    def test_max_attempts_dead_letter_then_retry(self):
        a = self.ctx("a")
        tid = submit.submit(a, "fail", '{"n": 1}', max_attempts=2)["id"]
        result = worker.work_tick(a)
        self.assertEqual((result["retry"], result["dead"]), (1, 1))
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["error"]), ("dead", 2, "exit 3: boom"))
        dead = SERVER.command("XRANGE", keys.task_dead(), "-", "+")
        self.assertEqual(len(dead), 1)
        fields = dict(zip(dead[0][1][::2], dead[0][1][1::2]))
        self.assertEqual((fields["task"], fields["error"], fields["attempts"]), (tid, "exit 3: boom", "2"))
        self.assertEqual(admin.retry(a, tid, a.operation()), "ok")
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 0)
        self.assertEqual(SERVER.command("PTTL", keys.task(tid)), -1)
        self.assertEqual(admin.retry(a, tid, a.operation()), "pending")
        fixed = self.ctx("b", handlers=dict(HANDLERS, fail=["echo", "fixed"]))
        self.assertEqual(worker.work_tick(fixed)["done"], 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"], rec["runs"], rec["result"]), ("done", 1, 3, "fixed\n"))
        self.assertEqual(admin.retry(a, "no-such-task", a.operation()), "missing")

    def test_a_retry_whose_reply_was_lost_reports_ok_and_puts_the_task_back_once(self):
        a = self.ctx("a")
        tid = submit.submit(a, "fail", "{}", max_attempts=1)["id"]
        self.assertEqual(worker.work_tick(a)["dead"], 1)
        script = lua.script("task_retry")
        proxy = FakeServer(lose_reply_proxy(SERVER.host, SERVER.port, {script.source.encode(), script.sha.encode()}))
        self.addCleanup(proxy.stop)
        p = local_context(os.path.join(self.tmp, "p-proxy"), "p", proxy.start(), {"handlers": HANDLERS})
        self.ctxs.append(p)
        p.cfg["node"]["retry_count"] = 1  # what task_queue.py retry does: ctx.retried around the script
        op = p.operation()
        self.assertEqual(p.retried(admin.retry, p, tid, op), "ok")
        self.assertEqual(proxy.connections, 2, "the first reply was not lost, so this proved nothing")
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 0)
        self.assertEqual(self.zcard("pending"), 1)
        ttl_ms = SERVER.command("PTTL", keys.task_op(op.token))
        self.assertTrue(0 < ttl_ms <= op.record_ttl_ms, ttl_ms)
        self.assertEqual(admin.retry(a, tid, a.operation()), "pending", "a new retry is a new operation")


if __name__ == "__main__":
    unittest.main()
