"""SKILL.md and start-node.sh's cron jobs, checked by the real OpenClaw CLI.

setUpClass installs the CLI into ``.cache/openclaw`` (tests/support/install_openclaw.sh:
Node 24 + openclaw from the npm registry, about 30 s the first time, instant after)
and skips every test here, printing why, when that is impossible (no npm, registry
unreachable). Everything else runs against a throwaway OpenClaw home in a temp
folder: the skill is linked into its managed skills folder, one gateway runs on
loopback with a random token for the whole class, and a private redis-server with a
password stands in for the cluster's Redis. At the end our jobs are removed, the
gateway is stopped (SIGTERM, SIGKILL after a grace period, its spawn broker too),
and the lock files the CLI leaves in /tmp/openclaw-state-locks-<uid>/ are deleted.
"""

import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

from support.base import REPO, SKIP_SLOW, TESTS, slow
from support.redis_server import RedisServer

INSTALLER = os.path.join(TESTS, "support", "install_openclaw.sh")
START_NODE = os.path.join(REPO, "start-node.sh")
SKILL = "distributed-node"
NODE = "oc-node-1"
PASSWORD = "pw-" + secrets.token_hex(8)
JOBS = ("failover_manager", "heartbeat", "leader_election", "state_sync", "task_queue")
# Long intervals: no scheduled run interferes with the runs the test starts itself (the gateway's
# first scheduled run of a job comes one interval after it is installed; on a loaded machine the
# test takes well over a minute, so 60 s let leader_election and heartbeat run on their own).
INTERVAL_S, TTL_S = 600, 1800
GATEWAY_READY_TIMEOUT_S = 120


def install_cli() -> str:
    """The bin dir holding `openclaw` and Node 24; unittest.SkipTest (reason printed) if it cannot be had."""
    try:
        proc = subprocess.run(["bash", INSTALLER], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = "installing the openclaw CLI failed: %s" % exc
    else:
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines and os.path.isfile(os.path.join(lines[-1], "openclaw")):
            return lines[-1]
        err = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = "cannot install the openclaw CLI (needs npm, Node 24 and the npm registry): %s" % (
            err[-1] if err else "exit %d" % proc.returncode)
    sys.stderr.write("test_openclaw: skipped: %s\n" % reason)
    raise unittest.SkipTest(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def children_leading_groups(pid: int) -> list:
    """Direct children of ``pid`` that lead their own process group (the gateway's spawn broker)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and int(fields[2]) == int(entry):
            out.append(int(entry))
    return out


class OpenClawHome:
    """A throwaway OpenClaw: HOME, state dir and XDG folders under ``root``, the skill linked in."""

    def __init__(self, root: str, bin_dir: str):
        self.root, self.bin_dir = root, bin_dir
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.state_dir = os.path.join(root, "home", ".openclaw")
        self.env = self._make_env()
        os.makedirs(os.path.join(self.state_dir, "skills"), exist_ok=True)
        # A symlink in the managed skills folder is accepted (one in a workspace is not).
        os.symlink(REPO, os.path.join(self.state_dir, "skills", SKILL))
        with open(os.path.join(self.state_dir, "openclaw.json"), "w") as fh:
            json.dump({"gateway": {"mode": "local"},
                       "logging": {"file": os.path.join(root, "logs", "openclaw.log")}}, fh)
        self.proc = None

    def _make_env(self) -> dict:
        dirs = {"HOME": os.path.join(self.root, "home"), "OPENCLAW_STATE_DIR": self.state_dir,
                "TMPDIR": os.path.join(self.root, "tmp")}
        for name in ("CONFIG", "DATA", "CACHE", "STATE", "RUNTIME"):
            dirs["XDG_%s_%s" % (name, "DIR" if name == "RUNTIME" else "HOME")] = os.path.join(self.root, "xdg", name)
        for path in dirs.values():
            os.makedirs(path, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "REDIS_"))}
        env.update(dirs, NO_COLOR="1", PATH=self.bin_dir + os.pathsep + os.environ.get("PATH", ""),
                   OPENCLAW_GATEWAY_PORT=str(self.port), OPENCLAW_GATEWAY_TOKEN=self.token)
        return env

    def cli(self, *args, timeout_s: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(self.bin_dir, "openclaw"), *args], env=self.env, cwd=self.root,
                              capture_output=True, text=True, timeout=timeout_s)

    def cli_json(self, *args):
        proc = self.cli(*args)
        if proc.returncode != 0:
            raise AssertionError("openclaw %s exited %d\nstdout: %s\nstderr: %s" % (
                " ".join(args), proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))
        return json.loads(proc.stdout)

    def start_gateway(self) -> float:
        """Start `openclaw gateway run` and wait until /readyz says ready; seconds it took."""
        t0 = time.monotonic()
        self.out = open(os.path.join(self.root, "gateway.out"), "wb")
        self.proc = subprocess.Popen(
            [os.path.join(self.bin_dir, "openclaw"), "gateway", "run", "--auth", "token", "--token", self.token,
             "--bind", "loopback", "--port", str(self.port)],
            env=self.env, cwd=self.root, stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
            start_new_session=True)
        while time.monotonic() - t0 < GATEWAY_READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise AssertionError("gateway exited %s: %s" % (self.proc.returncode, self.gateway_tail()))
            if self._ready():
                return time.monotonic() - t0
            time.sleep(0.2)
        raise AssertionError("gateway not ready after %ds: %s" % (GATEWAY_READY_TIMEOUT_S, self.gateway_tail()))

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % self.port, timeout=1) as reply:
                return reply.status == 200 and json.loads(reply.read().decode() or "{}").get("ready") is True
        except (OSError, ValueError):  # HTTPError (503 while starting) is an OSError
            return False

    def gateway_tail(self) -> str:
        try:
            with open(os.path.join(self.root, "gateway.out"), errors="replace") as fh:
                return fh.read()[-2000:]
        except OSError:
            return ""

    def stop_gateway(self, grace_s: float = 15) -> None:
        """SIGTERM the gateway's group, SIGKILL after ``grace_s``; kill its spawn broker's group too."""
        if self.proc is None:
            return
        brokers = children_leading_groups(self.proc.pid)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:  # a running command job makes it drain for minutes
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        for pid in brokers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.out.close()
        self.proc = None

    def remove_lock_files(self) -> None:
        """The CLI's lock files in /tmp/openclaw-state-locks-<uid>/ (hard-coded there), for this state dir."""
        db = os.path.realpath(os.path.join(self.state_dir, "state", "openclaw.sqlite"))
        digest = hashlib.sha256(db.encode()).hexdigest()[:8]
        lock_dir = "/tmp/openclaw-state-locks-%d" % os.getuid()
        for name in ("state-lifecycle", "state-handles", "gateway-lifecycle"):
            try:
                os.unlink(os.path.join(lock_dir, "%s.%s.lock.sqlite" % (name, digest)))
            except FileNotFoundError:
                pass
        try:
            os.rmdir(lock_dir)  # only when empty: other homes may use it
        except OSError:
            pass


def frontmatter_description() -> str:
    with open(os.path.join(REPO, "SKILL.md"), encoding="utf-8") as fh:
        text = fh.read()
    head = text.split("\n---", 1)[0]
    match = re.search(r"(?m)^description:\s*(.+)$", head)
    return match.group(1).strip().strip("'\"") if match else ""


class OpenClawTest(unittest.TestCase):
    """One throwaway OpenClaw home and one gateway for every test of the class."""

    @classmethod
    def setUpClass(cls):
        if os.environ.get("DN_TEST_SKIP_OPENCLAW"):
            raise unittest.SkipTest("the real OpenClaw CLI is checked once, by the main run of tests/run.sh")
        cls.bin_dir = install_cli()
        cls.tmp = tempfile.mkdtemp(prefix="dn-openclaw-")
        cls.home = OpenClawHome(cls.tmp, cls.bin_dir)
        cls.redis = None
        try:
            cls.redis = RedisServer(password=PASSWORD, name="openclaw").start()
            cls.config_dir = cls.write_node_config("node")
            if not SKIP_SLOW:
                cls.gateway_ready_s = cls.home.start_gateway()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def write_node_config(cls, name: str, password: bool = True) -> str:
        config_dir = os.path.join(cls.tmp, name, "config")
        os.makedirs(config_dir)
        with open(os.path.join(config_dir, "config.json"), "w") as fh:
            json.dump({"node": {"heartbeat_interval": INTERVAL_S, "heartbeat_ttl": TTL_S, "retry_count": 0},
                       "redis": {"host": "127.0.0.1", "port": cls.redis.port, "connect_timeout": 2,
                                 "socket_timeout": 2},
                       "logging": {"syslog": False}}, fh)
        if password:
            path = os.path.join(config_dir, "secrets.json")
            with open(path, "w") as fh:
                json.dump({"redis": {"password": PASSWORD}}, fh)
            os.chmod(path, 0o600)
        return config_dir

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.home.proc is not None and cls.home.proc.poll() is None:
                cls.remove_our_jobs()  # a job still running would hold the gateway's shutdown for minutes
        finally:
            cls.home.stop_gateway()
            cls.home.remove_lock_files()
            if cls.redis is not None:
                cls.redis.close()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def remove_our_jobs(cls) -> None:
        proc = cls.home.cli("cron", "list", "--json", "--all")
        if proc.returncode != 0:
            return
        for job in json.loads(proc.stdout).get("jobs", []):
            if str(job.get("declarationKey") or "").startswith("distributed-node:"):
                cls.home.cli("cron", "rm", job["id"])

    # -- helpers --
    def start_node(self, *args, env: dict = None, config_dir: str = None) -> subprocess.CompletedProcess:
        config_dir = config_dir or self.config_dir
        full_env = dict(self.home.env, OPENCLAW_NODE_ID=NODE, DN_PYTHON=sys.executable)
        full_env.update(env or {})
        return subprocess.run([START_NODE, *args, "--config-dir", config_dir,
                               "--log-dir", os.path.join(os.path.dirname(config_dir), "logs")],
                              env=full_env, capture_output=True, text=True, timeout=240)

    def our_jobs(self) -> list:
        jobs = self.home.cli_json("cron", "list", "--json", "--all")["jobs"]
        return [j for j in jobs if str(j.get("declarationKey") or "").startswith("distributed-node:%s:" % NODE)]

    def assertOk(self, proc: subprocess.CompletedProcess) -> None:
        self.assertEqual(proc.returncode, 0, "exit %d\nstdout:\n%s\nstderr:\n%s" % (
            proc.returncode, proc.stdout, proc.stderr))

    # -- the skill --
    def test_skill_info_loads_without_errors_and_is_eligible(self):
        proc = self.home.cli("skills", "info", SKILL, "--json")
        self.assertNotIn("Skipping invalid skill", proc.stderr)
        self.assertNotIn("Skipping escaped skill path", proc.stderr)
        self.assertOk(proc)
        info = json.loads(proc.stdout)
        self.assertEqual(info["name"], SKILL)
        self.assertEqual(info["description"], frontmatter_description())
        self.assertGreater(len(info["description"]), 40)
        self.assertEqual(os.path.realpath(info["baseDir"]), os.path.realpath(REPO))
        self.assertTrue(info["eligible"], info)
        self.assertFalse(info["disabled"])
        self.assertTrue(info["modelVisible"])
        self.assertEqual(info["requirements"]["bins"], ["python3"])
        self.assertEqual(info["requirements"]["env"], [], "requires.env would make the skill 'needs setup'")
        self.assertEqual(sorted(info["requirements"]["os"]), ["darwin", "linux"])
        self.assertEqual({k: v for k, v in info["missing"].items() if v}, {})

    def test_skills_check_lists_the_skill_as_eligible(self):
        proc = self.home.cli("skills", "check", "--json")
        self.assertOk(proc)
        self.assertNotIn("Skipping invalid skill", proc.stderr)
        report = json.loads(proc.stdout)
        self.assertIn(SKILL, report["eligible"])
        self.assertIn(SKILL, report["modelVisible"])
        self.assertNotIn(SKILL, [m["name"] for m in report["missingRequirements"]])

    def test_agent_help_still_lists_the_flags_agent_tasks_use(self):
        proc = self.home.cli("agent", "--help")
        self.assertOk(proc)
        for flag in ("--message-file", "--json", "--agent", "--timeout"):
            self.assertRegex(proc.stdout, r"(?m)^\s+(-\w, )?%s\b" % re.escape(flag), "openclaw agent lost %s" % flag)

    # -- the cron jobs --
    @slow("needs a gateway")
    def test_start_node_installs_jobs_once_runs_heartbeat_and_uninstalls(self):
        first = self.start_node()
        self.assertOk(first)
        self.assertEqual(first.stdout.count(" created "), len(JOBS), first.stdout)
        self.assertIn("first run of the heartbeat job through OpenClaw: ok", first.stdout)
        jobs = self.our_jobs()
        self.assertEqual(sorted(j["declarationKey"].rsplit(":", 1)[1] for j in jobs), list(JOBS))
        ids = {j["declarationKey"]: j["id"] for j in jobs}
        for job in jobs:
            payload = job["payload"]
            self.assertEqual(payload["kind"], "command")
            self.assertTrue(os.path.isabs(payload["argv"][0]), payload["argv"])
            self.assertEqual(payload["cwd"], REPO)
            self.assertEqual(payload.get("env"), {"OPENCLAW_NODE_ID": NODE})
            self.assertEqual(job["delivery"]["mode"], "none")
            self.assertIn("--config-dir", payload["argv"])
            self.assertTrue(job["enabled"])
        beat = [j for j in jobs if j["declarationKey"].endswith(":heartbeat")][0]
        self.assertEqual(beat["schedule"], dict(beat["schedule"], kind="every", everyMs=INTERVAL_S * 1000))

        listing = self.home.cli("cron", "list", "--json", "--all")
        self.assertNotIn(PASSWORD, listing.stdout, "the Redis password shows in `openclaw cron list`")

        again = self.start_node()
        self.assertOk(again)
        self.assertEqual(again.stdout.count(" unchanged "), len(JOBS), again.stdout)
        self.assertEqual({j["declarationKey"]: j["id"] for j in self.our_jobs()}, ids)

        self.redis.command("DEL", "hb:" + NODE)
        run = self.home.cli("cron", "run", beat["id"], "--wait", "--poll-interval", "300ms", "--wait-timeout", "90s")
        self.assertOk(run)
        self.assertEqual(json.loads(run.stdout).get("completionStatus"), "succeeded", run.stdout)
        self.assertEqual(self.redis.command("EXISTS", "hb:" + NODE), 1, "the heartbeat job did not write hb:%s" % NODE)
        self.assertGreater(self.redis.command("PTTL", "hb:" + NODE), (TTL_S - 30) * 1000)

        secrets_path = os.path.join(self.config_dir, "secrets.json")
        with open(secrets_path) as fh:
            good = fh.read()
        with open(secrets_path, "w") as fh:
            json.dump({"redis": {"password": "not-the-password"}}, fh)
        try:
            failed = self.home.cli("cron", "run", beat["id"], "--wait", "--poll-interval", "300ms",
                                   "--wait-timeout", "90s")
        finally:
            with open(secrets_path, "w") as fh:
                fh.write(good)
        self.assertEqual(json.loads(failed.stdout).get("completionStatus"), "failed", failed.stdout)

        status = self.start_node("--status")
        self.assertOk(status)
        self.assertRegex(status.stdout, r"(?m)^\s+heartbeat\s+%ds\s+yes\s+\d+s ago\s+error\s+\d+ms\s+1$" % INTERVAL_S)
        self.assertRegex(status.stdout, r"(?m)^\s+last failure of heartbeat: command exited with code 1; "
                                        r"output: heartbeat\.py: error: .*redis\.password")
        self.assertRegex(status.stdout, r"(?m)^\s+leader_election\s+%ds\s+yes\s+never\s+-" % INTERVAL_S)
        self.assertRegex(status.stdout, r"(?m)^%s\s+online\b" % NODE)

        gone = self.start_node("--uninstall")
        self.assertOk(gone)
        self.assertIn("%d cron job(s) of node %s removed" % (len(JOBS), NODE), gone.stdout)
        self.assertEqual(self.our_jobs(), [])
        record = json.loads(self.redis.command("HGET", "openclaw:cluster:nodes", NODE))
        self.assertEqual(record["status"], "left")
        self.assertEqual(self.redis.command("EXISTS", "hb:" + NODE), 0)

    @slow("needs a gateway")
    def test_password_only_in_the_environment_is_refused(self):
        config_dir = self.write_node_config("env-password", password=False)
        proc = self.start_node(env={"REDIS_PASSWORD": PASSWORD, "OPENCLAW_NODE_ID": "oc-env-password"},
                               config_dir=config_dir)
        self.assertEqual(proc.returncode, 2, proc.stdout + proc.stderr)
        lines = proc.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, proc.stderr)
        self.assertIn(os.path.join(config_dir, "secrets.json"), lines[0])
        self.assertIn("chmod 600", lines[0])
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)
        keys = [j.get("declarationKey") for j in self.home.cli_json("cron", "list", "--json", "--all")["jobs"]]
        self.assertFalse([k for k in keys if "oc-env-password" in str(k)], keys)
        self.assertIsNone(self.redis.command("HGET", "openclaw:cluster:nodes", "oc-env-password"),
                          "a refused start must not register the node")


if __name__ == "__main__":
    unittest.main()
