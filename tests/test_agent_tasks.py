"""Agents handing work to each other: `agent` tasks, node labels, routing, `submit --wait`.

Nodes are separate processes (support.nodes.NodeEnv) against one private
redis-server. A fake `openclaw` (support/fake_openclaw.py), first on the PATH
of the nodes that "have" the CLI, records how the worker calls it and answers
as FAKE_OPENCLAW_MODE says. The last class runs the worker's exact call against
the real CLI when tests/support/install_openclaw.sh has already put it in
.cache/openclaw (it does not install it: test_openclaw.py does that, and checks
`openclaw agent --help` for the flags the worker uses).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

from support.base import REPO, RedisCase  # first: puts scripts/ on sys.path
from distnode.tasks import agent_task
from distnode.core import config
from distnode.core import keys
from distnode.core import local_state
from distnode.core import log as log_mod
from distnode.run.context import Context
from distnode.tasks import admin
from distnode.tasks import common
from distnode.tasks import reclaim
from distnode.tasks import routes
from distnode.tasks import submit
from distnode.tasks import worker
from support import fake_openclaw
from support.nodes import FAST, NodeEnv, merge, wait_for, write_config
from support.redis_server import RedisServer

TASKS = {"handlers": {"where": ["sh", "-c", 'echo "$NODE_ID"']}, "backoff_base_s": 0, "reclaim_grace_s": 0}
REAL_CLI = os.path.join(REPO, ".cache", "openclaw", "bin", "openclaw")
SERVER = RedisServer(name="agent-tasks")  # the module's; support.base starts and closes it
FAKE_BIN = None
MODULE_TMP = None


def setUpModule():  # noqa: N802 - unittest API
    global FAKE_BIN, MODULE_TMP
    for name in config.ENV_OVERRIDES:
        os.environ.pop(name, None)
    MODULE_TMP = tempfile.mkdtemp(prefix="agent-tasks-")
    FAKE_BIN = fake_openclaw.install(MODULE_TMP)


def tearDownModule():  # noqa: N802
    shutil.rmtree(MODULE_TMP, ignore_errors=True)


def path_without_openclaw() -> str:
    """This PATH minus any folder that holds an `openclaw`: a node without the CLI."""
    folders = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(f for f in folders if f and not os.path.exists(os.path.join(f, "openclaw")))


class ClusterCase(RedisCase):
    shared_server = SERVER
    tmp_prefix = "agent-tasks-"

    def setUp(self):
        super().setUp()
        self.calls_log = os.path.join(self.tmp, "openclaw-calls.jsonl")
        self.nodes, self.ctxs, self.procs = [], [], []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for node in self.nodes:
            node.kill_all()
        for ctx in self.ctxs:
            ctx.close()
            ctx.log.close()

    def node(self, node_id: str, labels=(), cli: bool = False, mode: str = "ok", agent: dict = None) -> NodeEnv:
        """A node with ``labels``; ``cli``: the fake openclaw is on its PATH (capability `agent`)."""
        path = path_without_openclaw()
        env = {"PATH": FAKE_BIN + os.pathsep + path if cli else path, "FAKE_OPENCLAW_LOG": self.calls_log,
               "FAKE_OPENCLAW_MODE": mode}
        # One beat, then nothing beats: a long TTL keeps the node live (the routing checks count live
        # nodes) however long a loaded machine takes between this beat and the test's last step.
        node = NodeEnv(self.tmp, node_id, SERVER, env=env, config={
            "node": {"labels": list(labels), "heartbeat_ttl": 60}, "tasks": TASKS, "agent": agent or {}})
        node.run("heartbeat.py")
        self.nodes.append(node)
        return node

    def local_ctx(self, node_id: str, labels=(), log_dir: str = None, cli: str = "openclaw-absent-in-tests"):
        """An in-process Context with ``labels`` and no CLI (or ``cli``); ``log_dir`` (and so the run dir)
        may be a node's."""
        base = os.path.join(self.tmp, "local-%s-%d" % (node_id, len(self.ctxs)))
        write_config(os.path.join(base, "config"), merge(FAST, {
            "node": {"id": node_id, "labels": list(labels)}, "redis": {"host": SERVER.host, "port": SERVER.port},
            "tasks": TASKS, "agent": {"cli": cli}}))
        cfg = config.load(os.path.join(base, "config"), log_dir or os.path.join(base, "logs"))
        ctx = Context("task_queue", cfg, log_mod.for_config("task_queue", cfg, console=None), {"args": []})
        self.ctxs.append(ctx)
        return ctx

    def submit(self, node: NodeEnv, *args, ok: bool = True) -> str:
        result = node.run("task_queue.py", "submit", *args)
        if ok:
            self.assertEqual(result.returncode, 0, result.stderr)
            return result.stdout.strip()
        return result

    def spawn_wait(self, node: NodeEnv, *args) -> subprocess.Popen:
        """`task_queue.py submit ... --wait` in the background, its output captured."""
        proc = subprocess.Popen(node.argv("task_queue.py", "submit", *args, "--wait"), env=node.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def work(self, node: NodeEnv) -> dict:
        return node.run_json("task_queue.py", "work")

    def calls(self) -> list:
        return fake_openclaw.calls(self.calls_log)


class AgentTasks(ClusterCase):
    def test_agent_turn_runs_on_the_gpu_node_and_wait_prints_the_reply(self):
        laptop, gpu = self.node("laptop", cli=True), self.node("gpu", ["gpu"], cli=True)
        payload = json.dumps({"message": "summarise\nthe logs", "agent": "ops", "timeout_s": 30})
        waiting = self.spawn_wait(laptop, "--type", "agent", "--require", "gpu", "--payload", payload)
        wait_for(lambda: SERVER.command("ZCARD", keys.task_index("pending")), 10, message="the submit")
        self.assertEqual(self.work(laptop)["ran"], 0, "laptop has no gpu label")
        self.assertEqual(self.work(gpu)["done"], 1)
        out, err = waiting.communicate(timeout=20)
        self.assertEqual((waiting.returncode, out), (0, "reply from gpu: summarise\nthe logs\n"), err)

        [call] = self.calls()
        path = call["message_file"]
        self.assertEqual(call["argv"], ["agent", "--message-file", path, "--json", "--agent", "ops", "--timeout", "30"])
        self.assertEqual((call["message"], call["message_mode"], call["stdin"], call["node"]),
                         ("summarise\nthe logs", 0o600, "", "gpu"))
        self.assertFalse(os.path.exists(path), "the message file outlived the turn")
        self.assertFalse(os.path.exists(os.path.dirname(path)))

        rec = laptop.run_json("task_queue.py", "status", call["task"])
        self.assertEqual((rec["state"], rec["worker"], rec["requires"], rec["timeout_s"]),
                         ("done", "gpu", "agent,gpu", 30 + agent_task.TIMEOUT_MARGIN_S))
        result = json.loads(rec["result"])
        self.assertEqual((result["reply"], result["agent"]), ("reply from gpu: summarise\nthe logs", "ops"))
        self.assertEqual(result["response"]["result"]["meta"]["agentMeta"], {"sessionId": "s-1"})
        shown = laptop.run("task_queue.py", "status", call["task"])
        self.assertIn("requires:  agent, gpu", shown.stdout)

    def test_default_agent_comes_from_config_then_openclaw_main(self):
        configured = self.node("configured", ["a"], cli=True, agent={"default_agent": "helper"})
        plain = self.node("plain", ["b"], cli=True)
        self.submit(configured, "--type", "agent", "--require", "a", "--payload", '{"message": "one"}')
        self.submit(configured, "--type", "agent", "--require", "b", "--payload", '{"message": "two"}')
        self.assertEqual(self.work(configured)["done"], 1)
        self.assertEqual(self.work(plain)["done"], 1)
        argvs = {c["message"]: c["argv"] for c in self.calls()}
        self.assertEqual(argvs["one"][3:], ["--json", "--agent", "helper"])
        self.assertEqual(argvs["two"][3:], ["--json", "--agent", agent_task.OPENCLAW_DEFAULT_AGENT])

    def test_failing_cli_is_retried_then_dead_and_wait_exits_1(self):
        gpu = self.node("gpu", ["gpu"], cli=True, mode="fail")
        waiting = self.spawn_wait(gpu, "--type", "agent", "--payload", '{"message": "hi"}', "--max-attempts", "2")
        wait_for(lambda: SERVER.command("ZCARD", keys.task_index("pending")), 10, message="the submit")
        result = self.work(gpu)
        self.assertEqual((result["retry"], result["dead"]), (1, 1))
        out, err = waiting.communicate(timeout=20)
        self.assertEqual((waiting.returncode, out), (1, ""))
        self.assertIn("is dead after 2 attempt(s): openclaw agent failed (exit 1): %s" % fake_openclaw.FAILURE, err)
        self.assertEqual(len(self.calls()), 2)
        self.assertEqual(SERVER.command("XLEN", keys.task_dead()), 1)

    def test_timeout_stops_the_cli_with_sigterm_and_removes_the_message_file(self):
        gpu = self.node("gpu", cli=True, mode="hang")
        task_id = self.submit(gpu, "--type", "agent", "--payload", '{"message": "slow"}', "--timeout", "1",
                              "--max-attempts", "1")
        self.assertEqual(self.work(gpu)["dead"], 1)
        call, signalled = self.calls()
        self.assertEqual(signalled, {"signal": "SIGTERM"})
        self.assertFalse(os.path.exists(call["message_file"]))
        rec = gpu.run_json("task_queue.py", "status", task_id)
        self.assertEqual(rec["error"], "openclaw agent failed: timed out after 1s: killed")

    def test_an_agent_turn_gets_no_redis_credential_in_its_environment(self):
        dump, cli = os.path.join(self.tmp, "env.txt"), os.path.join(self.tmp, "openclaw-env")
        with open(cli, "w") as fh:
            fh.write("#!/bin/sh\nenv > '%s'\necho '{\"reply\": \"ok\"}'\n" % dump)
        os.chmod(cli, 0o755)
        ctx = self.local_ctx("gpu", cli=cli)
        secret = "pw-%s" % os.urandom(4).hex()
        os.environ["REDIS_PASSWORD"] = secret
        try:
            task_id = submit.submit(ctx, "agent", '{"message": "hi"}')["id"]
            self.assertEqual(worker.work_tick(ctx)["done"], 1)
        finally:
            os.environ.pop("REDIS_PASSWORD", None)
        with open(dump) as fh:
            seen = fh.read()
        self.assertTrue("TASK_ID=%s" % task_id in seen, "the turn's own variables are there")
        self.assertFalse(secret in seen, "an agent turn saw the Redis password")

    def test_plain_text_output_is_the_reply(self):
        gpu = self.node("gpu", cli=True, mode="text")
        waiting = self.spawn_wait(gpu, "--type", "agent", "--payload", '{"message": "hi"}', "--json")
        wait_for(lambda: SERVER.command("ZCARD", keys.task_index("pending")), 10, message="the submit")
        self.work(gpu)
        out, err = waiting.communicate(timeout=20)
        self.assertEqual(waiting.returncode, 0, err)
        rec = json.loads(out)
        self.assertEqual((rec["state"], rec["reply"]), ("done", "plain reply from gpu"))
        self.assertIsNone(json.loads(rec["result"])["response"])

    def test_agent_tasks_go_only_to_nodes_with_the_cli(self):
        no_cli = self.node("no-cli", ["gpu"])
        status = no_cli.run_json("node_manager.py", "status")
        self.assertEqual([(n["id"], n["record"]["labels"], n["record"]["capabilities"]) for n in status["nodes"]],
                         [("no-cli", ["gpu"], [])])
        strict = self.submit(no_cli, "--type", "agent", "--payload", '{"message": "x"}', "--strict", ok=False)
        self.assertEqual(strict.returncode, 1)
        self.assertIn("no live node has label agent: not submitted (--strict)", strict.stderr)
        self.assertEqual(SERVER.command("KEYS", "openclaw:tasks:task:*"), [])
        lenient = self.submit(no_cli, "--type", "agent", "--require", "gpu", "--payload", '{"message": "x"}',
                              ok=False)
        self.assertEqual(lenient.returncode, 0)
        self.assertIn("no live node has labels agent, gpu: the task stays queued", lenient.stderr)
        task_id = lenient.stdout.strip()
        self.assertEqual(self.work(no_cli)["ran"], 0)
        with_cli = self.node("with-cli", ["gpu"], cli=True)
        self.assertEqual(self.work(with_cli)["done"], 1)
        rec = with_cli.run_json("task_queue.py", "status", task_id)
        self.assertEqual((rec["worker"], rec["attempts"], rec["runs"]), ("with-cli", 1, 1))
        caps = {n["id"]: n["record"]["capabilities"] for n in with_cli.run_json("node_manager.py", "status")["nodes"]}
        self.assertEqual(caps, {"no-cli": [], "with-cli": ["agent"]})

    def test_bad_agent_payloads_are_refused_at_submit(self):
        n1 = self.node("n1", cli=True)
        cases = [('{"msg": "x"}', "unknown key(s) msg in the agent payload"),
                 ('{}', 'needs "message": a non-empty string'),
                 ('"just text"', "an agent payload is a JSON object"),
                 ('{"message": "x", "timeout_s": 1.5}', '"timeout_s" must be a whole number'),
                 ('{"message": "x", "timeout_s": true}', '"timeout_s" must be a whole number'),
                 ('{"message": "x", "agent": "--json"}', '"agent" must be an agent id'),
                 ('{"message": "\\ud800"}', "lone surrogate")]
        for payload, text in cases:
            result = self.submit(n1, "--type", "agent", "--payload", payload, ok=False)
            self.assertEqual(result.returncode, 2, (payload, result.stderr))
            self.assertIn(text, result.stderr, payload)
            self.assertNotIn("Traceback", result.stderr)
        bad = [(("--require", "no spaces"), "--require must be 1 to 64 characters"),
               (("--wait-timeout", "5"), "--wait-timeout goes with --wait")]
        for args, text in bad:
            result = self.submit(n1, "--type", "where", *args, ok=False)
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            self.assertIn(text, result.stderr)
        self.assertEqual(SERVER.command("KEYS", "openclaw:tasks:task:*"), [])

    def test_worker_rejects_a_bad_payload_submitted_through_the_api(self):
        gpu = self.node("gpu", cli=True)
        submitter = self.local_ctx("api")
        task_id = submit.submit(submitter, "agent", '{"message": 42}', max_attempts=1)["id"]
        self.assertEqual(self.work(gpu)["dead"], 1)
        self.assertIn('needs "message"', gpu.run_json("task_queue.py", "status", task_id)["error"])
        self.assertEqual(self.calls(), [])


class Routing(ClusterCase):
    def test_three_nodes_with_mixed_labels(self):
        a, b, c = self.node("a", ["gpu"]), self.node("b", ["browser"]), self.node("c", ["gpu", "browser"])
        ids = {name: self.submit(a, "--type", "where", *args) for name, args in (
            ("gpu", ("--require", "gpu")), ("browser", ("--require", "browser")),
            ("both", ("--require", "browser", "--require", "gpu")), ("any", ()))}
        refused = self.submit(a, "--type", "where", "--require", "tpu", "--strict", ok=False)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("no live node has label tpu: not submitted", refused.stderr)
        queued = self.submit(a, "--type", "where", "--require", "tpu", ok=False)
        self.assertIn("no live node has label tpu: the task stays queued", queued.stderr)
        ids["tpu"] = queued.stdout.strip()

        self.assertEqual(self.work(a)["done"], 2)
        self.assertEqual(self.work(b)["done"], 1)
        both = a.run_json("task_queue.py", "status", ids["both"])
        self.assertEqual((both["state"], both["attempts"], both["runs"]), ("pending", 0, 0))
        self.assertEqual(self.work(c)["done"], 1)
        workers = {name: a.run_json("task_queue.py", "status", tid).get("worker") for name, tid in ids.items()}
        self.assertEqual(workers, {"gpu": "a", "any": "a", "browser": "b", "both": "c", "tpu": None})

        tpu = a.run_json("task_queue.py", "status", ids["tpu"])
        self.assertEqual((tpu["state"], tpu["attempts"], tpu["runs"]), ("pending", 0, 0))
        self.assertEqual(SERVER.command("XPENDING", keys.task_route("tpu"), common.GROUP)[0], 0)
        d = self.node("d", ["tpu"])
        self.assertEqual(self.work(d)["done"], 1)
        self.assertEqual(a.run_json("task_queue.py", "status", ids["tpu"])["worker"], "d")

    def test_routed_task_of_a_dead_worker_is_reclaimed_by_the_leader(self):
        leader = self.local_ctx("leader")
        SERVER.command("SET", keys.leader(), "leader", "PX", 60000)
        SERVER.command("SET", keys.epoch(), 7)
        SERVER.command("SET", keys.heartbeat("leader"), "1", "PX", 60000)
        SERVER.command("HSET", keys.term(), "node", "leader", "epoch", 7, "confirmed", "1",
                       "instance", local_state.instance_token(leader.cfg.run_dir, "leader"))
        doomed, spare = self.local_ctx("doomed", ["gpu"]), self.local_ctx("spare", ["gpu"])
        task_id = submit.submit(leader, "where", "{}", requires=["gpu"])["id"]
        self.assertIn(keys.task_route("gpu"), SERVER.command("SMEMBERS", keys.task_streams()))
        task, _, _ = worker.claim(doomed, routes.worker_streams(doomed), read_new=True)
        self.assertIsNone(task, "the route was new to this worker: learnt, not yet read")
        task, _, _ = worker.claim(doomed, routes.worker_streams(doomed), read_new=True)
        self.assertEqual(task.id, task_id)  # then "doomed" dies: it has no heartbeat key
        SERVER.command("DEL", keys.task_lease(task_id))  # and its attempt lease lapses, never renewed
        SERVER.command("HSET", keys.task(task_id), "lease_until_ms", 0)
        self.assertEqual(reclaim.reclaim(leader, 7), 1)
        self.assertEqual(worker.work_tick(spare)["done"], 1)
        rec = admin.status(leader, task_id)
        self.assertEqual((rec["worker"], rec["attempts"]), ("spare", 2))
        self.assertIn("worker doomed is offline or has left", rec["error"])

    def test_leaving_node_hands_back_routed_tasks(self):
        gpu = self.node("gpu", ["gpu"])
        in_hand = self.local_ctx("gpu", ["gpu"], log_dir=gpu.log_dir)  # gpu's worker, stopped mid-task
        task_id = submit.submit(in_hand, "where", "{}", requires=["gpu"])["id"]
        for _ in range(2):  # learn the route (kept in gpu's run dir), then claim from it
            worker.claim(in_hand, routes.worker_streams(in_hand), read_new=True)
        self.assertEqual(SERVER.command("HGET", keys.task(task_id), "state"), "running")
        self.assertEqual(gpu.run_json("node_manager.py", "deregister")["tasks_handed_back"], 1)
        rec = admin.status(in_hand, task_id)
        self.assertEqual((rec["state"], rec["attempts"]), ("pending", 0))

    def test_a_node_that_lost_a_label_stops_reading_its_route(self):
        before = self.local_ctx("n1", ["gpu"])
        submit.submit(before, "where", "{}", requires=["gpu"])
        self.assertEqual(worker.work_tick(before)["done"], 1)  # n1 learnt the gpu route
        task_id = submit.submit(before, "where", "{}", requires=["gpu"])["id"]
        after = self.local_ctx("n1", [], log_dir=os.path.dirname(before.cfg.run_dir))  # same run dir, no label
        self.assertEqual(routes.known_routes(after), ["gpu"])
        self.assertEqual(routes.worker_streams(after), [keys.task_stream("n1"), keys.task_stream()])
        self.assertEqual(worker.work_tick(after)["ran"], 0)
        rec = admin.status(after, task_id)
        self.assertEqual((rec["state"], rec["runs"]), ("pending", 0))

    def test_idle_tick_stays_one_round_trip_with_routes(self):
        gpu = self.local_ctx("gpu", ["gpu", "big"])
        for requires in (["gpu"], ["gpu", "big"], ["tpu"]):
            submit.submit(gpu, "where", "{}", requires=requires)
        self.assertEqual(worker.work_tick(gpu)["done"], 2)
        self.assertEqual(routes.known_routes(gpu), ["big,gpu", "gpu"])
        self.assertEqual(routes.worker_streams(gpu), [keys.task_stream("gpu"), keys.task_route("big,gpu"),
                                                     keys.task_route("gpu"), keys.task_stream()])
        again = Context("task_queue", gpu.cfg, gpu.log, {"args": []})  # a new process: routes from disk
        self.ctxs.append(again)
        before = again.redis.round_trips
        self.assertEqual(worker.work_tick(again)["ran"], 0)
        self.assertEqual(again.redis.round_trips - before, 1)


class Wait(ClusterCase):
    def test_wait_returns_the_result_of_a_plain_task(self):
        n1 = self.node("n1")
        n1.spawn("task_queue.py", "work", "--loop", "--quiet")
        done = n1.run("task_queue.py", "submit", "--type", "where", "--wait", "--wait-timeout", "20")
        self.assertEqual((done.returncode, done.stdout), (0, "n1\n"), done.stderr)

    def test_wait_timeout_exits_6_and_the_task_stays_queued(self):
        n1 = self.node("n1")
        t0 = time.monotonic()
        late = n1.run("task_queue.py", "submit", "--type", "where", "--require", "nobody", "--wait",
                      "--wait-timeout", "0.5", "--quiet")
        self.assertLess(time.monotonic() - t0, 10)
        self.assertEqual((late.returncode, late.stdout), (6, ""))  # exits.TIMED_OUT, as state_sync watch
        found = re.search(r"task (\S+) is still pending after --wait-timeout 0.5s; it stays queued", late.stderr)
        self.assertIsNotNone(found, late.stderr)
        task_id = found.group(1)
        self.assertEqual(SERVER.command("HGET", keys.task(task_id), "state"), "pending")
        self.assertEqual(n1.run("task_queue.py", "status", task_id).returncode, 0)

    def test_wait_gives_up_at_once_on_a_purged_task(self):
        ctx = self.local_ctx("n1")
        self.assertIsNone(submit.wait(ctx, "no-such-task", None))

    def test_wait_polls_with_a_growing_pause_and_stops_at_the_deadline(self):
        ctx = self.local_ctx("n1")
        task_id = submit.submit(ctx, "where", "{}", requires=["nobody"])["id"]
        now, pauses = [0.0], []

        def sleep(seconds):
            pauses.append(seconds)
            now[0] += seconds
        rec = submit.wait(ctx, task_id, 2.0, sleep=sleep, clock=lambda: now[0])
        self.assertEqual(rec["state"], "pending")
        self.assertEqual(pauses[:4], [0.05, 0.1, 0.2, 0.4])
        self.assertAlmostEqual(sum(pauses), 2.0)
        self.assertLessEqual(max(pauses), submit.WAIT_POLL_MAX_S)


class ReplyParsing(unittest.TestCase):
    def test_reply_text_from_each_shape_the_cli_prints(self):
        gateway = {"runId": "r", "status": "ok", "result": {"payloads": [{"text": "one"}, {"text": ""},
                                                                          {"text": "two"}], "meta": {}}}
        local = {"payloads": [{"text": "local", "mediaUrl": None}], "meta": {"durationMs": 3}}
        exec_envelope = {"ok": True, "status": "ok", "final": "final text", "payloads": []}
        self.assertEqual(agent_task.reply_text(gateway), "one\n\ntwo")
        self.assertEqual(agent_task.reply_text(local), "local")
        self.assertEqual(agent_task.reply_text(exec_envelope), "final text")
        self.assertEqual(agent_task.reply_text({"reply": "r"}), "r")
        self.assertIsNone(agent_task.reply_text({"result": {"payloads": [{"mediaUrl": "x"}]}}))
        self.assertIsNone(agent_task.reply_text(["not", "an", "object"]))

    def test_result_stays_valid_json_under_the_cap(self):
        response = {"result": {"payloads": [{"text": "é" * 500}], "meta": {"big": "x" * 5000}}}
        whole = agent_task.result_document("é" * 500, "main", response, 100000)
        self.assertEqual(json.loads(whole)["response"], response)
        small = agent_task.result_document("é" * 500, "main", response, 2000)
        doc = json.loads(small)
        self.assertLessEqual(len(small), 2000)
        self.assertEqual((doc["reply"], doc["response"]), ("é" * 500, None))
        self.assertGreater(doc["response_omitted_bytes"], 5000)
        tiny = agent_task.result_document("é" * 500, "main", response, 300)
        doc = json.loads(tiny)
        self.assertLessEqual(len(tiny), 300)
        self.assertTrue(doc["reply_truncated"])
        self.assertTrue(doc["reply"] and set(doc["reply"]) == {"é"})
        self.assertEqual(agent_task.reply_of(tiny.decode()), doc["reply"])
        self.assertIsNone(agent_task.reply_of("plain output"))


@unittest.skipUnless(os.access(REAL_CLI, os.X_OK), "the real openclaw CLI is not in .cache/openclaw "
                     "(tests/support/install_openclaw.sh installs it; test_openclaw.py runs it)")
@unittest.skipIf(os.environ.get("DN_TEST_SKIP_OPENCLAW"), "the real CLI is checked once, by the main run")
class RealCli(unittest.TestCase):
    """The worker's exact call, against the real CLI with no Gateway: the CLI must get past its
    argument and message-file checks and fail only where it needs a Gateway."""

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="agent-real-cli-")
        self.state_dir = os.path.join(self.root, "home", ".openclaw")
        os.makedirs(self.state_dir)
        with open(os.path.join(self.state_dir, "openclaw.json"), "w") as fh:
            json.dump({"gateway": {"mode": "local"}, "logging": {"file": os.path.join(self.root, "openclaw.log")}},
                      fh)

    def tearDown(self):
        # the CLI leaves lock files outside its state dir, named by a hash of its database path
        state_db = os.path.realpath(os.path.join(self.state_dir, "state", "openclaw.sqlite"))
        digest = hashlib.sha256(state_db.encode()).hexdigest()[:8]
        locks = "/tmp/openclaw-state-locks-%d" % os.getuid()
        for kind in ("state-lifecycle", "state-handles", "gateway-lifecycle"):
            try:
                os.unlink(os.path.join(locks, "%s.%s.lock.sqlite" % (kind, digest)))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(locks)  # only when empty: other OpenClaw homes may use it
        except OSError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCLAW_")}
        env.update(HOME=os.path.join(self.root, "home"), OPENCLAW_STATE_DIR=self.state_dir, NO_COLOR="1",
                   TMPDIR=os.path.join(self.root, "tmp"), NODE_ID="real", TASK_ID="t-1")
        for name in ("CONFIG", "DATA", "CACHE", "STATE"):
            env["XDG_%s_HOME" % name] = os.path.join(self.root, "xdg", name.lower())
        os.makedirs(env["TMPDIR"])
        return env

    def test_real_cli_accepts_the_worker_call(self):
        cfg = {"agent": {"cli": REAL_CLI, "default_agent": ""},
               "tasks": {"result_max_bytes": 65536, "max_output_bytes": 8 << 20}}
        ctx = type("Ctx", (), {"cfg": cfg, "stopping": False})()
        task = type("Task", (), {"payload": b'{"message": "hello", "timeout_s": 5}', "timeout_s": 60})()
        ran = agent_task.run(ctx, task, self.env())
        ok, output, error = ran.ok, ran.output, ran.error
        self.assertFalse(ok)
        self.assertTrue(error.startswith("openclaw agent failed (exit 1): "), error)
        self.assertIn("gateway", error.lower(), "the CLI failed before it tried the Gateway: %s" % error)
        for refusal in ("unknown option", "Invalid --timeout", "No target session", "must not be blank",
                        "message-file", "Unknown agent id"):
            self.assertNotIn(refusal, error)


if __name__ == "__main__":
    unittest.main()
