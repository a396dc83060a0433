"""scripts/heartbeat.py end to end: run as a user would (a subprocess) against a real Redis.

Covers the record and keys it writes, its exit codes with one line on
stderr, retries while Redis starts late, the overlap lock, node id
collisions, the EVALSHA path with its NOSCRIPT fallback, foreign data in the
nodes hash, and that the password shows up nowhere.
"""

import fcntl
import json
import os
import signal
import subprocess
import time
import unittest
from unittest import mock

from support.base import RedisCase, slow  # first: puts scripts/ on sys.path
from distnode.core import config
from distnode.core import keys
from support import fake_servers as fakes
from support.nodes import NodeEnv, wait_for
from support.redis_server import RedisServer, free_port

PASSWORD = "hb-Pass-0815-secret"
SERVER = RedisServer(password=PASSWORD, name="heartbeat")  # the module's; support.base starts and closes it


class HeartbeatCase(RedisCase):
    shared_server = SERVER
    flush_scripts = True
    tmp_prefix = "dn-hb-"

    def node(self, node_id: str = "n1", server=None, sub: str = "", **config) -> NodeEnv:
        return self.new_node(node_id, config, server=server, sub=sub)

    def record(self, node_id: str = "n1") -> dict:
        raw = SERVER.command("HGET", keys.nodes(), node_id)
        self.assertIsNotNone(raw, "no record for %s" % node_id)
        return json.loads(raw)

    def assert_fails(self, result, code: int, *fragments) -> str:
        """Exit ``code`` with exactly one line on stderr, no traceback, and no password anywhere."""
        self.assertEqual(result.returncode, code, "stdout=%r stderr=%r" % (result.stdout, result.stderr))
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertTrue(lines[0].startswith("heartbeat.py: "), lines[0])
        for fragment in fragments:
            self.assertIn(fragment, lines[0])
        self.assertNotIn(PASSWORD, result.stdout + result.stderr)
        return lines[0]

    def assert_password_not_logged(self, node: NodeEnv) -> None:
        for folder, _dirs, files in os.walk(node.log_dir):
            for name in files:
                with open(os.path.join(folder, name), "rb") as fh:
                    self.assertNotIn(PASSWORD.encode(), fh.read(), os.path.join(folder, name))


class RecordTest(HeartbeatCase):
    def test_beat_writes_record_and_key(self):
        node = self.node()
        result = node.run("heartbeat.py", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        out = json.loads(result.stdout)
        self.assertEqual((out["node"], out["ok"]), ("n1", True))
        self.assertIn("heartbeat ok", result.stderr)
        sec, usec = SERVER.command("TIME")
        now = int(sec) + int(usec) / 1e6
        rec = self.record()
        for field in ("id", "host", "pid", "status", "last_heartbeat", "started_at", "version"):
            self.assertIn(field, rec)
        self.assertEqual(rec["id"], "n1")
        self.assertEqual(rec["status"], "online")
        self.assertEqual(rec["version"], config.VERSION)
        self.assertIsInstance(rec["pid"], int)
        self.assertTrue(rec["host"])
        self.assertEqual((rec["interval"], rec["ttl"]), (1, 3))
        self.assertAlmostEqual(rec["last_heartbeat"], out["time"], places=3)
        self.assertLess(abs(now - rec["last_heartbeat"]), 5)  # Redis's clock, not ours
        self.assertEqual(rec["started_at"], rec["last_heartbeat"])
        pttl = SERVER.command("PTTL", keys.heartbeat("n1"))
        self.assertTrue(0 < pttl <= 3000, pttl)
        self.assertEqual(SERVER.command("TYPE", keys.heartbeat("n1")), "string")
        self.assert_password_not_logged(node)

    def test_second_beat_keeps_started_at(self):
        node = self.node()
        self.assertEqual(node.run("heartbeat.py").returncode, 0)
        first = self.record()
        time.sleep(0.05)
        self.assertEqual(node.run("heartbeat.py").returncode, 0)
        second = self.record()
        self.assertEqual(second["started_at"], first["started_at"])
        self.assertGreater(second["last_heartbeat"], first["last_heartbeat"])
        self.assertEqual(second["instance"], first["instance"])

    def test_labels_and_db(self):
        node = self.node(node={"labels": ["gpu", "eu-1"]})
        result = node.run("heartbeat.py", env={"REDIS_DB": "2"})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(SERVER.command("EXISTS", keys.nodes()), 0)  # db 0 untouched
        self.assertTrue(SERVER.info("keyspace")["db2"].startswith("keys=2"))

    def test_foreign_and_malformed_values_in_the_nodes_hash(self):
        junk = {"other-1": "not json {", "other-2": "[1, 2]", "other-3": "null", "other-4": "\xff\xfe",
                "other-5": '{"instance": {"nested": true}, "started_at": "soon"}', "other-6": "[" * 5000}
        for node_id, value in junk.items():
            SERVER.command("HSET", keys.nodes(), node_id, value)
        for own in ("garbage {", "[]", '"a string"', "42", '{"status": "left", "started_at": []}'):
            with self.subTest(own=own):
                SERVER.command("HSET", keys.nodes(), "n1", own)
                result = self.node().run("heartbeat.py")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(self.record()["status"], "online")
        for node_id, value in junk.items():
            self.assertEqual(SERVER.command("HGET", keys.nodes(), node_id), value)  # left alone

    def test_wrongtype_names_the_key(self):
        SERVER.command("SET", keys.nodes(), "I am a string")
        line = self.assert_fails(self.node().run("heartbeat.py"), 1, "WRONGTYPE", keys.nodes(), "hash")
        self.assertIn("string", line)
        SERVER.command("DEL", keys.nodes())
        SERVER.command("RPUSH", keys.heartbeat("n1"), "x")
        self.assert_fails(self.node().run("heartbeat.py"), 1, "WRONGTYPE", keys.heartbeat("n1"))
        self.assertEqual(SERVER.command("EXISTS", keys.nodes()), 0)  # nothing half-written

    def test_through_a_server_that_dribbles_bytes(self):
        with fakes.FakeServer(fakes.dribble_proxy(SERVER.host, SERVER.port)) as proxy:
            node = self.node()
            result = node.run("heartbeat.py", env={"REDIS_PORT": str(proxy.port)})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.record()["status"], "online")


class ExitCodeTest(HeartbeatCase):
    def test_wrong_password(self):
        node = self.node()
        line = self.assert_fails(node.run("heartbeat.py", env={"REDIS_PASSWORD": "wrong-" + PASSWORD}), 1,
                                 "127.0.0.1:%d" % SERVER.port, "check redis.password")
        self.assertNotIn("wrong-", line)
        self.assert_password_not_logged(node)
        self.assertEqual(SERVER.command("DBSIZE"), 0)

    def test_password_missing(self):
        node = self.node()
        # The heartbeat's EVAL has more than 10 arguments, which Redis >= 6.2.6 refuses
        # before AUTH with a protocol error instead of NOAUTH: either way, say "password".
        self.assert_fails(node.run("heartbeat.py", env={"REDIS_PASSWORD": ""}), 1, "check redis.password")

    def test_password_given_but_none_set(self):
        with RedisServer(name="nopass") as plain:
            node = self.node(server=plain)
            node.env["REDIS_PASSWORD"] = PASSWORD
            self.assert_fails(node.run("heartbeat.py"), 1, "the server has none set")
            self.assert_password_not_logged(node)

    def test_closed_port(self):
        port = free_port()
        self.assert_fails(self.node().run("heartbeat.py", env={"REDIS_PORT": str(port)}), 1,
                          "Redis unreachable", "127.0.0.1:%d" % port)

    def test_unresolvable_host(self):
        self.assert_fails(self.node().run("heartbeat.py", env={"REDIS_HOST": "no-such-host.invalid"}), 1,
                          "no-such-host.invalid:%d" % SERVER.port)

    def test_not_a_redis_server(self):
        with fakes.FakeServer(fakes.http()) as fake:
            self.assert_fails(self.node().run("heartbeat.py", env={"REDIS_PORT": str(fake.port)}), 1,
                              "not a Redis server?", "127.0.0.1:%d" % fake.port)

    def test_server_that_never_answers(self):
        with fakes.FakeServer(fakes.silent()) as fake:
            started = time.monotonic()
            result = self.node().run("heartbeat.py", env={"REDIS_PORT": str(fake.port)})
            self.assert_fails(result, 1, "timed out", "127.0.0.1:%d" % fake.port)
            self.assertLess(time.monotonic() - started, 10)

    def test_loading_is_retried_then_fails(self):
        with fakes.FakeServer(fakes.error_reply("LOADING Redis is loading the dataset in memory")) as fake:
            node = self.node(node={"retry_count": 2, "retry_delay": 0.05})
            node.env.pop("REDIS_PASSWORD")  # a real server answers AUTH while loading; this fake would not
            result = node.run("heartbeat.py", "--quiet", env={"REDIS_PORT": str(fake.port)})
            self.assert_fails(result, 1, "LOADING")
            self.assertEqual(bytes(fake.received).count(b"$4\r\nEVAL\r\n"), 3)  # retry_count 2: 3 attempts
        self.assertIn("attempt 2/3 failed", node.log_text("heartbeat"))

    def test_broken_config(self):
        node = self.node()
        with open(os.path.join(node.config_dir, "config.json"), "w") as fh:
            fh.write('{"node": {"heartbeat_interval": 1,}}')
        line = self.assert_fails(node.run("heartbeat.py"), 2, "config error:", "config.json:1:")
        self.assertIn("invalid JSON", line)
        node.update_config({"node": {"heartbeat_ttl": 1}})
        self.assert_fails(node.run("heartbeat.py"), 2, "at least twice")
        self.assertEqual(SERVER.command("DBSIZE"), 0)

    def test_usage_error(self):
        self.assert_fails(self.node().run("heartbeat.py", "--bogus"), 2, "unknown option --bogus")

    def test_help(self):
        result = self.node().run("heartbeat.py", "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn("usage: heartbeat.py", result.stdout)
        self.assertIn("exit codes", result.stdout)


class AclTest(HeartbeatCase):
    def setUp(self):
        super().setUp()
        if SERVER.version < (6, 0, 0):
            self.skipTest("Redis %s has no ACL users" % (SERVER.version,))
        SERVER.command("ACL", "SETUSER", "hbuser", "reset", "on", ">hbuser-pw-1", "~*", "+@all")
        SERVER.command("ACL", "SETUSER", "weak", "reset", "on", ">weak-pw-1", "~*", "+ping", "+get")
        self.addCleanup(SERVER.command, "ACL", "DELUSER", "hbuser", "weak")

    def test_acl_user(self):
        result = self.node().run("heartbeat.py", env={"REDIS_USERNAME": "hbuser", "REDIS_PASSWORD": "hbuser-pw-1"})
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.record()["status"], "online")

    def test_acl_user_wrong_password(self):
        result = self.node().run("heartbeat.py", env={"REDIS_USERNAME": "hbuser", "REDIS_PASSWORD": "nope-pw-9"})
        line = self.assert_fails(result, 1, "refused the credentials")
        self.assertNotIn("nope-pw-9", line)

    def test_acl_user_without_needed_commands(self):
        result = self.node().run("heartbeat.py", env={"REDIS_USERNAME": "weak", "REDIS_PASSWORD": "weak-pw-1"})
        self.assert_fails(result, 1, "NOPERM", "Redis ACL refused a command")


class ConcurrencyTest(HeartbeatCase):
    @slow("retries 0.3 s apart until a late Redis starts")
    def test_retry_then_success_when_redis_starts_late(self):
        port = free_port()
        # 30 retries 0.3 s apart: room for a loaded machine to start the late Redis in the window
        node = self.node(node={"retry_count": 30, "retry_delay": 0.3})
        proc = subprocess.Popen(node.argv("heartbeat.py", "--json"), env=dict(node.env, REDIS_PORT=str(port)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.communicate()))
        wait_for(lambda: "attempt 1/31 failed" in node.log_text("heartbeat"), 30,
                 message="the first attempt to fail (no Redis yet)")
        late = RedisServer(password=PASSWORD, port=port, name="late")
        self.addCleanup(late.close)
        late.start()
        out, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn("attempt 1/31 failed", err)
        self.assertIn("127.0.0.1:%d" % port, err)
        self.assertTrue(json.loads(out)["ok"])
        self.assertIsNotNone(late.command("HGET", keys.nodes(), "n1"))
        self.assertGreater(late.command("PTTL", keys.heartbeat("n1")), 0)

    def test_overlap_lock_skips(self):
        node = self.node()
        run_dir = node.run_dir
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(os.path.join(run_dir, "heartbeat.n1.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = node.run("heartbeat.py", "--json")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("skipping", node.log_text("heartbeat"))
        self.assertEqual(result.stdout, "")
        self.assertEqual(SERVER.command("DBSIZE"), 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        self.assertEqual(node.run("heartbeat.py").returncode, 0)
        self.assertEqual(SERVER.command("HLEN", keys.nodes()), 1)

    def test_node_id_collision(self):
        first = self.node(sub="machine-a")
        second = self.node(sub="machine-b")  # same id, another run dir: another instance token
        self.assertEqual(first.run("heartbeat.py").returncode, 0)
        token = self.record()["instance"]
        line = self.assert_fails(second.run("heartbeat.py"), 1, "node id 'n1' is already used by another live process",
                                 "OPENCLAW_NODE_ID")
        self.assertIn("pid", line)
        self.assertEqual(self.record()["instance"], token)
        self.assertEqual(first.run("heartbeat.py").returncode, 0)  # the first keeps working
        self.assertEqual(self.record()["instance"], token)

    def test_node_id_collision_ends_a_loop_with_one_line(self):
        """--loop with a taken id: exit 1 with the reason once, not a failed tick logged every poll."""
        first = self.node(sub="machine-a")
        second = self.node(sub="machine-b", tasks={"handlers": {"t": ["true"]}, "poll_interval_s": 0.1})
        first.spawn("heartbeat.py", "--loop", "--quiet")  # the first stays live throughout
        wait_for(lambda: SERVER.command("EXISTS", keys.heartbeat("n1")) == 1, 10, message="the first's beat")
        token = self.record()["instance"]
        for script, args in (("heartbeat", ()), ("task_queue", ("work",))):
            with self.subTest(script=script):
                self.assertEqual(first.run("task_queue.py", "submit", "--type", "t", "--quiet").returncode, 0)
                result = second.run(script + ".py", *args, "--loop", "--quiet", timeout=30)
                self.assertEqual(result.returncode, 1, result.stderr)
                lines = result.stderr.strip().splitlines()
                self.assertEqual(len(lines), 1, result.stderr)
                self.assertTrue(lines[0].startswith(script + ".py: "), lines[0])
                self.assertIn("already used by another live process", lines[0])
                self.assertNotIn("tick failed", second.log_text(script))
                self.assertNotIn(PASSWORD, result.stderr + second.log_text(script))
        self.assertEqual(self.record()["instance"], token)

    def test_left_node_id_can_be_reused_after_its_key_expires(self):
        first = self.node(sub="machine-a")
        second = self.node(sub="machine-b")
        self.assertEqual(first.run("heartbeat.py").returncode, 0)
        SERVER.command("DEL", keys.heartbeat("n1"))  # as if heartbeat_ttl passed
        self.assertEqual(second.run("heartbeat.py").returncode, 0)
        self.assertNotEqual(self.record()["instance"], "")


class LoopTest(HeartbeatCase):
    def test_loop_uses_evalsha_survives_script_flush_and_stops_on_sigterm(self):
        node = self.node(node={"heartbeat_interval": 0.2, "heartbeat_ttl": 1})
        SERVER.command("CONFIG", "RESETSTAT")
        proc = node.spawn("heartbeat.py", "--loop")
        wait_for(lambda: SERVER.command_calls("evalsha") >= 2, 10, message="beats by EVALSHA")
        self.assertEqual(SERVER.command_calls("eval"), 1)  # the first beat loads the script, later ones use its sha
        SERVER.command("SCRIPT", "FLUSH")
        evals = SERVER.command_calls("eval")
        wait_for(lambda: SERVER.command_calls("eval") > evals, 10, message="EVAL after NOSCRIPT")
        before = self.record()["last_heartbeat"]
        wait_for(lambda: self.record()["last_heartbeat"] > before, 10, message="beats after SCRIPT FLUSH")
        self.assertIsNone(proc.poll())
        os.killpg(proc.pid, signal.SIGTERM)
        self.assertEqual(proc.wait(10), 0)
        log_text = node.log_text("heartbeat")
        self.assertIn("got SIGTERM; stopping", log_text)
        self.assertNotIn("Traceback", log_text)

    def test_in_process_beat_evalsha_and_noscript(self):
        from distnode.core import log as log_mod
        from distnode.cluster import membership
        from distnode.run.context import Context
        with open(os.path.join(self.tmp, "config.json"), "w") as fh:
            json.dump({"node": {"id": "inproc", "heartbeat_interval": 1, "heartbeat_ttl": 3},
                       "redis": {"connect_timeout": 1, "socket_timeout": 1}, "logging": {"syslog": False}}, fh)
        env = {"REDIS_HOST": SERVER.host, "REDIS_PORT": str(SERVER.port), "REDIS_PASSWORD": PASSWORD}
        with mock.patch.dict(os.environ, env):
            cfg = config.load(self.tmp, os.path.join(self.tmp, "logs"))
        log = log_mod.Logger("heartbeat", "inproc", cfg.log_dir, use_syslog=False, console=None)
        ctx = Context("heartbeat", cfg, log, {"args": []})
        self.addCleanup(ctx.close)
        self.addCleanup(log.close)
        SERVER.command("CONFIG", "RESETSTAT")
        times = [membership.beat(ctx) for _ in range(3)]
        self.assertEqual((SERVER.command_calls("eval"), SERVER.command_calls("evalsha")), (1, 2))
        SERVER.command("SCRIPT", "FLUSH")
        times.append(membership.beat(ctx))
        self.assertEqual((SERVER.command_calls("eval"), SERVER.command_calls("evalsha")), (2, 3))
        self.assertEqual(times, sorted(times))
        self.assertEqual(self.record("inproc")["last_heartbeat"], times[-1])


if __name__ == "__main__":
    unittest.main()
