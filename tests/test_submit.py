"""tasks/submit.py: enqueueing, idempotency, targets; checked before anything is sent."""

import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.tasks import TaskCase

from distnode.core import config
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


if __name__ == "__main__":
    unittest.main()
