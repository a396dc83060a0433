"""start-node.sh as a user runs it: the demo end to end, --foreground, the path without OpenClaw, bad input.

The OpenClaw path (cron jobs through a real gateway) is in test_openclaw.py. Here
`openclaw` is kept off PATH, every run gets its own config and log folder, and
Redis is a private redis-server on a free port.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

from support.base import REPO, RedisCase
from support.nodes import FAST, merge, wait_for, write_config
from support.redis_server import free_port

START_NODE = os.path.join(REPO, "start-node.sh")
DEMO_TIMEOUT_S = 120
DEMO_FAILOVER_LIMIT_S = 10.0  # the bound is 4 s; generous for a loaded 2-core machine


def path_without_openclaw() -> str:
    """PATH with every folder that holds an `openclaw` removed."""
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not os.path.exists(os.path.join(d, "openclaw"))]
    return os.pathsep.join(dirs)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENCLAW_"))}
    env.update(PATH=path_without_openclaw(), DN_PYTHON=sys.executable, PYTHONDONTWRITEBYTECODE="1")
    env.update(extra)
    return env


def python_version(path: str) -> str:
    try:
        proc = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def read_text(path: str) -> str:
    with open(path, errors="replace") as fh:
        return fh.read()


def pid_alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Demo(unittest.TestCase):
    def test_demo_elects_distributes_fails_over_and_cleans_up(self):
        t0 = time.monotonic()
        proc = subprocess.run([START_NODE, "demo"], env=clean_env(), capture_output=True, text=True,
                              timeout=DEMO_TIMEOUT_S)
        took_s = time.monotonic() - t0
        out = proc.stdout
        self.assertEqual(proc.returncode, 0, "demo exited %d\n%s\n%s" % (proc.returncode, out, proc.stderr))
        self.assertLess(took_s, 60, "the demo should take well under a minute")
        for number in range(1, 7):
            self.assertIn("== %d/6" % number, out)

        leader, epoch = re.search(r"(?m)^=> leader: (\S+), epoch (\d+)$", out).groups()
        self.assertIn(leader, ("alpha", "bravo", "charlie"))
        self.assertRegex(out, r"(?m)^\s+%s\s+online\s+\S+ ago\s+\*" % leader, "status table marks the leader")

        done, total, nodes = map(int, re.search(r"(?m)^=> (\d+)/(\d+) tasks done on (\d+) nodes", out).groups())
        self.assertEqual(done, total)
        self.assertGreaterEqual(nodes, 2, "tasks should run on more than one node:\n" + out)
        self.assertGreaterEqual(len(set(re.findall(r"ran on node (\w+)", out))), 2)

        match = re.search(r"(?m)^=> failover in ([\d.]+)s \(bound (\d+)s\): new leader (\S+), epoch (\d+) -> (\d+)$",
                          out)
        self.assertIsNotNone(match, out)
        failover_s, _bound, new_leader, old_epoch, new_epoch = match.groups()
        self.assertNotEqual(new_leader, leader)
        self.assertEqual(int(old_epoch), int(epoch))
        self.assertGreater(int(new_epoch), int(old_epoch))
        self.assertLess(float(failover_s), DEMO_FAILOVER_LIMIT_S)
        self.assertRegex(out, r"(?m)^\s+%s\s+offline\b" % leader, "the killed leader is shown offline")
        self.assertRegex(out, r"(?m)^\s+%s\s+left\b" % new_leader, "survivors leave gracefully")

        cleanup = re.search(r"(?m)^=> cleanup: node pids ([\d, ]+) and redis pid (\d+) stopped; (\S+) removed$", out)
        self.assertIsNotNone(cleanup, out)
        pids = [int(p) for p in cleanup.group(1).split(",")] + [int(cleanup.group(2))]
        self.assertEqual(len(pids), 4)
        self.assertEqual([p for p in pids if pid_alive(p)], [], "processes left running")
        self.assertFalse(os.path.exists(cleanup.group(3)), "temp folder left behind")

    def test_demo_rejects_arguments(self):
        proc = subprocess.run([START_NODE, "demo", "--bogus"], env=clean_env(), capture_output=True, text=True,
                              timeout=30)
        self.assertEqual(proc.returncode, 2)


class WithRedis(RedisCase):
    tmp_prefix = "dn-start-node-"

    def setUp(self):
        super().setUp()
        self.config_dir = os.path.join(self.tmp, "config")
        self.log_dir = os.path.join(self.tmp, "logs")
        write_config(self.config_dir, merge(FAST, {"redis": {"host": "127.0.0.1", "port": self.server.port}}))
        self.procs = []

    def tearDown(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def start_node(self, *args, node: str = "sn1", **env) -> subprocess.CompletedProcess:
        return subprocess.run([START_NODE, *args, "--config-dir", self.config_dir, "--log-dir", self.log_dir],
                              env=clean_env(OPENCLAW_NODE_ID=node, **env), capture_output=True, text=True,
                              timeout=60)

    def record(self, node: str):
        raw = self.server.command("HGET", "openclaw:cluster:nodes", node)
        return json.loads(raw) if raw else None

    def test_without_openclaw_it_registers_and_explains_the_foreground_mode(self):
        # Nothing beats after the one heartbeat of step 6: a long interval and TTL keep sn1 online (not
        # suspect 1.5 intervals later, nor offline) through the status below on a loaded machine.
        write_config(self.config_dir, merge(FAST, {"node": {"heartbeat_interval": 20, "heartbeat_ttl": 60},
                                                   "redis": {"host": "127.0.0.1", "port": self.server.port}}))
        proc = self.start_node()
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        self.assertEqual(proc.stderr, "")
        for number, name in enumerate(("python", "config", "redis", "openclaw", "register", "heartbeat", "cron"), 1):
            self.assertRegex(proc.stdout, r"(?m)^\[%d/7\] %s\b" % (number, name))
        self.assertIn("not on PATH", proc.stdout)
        self.assertIn("./start-node.sh --foreground --config-dir %s" % self.config_dir, proc.stdout)
        self.assertEqual(self.record("sn1")["status"], "online")
        self.assertEqual(self.server.command("EXISTS", "hb:sn1"), 1)

        status = self.start_node("--status")
        self.assertEqual(status.returncode, 0, status.stdout + status.stderr)
        self.assertIn("`openclaw` is not on PATH", status.stdout)
        self.assertRegex(status.stdout, r"(?m)^sn1\s+online\b")

        gone = self.start_node("--uninstall")
        self.assertEqual(gone.returncode, 0, gone.stdout + gone.stderr)
        self.assertIn("node sn1 left the cluster", gone.stdout)
        self.assertEqual(self.record("sn1")["status"], "left")

    def test_foreground_runs_every_job_and_leaves_gracefully_on_sigterm(self):
        console = os.path.join(self.tmp, "console.txt")
        with open(console, "wb") as out:
            proc = subprocess.Popen([START_NODE, "--foreground", "--config-dir", self.config_dir,
                                     "--log-dir", self.log_dir],
                                    env=clean_env(OPENCLAW_NODE_ID="fg1"), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        wait_for(lambda: self.server.command("GET", "openclaw:cluster:leader") == "fg1" or proc.poll() is not None,
                 15, message="fg1 to lead")
        self.assertIsNone(proc.poll(), "foreground exited early")
        self.assertEqual(self.record("fg1")["status"], "online")
        wait_for(lambda: os.path.exists(os.path.join(self.log_dir, "run", "cluster-fg1.json")), 10,
                 message="state_sync's mirror file")
        proc.send_signal(signal.SIGTERM)  # the PID is Python's: start-node.sh execs it
        proc.wait(30)
        self.assertEqual(proc.returncode, 0, read_text(console))
        self.assertEqual(self.record("fg1")["status"], "left")
        self.assertEqual(self.server.command("EXISTS", "hb:fg1"), 0)
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:leader"), "the lease is released at once")

    def test_unreachable_redis_exits_1_with_one_line(self):
        write_config(self.config_dir, merge(FAST, {"redis": {"host": "127.0.0.1", "port": free_port()}}))
        proc = self.start_node()
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertRegex(lines[0], r"^start-node\.sh: Redis unreachable: .*check redis\.host")
        self.assertNotIn("[5/7]", proc.stdout, "nothing is registered after a failed check")

    def test_wrong_password_exits_1_and_names_the_setting(self):
        self.server.command("CONFIG", "SET", "requirepass", "right-one")
        with open(os.path.join(self.config_dir, "secrets.json"), "w") as fh:
            json.dump({"redis": {"password": "wrong-one"}}, fh)
        os.chmod(os.path.join(self.config_dir, "secrets.json"), 0o600)
        proc = self.start_node()
        self.server.password = "right-one"  # so the harness can still talk to it
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn("redis.password", lines[0])
        self.assertNotIn("wrong-one", proc.stdout + proc.stderr)

    def test_bad_config_exits_2_with_one_line(self):
        cases = {
            "broken JSON": ('{"node": {"heartbeat_interval": 1,}}', r"config\.json:1:\d+: invalid JSON"),
            "bad relation": (json.dumps({"node": {"heartbeat_interval": 5, "heartbeat_ttl": 6}}),
                             r"heartbeat_ttl \(6s\) must be at least twice"),
            "bad type": (json.dumps({"redis": {"port": "six"}}), r"redis\.port must be a whole number"),
        }
        for name, (text, pattern) in cases.items():
            with self.subTest(name):
                with open(os.path.join(self.config_dir, "config.json"), "w") as fh:
                    fh.write(text)
                proc = self.start_node()
                self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
                lines = proc.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, proc.stderr)
                self.assertRegex(lines[0], r"^start-node\.sh: config error: .*" + pattern)
                self.assertEqual(proc.stdout, "")
        self.assertIsNone(self.record("sn1"))

    def test_unwritable_log_dir_exits_2_before_anything_is_registered(self):
        with open(self.log_dir, "w") as fh:
            fh.write("a file where the log dir should be")
        for args in ((), ("--foreground",)):
            with self.subTest(args=args):
                proc = self.start_node(*args)
                self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
                lines = proc.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, proc.stderr)
                self.assertRegex(lines[0], r"^(start-node\.sh|node_manager\.py): config error: log dir %s: "
                                 % re.escape(self.log_dir))
                self.assertNotIn("[5/7]", proc.stdout)
        self.assertIsNone(self.record("sn1"))
        self.assertEqual(self.server.command("DBSIZE"), 0)

    def test_bad_usage_exits_2_with_one_line(self):
        for args in (["--bogus"], ["--config-dir"]):
            with self.subTest(args=args):
                proc = subprocess.run([START_NODE, *args], env=clean_env(), capture_output=True, text=True,
                                      timeout=30)
                self.assertEqual(proc.returncode, 2)
                self.assertEqual(len(proc.stderr.strip().splitlines()), 1, proc.stderr)
                self.assertTrue(proc.stderr.startswith("start-node.sh: "), proc.stderr)

    def test_old_python_is_refused(self):
        old = [p for p in [shutil.which("python3.8")] + sorted(glob.glob(os.path.expanduser(
            "~/.pyenv/versions/3.8*/bin/python3"))) if p and python_version(p) == "3.8"]
        if not old:
            self.skipTest("no working Python 3.8 on this machine")
        proc = self.start_node(DN_PYTHON=old[0])
        self.assertEqual(proc.returncode, 2)
        self.assertRegex(proc.stderr.strip(), r"^start-node\.sh: \S+ is Python 3\.8; this skill needs Python 3\.9")


class ForegroundFaults(RedisCase):
    """Issue 13 item 11: in --foreground, a job hit by a real fault (not a Redis error: a local file it
    cannot write) logs it and ticks on, the other jobs go on, it recovers once the fault is gone, and
    the worker never claims while the heartbeat job cannot beat."""

    tmp_prefix = "dn-fg-faults-"

    def setUp(self):
        super().setUp()
        self.node = self.new_node("ff1", {"tasks": {"handlers": {"echo": ["/bin/cat"]}}})

    def start(self):
        proc = self.node.spawn("node_manager.py", "run", "--quiet")
        wait_for(lambda: self.server.command("GET", "openclaw:cluster:leader") == "ff1" or proc.poll() is not None,
                 20, message="ff1 to lead")
        self.assertIsNone(proc.poll(), self.node.log_text(tail_chars=2000))
        return proc

    def test_the_worker_does_not_claim_while_the_heartbeat_job_fails(self):
        proc = self.start()
        lock = os.path.join(self.node.run_dir, "election.ff1.json.lock")
        if os.path.exists(lock):
            os.unlink(lock)
        os.mkdir(lock)  # the epoch memory cannot be updated: every beat that sees a newer epoch fails
        self.server.command("INCRBY", "openclaw:cluster:epoch", 100)
        wait_for(lambda: "not claiming tasks" in self.node.log_text("task_queue"), 30,
                 message="the worker to stop claiming")
        task = self.node.run_json("task_queue.py", "submit", "--type", "echo", "--node", "ff1",
                                  "--payload", '{"x": 1}')["id"]
        failed = self.node.log_text("heartbeat").count("tick failed")
        wait_for(lambda: self.node.log_text("heartbeat").count("tick failed") >= failed + 4, 30,
                 message="four more failed beats (the worker ticks as often)")
        self.assertEqual(self.node.run_json("task_queue.py", "status", task)["state"], "pending")
        text = self.node.log_text("heartbeat")
        # a write refused under the log dir is an expected fault: one line naming the file, no traceback
        self.assertIn("cannot write %s" % lock, text)
        self.assertNotIn("Traceback", text)
        self.assertIsNone(proc.poll(), "the process stays up")
        os.rmdir(lock)
        wait_for(lambda: self.node.run_json("task_queue.py", "status", task)["state"] == "done", 30,
                 message="the task to run once the heartbeat works again")
        self.assertIn("claiming tasks", self.node.log_text("task_queue").split("not claiming tasks")[-1])
        self.assertEqual(self.server.command("EXISTS", "hb:ff1"), 1, "the heartbeat job recovered")
        self.assertIsNone(proc.poll())


class ForegroundLeave(RedisCase):
    """SIGTERM ends a --foreground node with a graceful leave however long it ran: its main connection,
    idle since the first beat, may be gone (the server's idle-client timeout, a Redis restart)."""

    tmp_prefix = "dn-fg-leave-"

    def setUp(self):
        super().setUp()
        self.node = self.new_node("fl1", {"node": {"retry_count": 1, "retry_delay": 0.2},
                                          "tasks": {"handlers": {"sleep": ["sleep", "30"]}, "poll_interval_s": 0.2}})
        self.output = os.path.join(self.tmp, "run.out")

    def start(self) -> subprocess.Popen:
        with open(self.output, "wb") as out:
            proc = subprocess.Popen(self.node.argv("node_manager.py", "run", "--json"), env=self.node.env,
                                    stdout=out, stderr=subprocess.DEVNULL)
        self.node.procs.append(proc)
        wait_for(lambda: self.server.command("GET", "openclaw:cluster:leader") == "fl1" or proc.poll() is not None,
                 20, message="fl1 to lead")
        self.assertIsNone(proc.poll(), self.node.log_text(tail_chars=2000))
        return proc

    def stop(self, proc: subprocess.Popen) -> dict:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        self.assertEqual(proc.returncode, 0, self.node.log_text("node_manager", tail_chars=2000))
        self.assertEqual(json.loads(self.server.command("HGET", "openclaw:cluster:nodes", "fl1"))["status"], "left")
        self.assertEqual(self.server.command("EXISTS", "hb:fl1"), 0)
        self.assertIsNone(self.server.command("GET", "openclaw:cluster:leader"), "the lease is released")
        with open(self.output) as fh:
            return json.loads(fh.read().strip().splitlines()[-1])

    def test_it_leaves_after_the_server_dropped_its_idle_connection(self):
        self.server.command("CONFIG", "SET", "timeout", "1")
        self.addCleanup(self.server.command, "CONFIG", "SET", "timeout", "0")
        proc = self.start()
        time.sleep(3)  # past the idle timeout: the main connection, used only to start and to leave, is gone
        self.assertEqual(self.stop(proc)["left"], True)

    def test_it_leaves_after_redis_restarted(self):
        proc = self.start()
        self.server.restart(keep_data=False)
        wait_for(lambda: self.server.command("GET", "openclaw:cluster:leader") == "fl1", 20,
                 message="fl1 to lead the restarted Redis")
        self.assertEqual(self.stop(proc)["left"], True)

    def test_the_leave_counts_the_task_its_worker_handed_back(self):
        proc = self.start()
        task = self.node.run_json("task_queue.py", "submit", "--type", "sleep", "--node", "fl1")["id"]
        wait_for(lambda: self.node.run_json("task_queue.py", "status", task)["state"] == "running", 20,
                 message="the task to run")
        left = self.stop(proc)
        self.assertEqual(left["tasks_handed_back"], 1, left)
        self.assertEqual(self.node.run_json("task_queue.py", "status", task)["state"], "pending")
        self.assertIn("tasks handed back: 1)", self.node.log_text("node_manager"))


if __name__ == "__main__":
    unittest.main()
