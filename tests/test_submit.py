"""tasks/submit.py: enqueueing, idempotency, targets; checked before anything is sent."""

import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.tasks import TaskCase

from distnode.core import keys
from distnode.tasks import admin
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


if __name__ == "__main__":
    unittest.main()
