"""tasks/reclaim.py: the leader's fenced sweep moves the tasks of dead, hung or leaving workers, and repairs
lost entries, only once an attempt's lease lapsed in Redis.
"""

import time
import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.tasks import TaskCase

from distnode.core import keys
from distnode.tasks import common
from distnode.tasks import handler
from distnode.tasks import reclaim
from distnode.tasks import routes
from distnode.tasks import submit
from distnode.tasks import worker

SERVER = RedisServer(name="reclaim")  # started by the first class, closed after the module


class Reclaim(TaskCase):
    shared_server = SERVER

    def test_offline_worker_reclaimed_and_stale_finish_ignored(self):
        w1, w2, leader = self.ctx("w1"), self.ctx("w2"), self.make_leader()
        tid = submit.submit(w1, "echo", '"first"')["id"]
        stuck = self.claim(w1)  # w1 has no hb key: it is offline
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 1))
        self.assertIn("worker w1 is offline or has left", rec["error"])
        self.assertEqual(SERVER.command("XPENDING", keys.task_stream(), common.GROUP)[0], 0)
        self.assertEqual(worker.work_tick(w2)["done"], 1)
        self.assertEqual(worker.finish(w1, stuck, True, b"late", ""), "stale")
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["result"], rec["worker"], rec["attempts"]), ("done", '"first"', "w2", 2))

    def test_reclaim_is_fenced(self):
        w1, leader = self.ctx("w1"), self.make_leader(epoch=7)
        tid = submit.submit(w1, "true", "{}")["id"]
        self.claim(w1)
        self.assertEqual(reclaim.reclaim(leader, 6), 0)
        SERVER.command("SET", keys.leader(), "someone-else", "PX", 60000)
        self.assertEqual(reclaim.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        with open(leader.log.path) as fh:
            self.assertIn("task reclaim refused: FENCED", fh.read())

    def test_reclaim_dead_letters_when_attempts_are_used_up(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = submit.submit(w1, "true", "{}", max_attempts=1)["id"]
        self.claim(w1)
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(self.state(tid)["state"], "dead")
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 1)

    def test_unstarted_entry_of_offline_worker_is_requeued_without_an_attempt(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = submit.submit(w1, "true", "{}")["id"]
        SERVER.command("XREADGROUP", "GROUP", common.GROUP, "w1", "COUNT", 1, "STREAMS", keys.task_stream(), ">")
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))
        self.assertEqual(worker.work_tick(leader)["done"], 1)

    def test_hung_worker_on_a_live_node_is_reclaimed_after_timeout_and_grace(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)  # w1 is alive
        tid = submit.submit(w1, "true", "{}", timeout_s=2)["id"]  # 2 s: still within it below, however loaded
        self.claim(w1)
        self.assertEqual(reclaim.reclaim(leader, 7), 0)  # within its timeout
        time.sleep(2.2)  # at least past it
        self.assertEqual(reclaim.reclaim(leader, 7), 0)  # its attempt lease still holds
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        rec = self.state(tid)
        self.assertEqual(rec["state"], "pending")
        self.assertIn("no result from w1", rec["error"])

    def test_grace_is_respected(self):
        w1, _ = self.ctx("w1"), self.make_leader()
        leader = self.ctx("leader", reclaim_grace_s=30)
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)
        submit.submit(w1, "true", "{}", timeout_s=0.1)
        self.claim(w1)
        time.sleep(0.3)
        self.assertEqual(reclaim.reclaim(leader, 7), 0)

    def test_running_task_whose_entry_was_acked_is_still_reclaimed(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        SERVER.command("SET", keys.heartbeat("w1"), "1", "PX", 60000)
        tid = submit.submit(w1, "true", "{}", timeout_s=0.2)["id"]
        task = self.claim(w1)
        SERVER.command("XACK", task.stream, common.GROUP, task.entry)  # the entry is gone from every PEL
        time.sleep(0.4)
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(self.state(tid)["state"], "pending")
        self.assertEqual(worker.work_tick(leader)["done"], 1)

    def test_pending_task_whose_entry_was_deleted_is_requeued(self):
        a, leader = self.ctx("a"), self.make_leader()
        tid = submit.submit(a, "true", "{}")["id"]
        SERVER.command("XDEL", keys.task_stream(), self.state(tid)["entry"])
        self.assertEqual(worker.work_tick(a)["ran"], 0)
        time.sleep(0.01)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(worker.work_tick(a)["done"], 1)

    def test_reclaim_cost_does_not_grow_with_nodes(self):
        leader = self.make_leader()
        for i in range(30):
            w = self.ctx("w%d" % i)
            tid = submit.submit(w, "true", "{}", target="w%d" % i)["id"]
            self.claim(w)
            self.lapse(tid)
        before = leader.redis.round_trips
        self.assertEqual(reclaim.reclaim(leader, 7), 30)
        self.assertEqual(leader.redis.round_trips - before, 1)

    def test_the_repair_sweep_reaches_a_lost_entry_behind_tasks_for_an_absent_node(self):
        a, leader = self.ctx("a"), self.make_leader()
        for _ in range(150):
            submit.submit(a, "true", "{}", target="gone")
        lost = submit.submit(a, "true", "{}")["id"]
        SERVER.command("XDEL", keys.task_stream(), self.state(lost)["entry"])
        time.sleep(0.01)
        for _ in range(5):
            reclaim.reclaim(leader, 7)
            if worker.work_tick(a)["done"]:
                break
        self.assertEqual(self.state(lost)["state"], "done")
        self.assertEqual(self.zcard("pending"), 150)


class AttemptLease(TaskCase):
    """A running attempt is moved only when its attempt lease lapsed in Redis (issue 13, item 8)."""

    shared_server = SERVER

    def test_a_lost_heartbeat_does_not_reclaim_an_attempt_whose_lease_holds(self):
        w1, leader = self.ctx("w1"), self.make_leader()
        tid = submit.submit(w1, "true", "{}")["id"]
        self.claim(w1)  # w1 has no hb key, as when only its heartbeat loop died
        self.assertEqual(reclaim.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual((self.state(tid)["state"], self.state(tid)["attempts"]), ("pending", 1))

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
        ids = [submit.submit(w1, "true", "{}")["id"] for _ in range(2)]
        for _ in ids:
            self.claim(w1)
        for tid, stale in zip(ids, (False, True)):
            self.pre_lease(tid, stale)
        self.assertEqual(reclaim.reclaim(leader, 7), 0)
        self.assertEqual([self.state(t)["state"] for t in ids], ["running", "running"])
        # past its deadline (grace 0 here): the old rule moves the first
        SERVER.command("ZADD", keys.task_index("running"), 1, ids[0])
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(self.state(ids[0])["state"], "pending")
        self.assertIn("deadline", self.state(ids[0])["error"])
        # w1's heartbeat gone: the old rule moves the second
        SERVER.command("DEL", keys.heartbeat("w1"))
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(self.state(ids[1])["state"], "pending")

    def test_a_wrong_typed_lease_key_wedges_nothing(self):
        leader, w1 = self.make_leader(), self.ctx("w1")
        stuck = submit.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        lapsed = submit.submit(w1, "true", "{}")["id"]
        self.claim(w1)
        self.lapse(lapsed)
        SERVER.command("DEL", keys.task_lease(stuck))
        SERVER.command("HSET", keys.task_lease(stuck), "x", "1")  # an operator's (or a script's) mistake
        self.assertEqual(reclaim.reclaim(leader, 7), 1)  # the other task still moves; this one is not lapsed yet
        self.assertEqual((self.state(stuck)["state"], self.state(lapsed)["state"]), ("running", "pending"))
        worker.claim(w1, routes.worker_streams(w1), read_new=True)  # the worker's claim is not wedged either
        lease = handler.attempt_lease(w1, task)
        self.assertTrue(lease.renew())  # the renewal puts its lease back as a string
        self.assertEqual(SERVER.command("TYPE", keys.task_lease(stuck)), "string")
        SERVER.command("DEL", keys.task_lease(stuck))
        SERVER.command("HSET", keys.task_lease(stuck), "x", "1")
        SERVER.command("HSET", keys.task(stuck), "lease_until_ms", 0)  # past the attempt's lease
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(self.state(stuck)["state"], "pending")
        self.assertEqual(SERVER.command("EXISTS", keys.task_lease(stuck)), 0)
        events = SERVER.command("XRANGE", keys.events(), "-", "+")
        self.assertTrue(any(keys.task_lease(stuck).encode() in b" ".join(
            f if isinstance(f, bytes) else str(f).encode() for f in e[1]) for e in events), events)
        self.assertEqual(lease.renew(), 0)  # and the old attempt learns it lost its lease

    def test_a_deleted_lease_key_moves_nothing_before_the_attempt_s_lease_until(self):
        leader, w1 = self.make_leader(), self.ctx("w1")
        tid = submit.submit(w1, "true", "{}")["id"]
        task = self.claim(w1)
        SERVER.command("DEL", keys.task_lease(tid))  # an operator's DEL, or a replica that missed the key
        self.assertEqual(reclaim.reclaim(leader, 7), 0)
        self.assertEqual(self.state(tid)["state"], "running")
        self.assertTrue(handler.attempt_lease(w1, task).renew())  # its worker renews it back
        self.assertEqual(SERVER.command("TYPE", keys.task_lease(tid)), "string")
        self.lapse(tid)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)


if __name__ == "__main__":
    unittest.main()
