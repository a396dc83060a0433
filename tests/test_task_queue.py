"""task_queue.py as users run it: separate processes per node, workers killed and frozen.

Each node is a NodeEnv (its own config dir, log dir and OPENCLAW_NODE_ID)
against one private redis-server; the leader's reclaim comes from
failover_manager.py running in --loop mode with one-second intervals.
The Redis 5.0 compatibility check lives in test_redis5_tasks.py.
"""

import json
import os
import shutil
import signal
import unittest

from support.base import RedisCase, slow  # first: puts scripts/ on sys.path
from distnode.core import keys
from distnode.run.context import Context
from distnode.tasks import common
from distnode.tasks import routes
from distnode.tasks import submit
from distnode.tasks import worker
from support import tasks
from support.nodes import NodeEnv, process_alive, wait_for
from support.redis_server import RedisServer

TASKS = {
    "handlers": dict(
        tasks.HANDLERS,
        slow=["sh", "-c", 'sleep 0.5; echo "$NODE_ID"'],
        hang=["sh", "-c", 'sleep 60 & echo $! > "$PID_DIR/$TASK_ID"; wait'],
        # says it started, then waits until the test opens the gate
        gated=["sh", "-c", 'touch "$GATE_DIR/started.$NODE_ID"; '
                           'while [ ! -e "$GATE_DIR/open" ]; do sleep 0.05; done; echo "$NODE_ID"'],
    ),
    "backoff_base_s": 0, "reclaim_grace_s": 1, "tick_budget_s": 2, "poll_interval_s": 0.1,
    "default_timeout_s": 20,
}
SERVER = RedisServer(name="task-queue")  # the module's; support.base starts and closes it


class Cluster(RedisCase):
    shared_server = SERVER
    tmp_prefix = "task-queue-"

    @classmethod
    def setUpClass(cls):
        tasks.drop_env_overrides()  # local_ctx()'s in-process Contexts read only their config files
        super().setUpClass()

    def setUp(self):
        super().setUp()
        self.nodes = []
        self.ctxs = []

    def tearDown(self):
        for node in self.nodes:
            node.kill_all()
        tasks.close_contexts(self.ctxs)

    def node(self, node_id: str, **overrides) -> NodeEnv:
        node = NodeEnv(self.tmp, node_id, SERVER, config={"tasks": dict(TASKS, **overrides)})
        self.nodes.append(node)
        return node

    def local_ctx(self, node_id: str) -> Context:
        """An in-process Context, for bulk submits and for claims that must not finish."""
        ctx = tasks.local_context(os.path.join(self.tmp, "local-" + node_id), node_id, SERVER, TASKS)
        self.ctxs.append(ctx)
        return ctx

    def status(self, node: NodeEnv, task_id: str) -> dict:
        return node.run_json("task_queue.py", "status", task_id)

    def wait_leader(self, node_id: str = None) -> str:
        def leader():
            holder = SERVER.command("GET", keys.leader())
            return holder if holder and (node_id is None or holder == node_id) else None
        return wait_for(leader, 10, message="a leader")

    def task_state(self, task_id: str) -> str:
        return SERVER.command("HGET", keys.task(task_id), "state")


class UserFacing(Cluster):
    def test_submit_on_one_node_runs_on_another(self):
        n1, n2 = self.node("n1"), self.node("n2")
        submitted = n1.run("task_queue.py", "submit", "--type", "echo", "--payload", '{"x":1}')
        self.assertEqual(submitted.returncode, 0, submitted.stderr)
        task_id = submitted.stdout.strip()
        self.assertRegex(task_id, r"^\d+-[0-9a-f]{10}$")
        worked = n2.run_json("task_queue.py", "work")
        self.assertEqual((worked["ran"], worked["done"]), (1, 1))
        shown = n1.run("task_queue.py", "status", task_id)
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertIn("state:     done", shown.stdout)
        self.assertIn("node:      n2", shown.stdout)
        self.assertIn('result:\n{"x":1}', shown.stdout)
        rec = self.status(n1, task_id)
        self.assertEqual((rec["state"], rec["result"], rec["worker"], rec["attempts"]), ("done", '{"x":1}', "n2", 1))

    def test_payload_sources_and_idempotency(self):
        n1 = self.node("n1")
        path = os.path.join(self.tmp, "payload.json")
        with open(path, "w") as fh:
            fh.write('{"from": "file"}')
        from_file = n1.run("task_queue.py", "submit", "--type", "echo", "--payload-file", path, "--key", "k1")
        from_stdin = n1.run("task_queue.py", "submit", "--type", "echo", "-", input='{"from": "stdin"}')
        again = n1.run("task_queue.py", "submit", "--type", "echo", "--payload", "{}", "--key", "k1")
        self.assertEqual([r.returncode for r in (from_file, from_stdin, again)], [0, 0, 0])
        self.assertEqual(again.stdout, from_file.stdout)
        self.assertEqual(n1.run_json("task_queue.py", "work")["done"], 2)
        self.assertEqual(self.status(n1, from_stdin.stdout.strip())["result"], '{"from": "stdin"}')
        self.assertEqual(self.status(n1, from_file.stdout.strip())["result"], '{"from": "file"}')

    def test_bad_input_is_one_line_and_changes_nothing(self):
        n1 = self.node("n1")
        cases = [
            (("submit", "--type", "echo", "--payload", "{nope"), 2, "--payload is not valid JSON"),
            (("submit", "--payload", "{}"), 2, "submit needs --type"),
            (("submit", "--type", "bad type"), 2, "--type must be 1 to 64 characters"),
            (("submit", "--type", "echo", "--max-attempts", "0"), 2, "--max-attempts must be a whole number above 0, got '0'"),
            (("submit", "--type", "echo", "--payload-file", "/nonexistent"), 2, "cannot read --payload-file"),
            (("submit", "--type", "echo", "--payload", "{}", "-"), 2, "give the payload once"),
            (("status", "no-such-task"), 1, "no task no-such-task"),
            (("retry", "no-such-task"), 1, "no task no-such-task"),
            (("list", "--state", "weird"), 2, "--state must be one of"),
            (("stats", "--loop"), 2, "--loop works only with work"),
        ]
        for args, code, text in cases:
            result = n1.run("task_queue.py", *args, input="")
            self.assertEqual(result.returncode, code, (args, result.stderr))
            self.assertIn(text, result.stderr, args)
            self.assertNotIn("Traceback", result.stderr, args)
        self.assertEqual(SERVER.command("KEYS", "openclaw:tasks:*"), [])

    def test_list_stats_retry_purge(self):
        n1 = self.node("n1")
        dead_id = n1.run("task_queue.py", "submit", "--type", "fail", "--max-attempts", "1").stdout.strip()
        n1.run("task_queue.py", "work")
        listed = n1.run("task_queue.py", "list", "--state", "dead")
        self.assertIn(dead_id, listed.stdout)
        self.assertIn("dead", listed.stdout)
        self.assertEqual(n1.run_json("task_queue.py", "stats")["dead"], 1)
        self.assertIn("error:     exit 3: boom", n1.run("task_queue.py", "status", dead_id).stdout)
        retried = n1.run("task_queue.py", "retry", dead_id)
        self.assertEqual(retried.returncode, 0, retried.stderr)
        again = n1.run("task_queue.py", "retry", dead_id)
        self.assertEqual(again.returncode, 1)
        self.assertIn("is pending, not dead", again.stderr)
        n1.run("task_queue.py", "work")
        purged = n1.run_json("task_queue.py", "purge", "--dead-older-than", "0", "--done-older-than", "0")
        self.assertEqual(purged, {"dead": 1, "done": 0})
        self.assertEqual(n1.run("task_queue.py", "status", dead_id).returncode, 1)

    def test_targeted_task_runs_only_on_its_node(self):
        n1, n2 = self.node("n1"), self.node("n2")
        n2.run("heartbeat.py")
        task_id = n1.run("task_queue.py", "submit", "--type", "echo", "--node", "n2").stdout.strip()
        self.assertEqual(n1.run_json("task_queue.py", "work")["ran"], 0)
        self.assertEqual(self.task_state(task_id), "pending")
        self.assertEqual(n2.run_json("task_queue.py", "work")["done"], 1)
        self.assertEqual(self.status(n1, task_id)["worker"], "n2")

    def test_sigterm_to_a_one_shot_worker_kills_its_handler(self):
        n1 = self.node("n1")
        task_id = n1.run("task_queue.py", "submit", "--type", "hang", "--max-attempts", "1").stdout.strip()
        worker = n1.spawn("task_queue.py", "work", env={"PID_DIR": self.tmp})
        pid_file = os.path.join(self.tmp, task_id)
        wait_for(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file), 10, message="the handler")
        with open(pid_file) as fh:
            handler_child = int(fh.read())
        worker.send_signal(signal.SIGTERM)  # the worker alone, as cron's timeout would
        self.assertEqual(worker.wait(10), 128 + signal.SIGTERM)
        wait_for(lambda: not process_alive(handler_child), 5, message="the handler to be killed with its worker")
        # counted once its attempt lease lapsed (node.heartbeat_ttl after the claim: nobody renews it)
        wait_for(lambda: n1.run_json("task_queue.py", "work")["interrupted"], 20, interval_s=0.5,
                 message="the next tick to count the interrupted attempt")
        rec = self.status(n1, task_id)
        self.assertEqual(rec["state"], "dead")
        self.assertIn("was interrupted", rec["error"])

    def test_sigkill_of_a_worker_takes_its_handler_and_grandchild_and_no_copy_runs_twice(self):
        copies = os.path.join(self.tmp, "copies")
        os.mkdir(copies)
        # each copy first checks that no earlier copy's process lives on, then records its shell and a
        # grandchild sleep loop (both in the handler's process group), works 8 s and answers its node id
        script = ('for p in $(cat "$COPIES/pids" 2>/dev/null); do [ -e "/proc/$p" ] && ! grep -q "^State:.*Z" '
                  '"/proc/$p/status" 2>/dev/null && echo "$p" >> "$COPIES/overlaps"; done; echo $$ >> "$COPIES/pids"; '
                  '(while true; do sleep 0.2; done) & echo $! >> "$COPIES/pids"; sleep 8; kill $!; echo "$NODE_ID"')
        n1 = self.node("n1", handlers=dict(TASKS["handlers"], long=["sh", "-c", script]))
        task_id = n1.run("task_queue.py", "submit", "--type", "long", "--max-attempts", "3").stdout.strip()
        worker = n1.spawn("task_queue.py", "work", env={"COPIES": copies})
        pids_file = os.path.join(copies, "pids")

        def pids():
            with open(pids_file) as fh:
                return [int(p) for p in fh.read().split()]
        wait_for(lambda: os.path.exists(pids_file) and len(pids()) >= 2, 10, message="the handler and its grandchild")
        first = pids()
        os.kill(worker.pid, signal.SIGKILL)  # the worker alone, mid-handler
        worker.wait()
        wait_for(lambda: not any(process_alive(p) for p in first), 5, message="the handler and grandchild to die")
        n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})  # counts it interrupted
        wait_for(lambda: self.task_state(task_id) == "done", 30, interval_s=0.1, message="the task to be done")
        self.assertFalse(os.path.exists(os.path.join(copies, "overlaps")), "two copies ran at once")
        rec = self.status(n1, task_id)
        self.assertEqual((rec["attempts"], rec["runs"], rec["result"]), (2, 2, "n1\n"))

    def test_sigterm_to_a_loop_worker_kills_its_handler_before_handing_the_task_back(self):
        n1 = self.node("n1")
        task_id = n1.run("task_queue.py", "submit", "--type", "hang").stdout.strip()
        worker = n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"PID_DIR": self.tmp})
        pid_file = os.path.join(self.tmp, task_id)
        wait_for(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file), 10, message="the handler")
        with open(pid_file) as fh:
            handler_child = int(fh.read())
        worker.send_signal(signal.SIGTERM)
        self.assertEqual(worker.wait(15), 0)
        self.assertFalse(process_alive(handler_child), "the handler outlived its worker's graceful stop")
        rec = self.status(n1, task_id)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))

    def test_work_holds_the_node_lock(self):
        n1 = self.node("n1", tick_budget_s=5)
        n1.run("task_queue.py", "submit", "--type", "slow")
        busy = n1.spawn("task_queue.py", "work")
        wait_for(lambda: SERVER.command("ZCARD", keys.task_index("running")), 10, message="the task to start")
        second = n1.run("task_queue.py", "work", "--json")
        self.assertEqual((second.returncode, second.stdout), (0, ""))
        self.assertIn("still holds the lock", second.stderr)
        self.assertEqual(busy.wait(10), 0)


class Failures(Cluster):
    @slow("500 tasks through three workers, one killed: about 30 s")
    def test_three_workers_500_tasks_one_killed(self):
        workers = [self.node("w%d" % i) for i in (1, 2, 3)]
        for node in workers:
            node.spawn_all()
        leader = self.wait_leader()
        wait_for(lambda: all(SERVER.command("EXISTS", keys.heartbeat(n.node_id)) for n in workers), 10,
                 message="three heartbeats")
        for node in workers:
            node.spawn("task_queue.py", "work", "--loop", "--quiet")
        submitter = self.local_ctx("submitter")
        ids = [submit.submit(submitter, "true", "{}")["id"] for _ in range(500)]
        victim = next(n for n in workers if n.node_id != leader)

        def victim_busy():
            summary = SERVER.command("XPENDING", keys.task_stream(), common.GROUP)
            return int(SERVER.command("ZCARD", keys.task_index("done"))) >= 50 and any(
                name == victim.node_id for name, _ in summary[3] or [])
        wait_for(victim_busy, 20, interval_s=0.001, message="the victim to work on a task")
        victim.kill_all()
        in_hand = SERVER.command("XPENDING", keys.task_stream(), common.GROUP, "-", "+", 10, victim.node_id)

        def finished():
            return (SERVER.command("ZCARD", keys.task_index("done"))
                    + SERVER.command("ZCARD", keys.task_index("dead"))) == 500
        wait_for(finished, 90, interval_s=0.1, message="all 500 tasks to end")  # each start: a supervisor
        records = [dict(zip(*[iter(SERVER.command("HGETALL", keys.task(t)))] * 2)) for t in ids]
        self.assertEqual([r["state"] for r in records], ["done"] * 500)
        duplicates = sum(int(r["runs"]) - 1 for r in records)
        self.assertLessEqual(duplicates, 1, "one kill can repeat at most the one task it was running")
        self.assertEqual(duplicates, sum(int(r["attempts"]) - 1 for r in records))
        self.assertEqual(SERVER.command("XPENDING", keys.task_stream(), common.GROUP)[0], 0)
        for entry_id, _consumer, _idle, _count in in_hand:
            task_id = dict(zip(*[iter(SERVER.command("XRANGE", keys.task_stream(), entry_id, entry_id)[0][1])] * 2))
            rec = records[ids.index(task_id["task"])]
            self.assertNotEqual(rec["worker"], victim.node_id)
        ran_by = {r["worker"] for r in records}
        self.assertEqual(ran_by, {"w1", "w2", "w3"})

    def test_killed_worker_task_done_by_another_node_within_a_failover_tick(self):
        n1, n2 = self.node("n1"), self.node("n2")
        n1.spawn_all()
        self.wait_leader("n1")
        n2.spawn("heartbeat.py", "--loop", "--quiet")
        n2.spawn("task_queue.py", "work", "--loop", "--quiet")
        task_id = n1.run("task_queue.py", "submit", "--type", "slow").stdout.strip()
        wait_for(lambda: self.task_state(task_id) == "running", 10, interval_s=0.01, message="n2 to start it")
        n2.kill_all()
        n1.spawn("task_queue.py", "work", "--loop", "--quiet")
        wait_for(lambda: self.task_state(task_id) == "done", 20, interval_s=0.05, message="the task to be done")
        rec = self.status(n1, task_id)
        self.assertEqual((rec["worker"], rec["result"], rec["attempts"]), ("n1", "n1\n", 2))
        self.assertIn("n2", rec["error"])  # offline, or its attempt lease lapsed first: whichever went first
        offline_at = json.loads(SERVER.command("HGET", keys.nodes(), "n2"))["offline_at"]
        self.assertLess(rec["started_at"] - offline_at, 3.0, "reclaimed in the tick that saw n2 offline")

    def test_hung_worker_is_reclaimed_and_its_late_result_dropped(self):
        lead, w1, w2 = self.node("lead"), self.node("w1"), self.node("w2")
        lead.spawn_all()
        self.wait_leader("lead")
        for node in (w1, w2):
            node.spawn("heartbeat.py", "--loop", "--quiet")
        gate = {"GATE_DIR": self.tmp}
        worker = w1.spawn("task_queue.py", "work", "--loop", "--quiet", env=gate)
        task_id = lead.run("task_queue.py", "submit", "--type", "gated", "--timeout", "1").stdout.strip()
        # Freeze w1 once its handler runs, not once Redis says "running": frozen between its claim and the
        # claim's reply, w1 wakes past the request's deadline, takes the reply as lost, never runs that
        # attempt (it is gone when the claim is sent again) and has no late result to drop.
        wait_for(lambda: os.path.exists(os.path.join(self.tmp, "started.w1")), 10, interval_s=0.01,
                 message="w1 to start it")
        os.killpg(worker.pid, signal.SIGSTOP)  # the worker hangs; its heartbeat goes on
        open(os.path.join(self.tmp, "open"), "w").close()  # its handler ends meanwhile: its result comes late
        try:
            w2.spawn("task_queue.py", "work", "--loop", "--quiet", env=gate)
            wait_for(lambda: self.task_state(task_id) == "done", 20, interval_s=0.05, message="w2 to do it")
        finally:
            os.killpg(worker.pid, signal.SIGCONT)
        rec = self.status(lead, task_id)
        self.assertEqual((rec["worker"], rec["result"], rec["attempts"]), ("w2", "w2\n", 2))
        self.assertIn("no result from w1", rec["error"])
        wait_for(lambda: "finished after it was reclaimed" in w1.log_text("task_queue"), 10,
                 message="w1 to notice its attempt was taken")
        self.assertEqual(self.status(lead, task_id)["result"], "w2\n")

    # A handler that records its shell and a grandchild (both in its process group) and first checks
    # that no earlier copy's process lives on ("overlaps"); it works SECONDS s and answers its node id.
    OVERLAP_SCRIPT = ('for p in $(cat "$COPIES/pids" 2>/dev/null); do [ -e "/proc/$p" ] && ! grep -q "^State:.*Z" '
                      '"/proc/$p/status" 2>/dev/null && echo "$p" >> "$COPIES/overlaps"; done; '
                      'echo $$ >> "$COPIES/pids"; echo "$TASK_ATTEMPT" >> "$COPIES/starts"; '
                      '(while true; do sleep 0.2; done) & echo $! >> "$COPIES/pids"; sleep SECONDS; kill $!; '
                      'echo "$NODE_ID"')

    def copies_node(self, node_id: str, seconds: int):
        copies = os.path.join(self.tmp, "copies")
        os.makedirs(copies, exist_ok=True)
        script = self.OVERLAP_SCRIPT.replace("SECONDS", str(seconds))
        return self.node(node_id, handlers=dict(TASKS["handlers"], long=["sh", "-c", script])), copies

    def read_lines(self, path: str) -> list:
        try:
            with open(path) as fh:
                return fh.read().split()
        except FileNotFoundError:
            return []

    def supervisors_of(self, worker_pid: int) -> list:
        """The child supervisors (procs/supervisor.py) a worker process started."""
        found = []
        for name in os.listdir("/proc"):
            try:
                with open("/proc/%s/stat" % name) as fh:
                    ppid = int(fh.read().rsplit(") ", 1)[1].split()[1])
                with open("/proc/%s/cmdline" % name, "rb") as fh:
                    cmd = fh.read()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == worker_pid and b"supervisor.py" in cmd:
                found.append(int(name))
        return found

    def test_a_dead_heartbeat_beside_a_live_worker_never_starts_a_second_copy(self):
        n1, copies = self.copies_node("n1", 9)
        n2 = self.node("n2", handlers=n1.config["tasks"]["handlers"])
        n2.spawn_all()
        self.wait_leader("n2")
        beat = n1.spawn("heartbeat.py", "--loop", "--quiet")
        wait_for(lambda: SERVER.command("EXISTS", keys.heartbeat("n1")), 10, message="n1's heartbeat")
        n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
        n2.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
        task_id = n1.run("task_queue.py", "submit", "--type", "long", "--node", "n1").stdout.strip()
        wait_for(lambda: self.read_lines(os.path.join(copies, "starts")), 10, message="the handler")
        os.kill(beat.pid, signal.SIGKILL)  # only the heartbeat loop dies: worker and handler go on
        wait_for(lambda: self.task_state(task_id) == "done", 30, interval_s=0.1, message="the task to be done")
        self.assertEqual(self.read_lines(os.path.join(copies, "starts")), ["1"], "a second copy started")
        self.assertFalse(os.path.exists(os.path.join(copies, "overlaps")), "two copies ran at once")
        self.assertEqual(self.status(n2, task_id)["attempts"], 1)

    @slow("a SIGSTOPped worker waits out its lease and a 12 s handler")
    def test_a_frozen_worker_s_handler_is_killed_before_the_next_attempt_starts(self):
        n1, copies = self.copies_node("n1", 12)
        n2 = self.node("n2", handlers=n1.config["tasks"]["handlers"])
        n2.spawn_all()
        self.wait_leader("n2")
        n1.spawn("heartbeat.py", "--loop", "--quiet")  # n1 stays online: only its worker freezes
        worker = n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
        task_id = n1.run("task_queue.py", "submit", "--type", "long", "--max-attempts", "3").stdout.strip()
        wait_for(lambda: self.read_lines(os.path.join(copies, "starts")), 10, message="the handler")
        os.kill(worker.pid, signal.SIGSTOP)  # the worker alone: its supervisor still runs
        try:
            n2.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
            wait_for(lambda: self.task_state(task_id) == "done", 40, interval_s=0.1, message="the task to be done")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        self.assertFalse(os.path.exists(os.path.join(copies, "overlaps")), "two copies ran at once")
        rec = self.status(n2, task_id)
        self.assertEqual(rec["worker"], "n2")
        self.assertIn("lease", rec["error"], "moved once its lease lapsed, long before its deadline")

    def test_sigkill_of_the_supervisor_kills_the_handler_group_before_the_next_attempt(self):
        for with_worker in (False, True):
            SERVER.flushall()
            n1, copies = self.copies_node("n1-%d" % with_worker, 6)
            shutil.rmtree(copies)
            os.mkdir(copies)
            n1.spawn("heartbeat.py", "--loop", "--quiet")
            worker = n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
            task_id = n1.run("task_queue.py", "submit", "--type", "long", "--max-attempts", "3").stdout.strip()
            wait_for(lambda: len(self.read_lines(os.path.join(copies, "pids"))) >= 2, 10, message="the handler")
            first = [int(p) for p in self.read_lines(os.path.join(copies, "pids"))]
            supervisors = wait_for(lambda: self.supervisors_of(worker.pid), 5, message="the supervisor")
            for pid in supervisors:
                os.kill(pid, signal.SIGKILL)
            if with_worker:
                os.kill(worker.pid, signal.SIGKILL)  # kill -9 of every python process of the node
                worker.wait()
                n1.spawn("task_queue.py", "work", "--loop", "--quiet", env={"COPIES": copies})
            else:  # the worker kills the group its supervisor left
                wait_for(lambda: not any(process_alive(p) for p in first), 10, message="the handler's group to die")
            wait_for(lambda: self.task_state(task_id) == "done", 40, interval_s=0.1, message="the task to be done")
            self.assertFalse(any(process_alive(p) for p in first), "the first attempt's group lives on")
            self.assertFalse(os.path.exists(os.path.join(copies, "overlaps")), "two copies ran at once")
            n1.kill_all()

    def test_deregister_hands_back_pending_tasks(self):
        n1, n2 = self.node("n1"), self.node("n2")
        n2.run("heartbeat.py")
        in_hand = self.local_ctx("n2")
        in_hand.instance_token = json.loads(SERVER.command("HGET", keys.nodes(), "n2"))["instance"]  # n2's own
        task_id = submit.submit(in_hand, "echo", '"x"')["id"]
        worker.claim(in_hand, routes.worker_streams(in_hand), read_new=True)
        left = n2.run_json("node_manager.py", "deregister")
        self.assertEqual(left["tasks_handed_back"], 1)
        self.assertEqual(self.task_state(task_id), "pending")
        self.assertEqual(n1.run_json("task_queue.py", "work")["done"], 1)
        rec = self.status(n1, task_id)
        self.assertEqual((rec["worker"], rec["attempts"]), ("n1", 1))


if __name__ == "__main__":
    unittest.main()
