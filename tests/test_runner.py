"""scripts/runner.py: flags, exit codes, one-line errors, retries, the overlap lock, loop mode.

Runs ``runner.main`` in-process with small fake ticks (no Redis needed), so
every exit path is checked without timing; tests/test_heartbeat.py runs the
same paths end to end as subprocesses against a real Redis.
"""

import contextlib
import fcntl
import io
import json
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

_HERE = os.path.dirname(os.path.abspath(__file__))
_SCRIPTS = os.path.join(os.path.dirname(_HERE), "scripts")
for _path in (_HERE, _SCRIPTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from distnode.core import config  # noqa: E402
from distnode.redis import client as rc  # noqa: E402
from distnode.run import runner  # noqa: E402
from distnode.core.errors import TickError  # noqa: E402

OUR_ENV = list(config.ENV_OVERRIDES) + ["OPENCLAW_DISTRIBUTED_CONFIG_DIR", "OPENCLAW_DISTRIBUTED_LOG_DIR"]


class Run:
    """What one ``runner.main`` call returned and printed."""

    def __init__(self, code: int, stdout: str, stderr: str, log_text: str):
        self.code, self.stdout, self.stderr, self.log_text = code, stdout, stderr, log_text

    @property
    def stderr_lines(self) -> list:
        return self.stderr.strip().splitlines()


class RunnerCase(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dn-runner-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.config_dir = os.path.join(self.dir, "config")
        self.log_dir = os.path.join(self.dir, "logs")
        os.makedirs(self.config_dir)
        self.write_config({})
        env = {k: v for k, v in os.environ.items() if k not in OUR_ENV}
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)
        self.calls = 0

    def write_config(self, extra: dict) -> None:
        cfg = {"node": {"id": "rn1", "heartbeat_interval": 1, "heartbeat_ttl": 3, "retry_count": 2,
                        "retry_delay": 0},
               "redis": {"port": 1, "connect_timeout": 1, "socket_timeout": 1},
               "logging": {"syslog": False}}
        for section, body in extra.items():
            cfg.setdefault(section, {}).update(body)
        with open(os.path.join(self.config_dir, "config.json"), "w") as fh:
            json.dump(cfg, fh)

    def run_main(self, tick, *argv, **kw) -> Run:
        out, err = io.StringIO(), io.StringIO()
        args = list(argv) + ["--config-dir", self.config_dir, "--log-dir", self.log_dir]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = runner.main("faketick", tick, "A fake tick for tests.", argv=args, **kw)
        try:
            with open(os.path.join(self.log_dir, "faketick.log")) as fh:
                log_text = fh.read()
        except OSError:  # FileNotFoundError; NotADirectoryError when the test put a file there
            log_text = ""
        return Run(code, out.getvalue(), err.getvalue(), log_text)

    def counting(self, *outcomes):
        """A tick that raises/returns ``outcomes[i]`` on call i (the last one repeats)."""
        def tick(ctx):
            outcome = outcomes[min(self.calls, len(outcomes) - 1)]
            self.calls += 1
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return tick

    def assert_one_line(self, run: Run, code: int, *fragments) -> str:
        self.assertEqual(run.code, code, run.stderr)
        self.assertEqual(len(run.stderr_lines), 1, run.stderr)
        self.assertNotIn("Traceback", run.stderr)
        line = run.stderr_lines[0]
        self.assertTrue(line.startswith("faketick.py: "), line)
        for fragment in fragments:
            self.assertIn(fragment, line)
        return line


class FlagsTest(unittest.TestCase):
    FLAGS = [("--name", "N", ""), ("--force", None, "")] + runner.COMMON_FLAGS

    def test_parse(self):
        parse = lambda *a: runner.parse_flags(list(a), self.FLAGS)  # noqa: E731
        self.assertEqual(parse(), {"args": []})
        self.assertEqual(parse("a", "--name", "x", "b", "--force"),
                         {"args": ["a", "b"], "--name": "x", "--name*": ["x"], "--force": True})
        self.assertEqual(parse("--name=x=y"), {"args": [], "--name": "x=y", "--name*": ["x=y"]})
        self.assertEqual(parse("--name", "a", "--name", "b")["--name*"], ["a", "b"])
        self.assertEqual(parse("--name", "a", "--name", "b")["--name"], "b")
        self.assertEqual(parse("-h"), {"args": [], "--help": True})
        self.assertEqual(parse("-")["args"], ["-"])
        self.assertEqual(parse("--name", "--force")["--name"], "--force")  # a value may look like a flag
        self.assertEqual(parse("a", "--", "-1", "--force")["args"], ["a", "-1", "--force"])

    def test_parse_errors(self):
        cases = [(["--nope"], "unknown option --nope (see --help)"),
                 (["--name"], "--name needs a value (N)"),
                 (["--force=1"], "--force takes no value"),
                 (["-x"], "unknown option -x (see --help)")]
        for argv, message in cases:
            with self.subTest(argv=argv):
                with self.assertRaises(runner.UsageError) as ctx:
                    runner.parse_flags(argv, self.FLAGS)
                self.assertEqual(str(ctx.exception), message)

    def test_help_text(self):
        text = runner.format_help("x.py", "Does x.", self.FLAGS, "[options] WORD")
        self.assertTrue(text.startswith("usage: x.py [options] WORD\n\nDoes x."))
        for name, _metavar, _help in self.FLAGS:
            self.assertIn(name, text)
        self.assertIn("exit codes: 0 ok", text)

    def test_explain(self):
        self.assertIn("check redis.password", runner.explain(rc.WrongPassError("h:1 refused")))
        self.assertIn("Redis timed out", runner.explain(rc.RedisTimeoutError("no reply from h:1")))
        self.assertIn("Redis unreachable", runner.explain(rc.RedisConnectionError("h:1 refused")))
        self.assertIn("not a Redis server?", runner.explain(rc.ProtocolError("h:1 sent junk")))
        self.assertIn("Redis ACL refused", runner.explain(rc.NoPermError("NOPERM x")))
        self.assertIn("Redis refused: WRONGTYPE k", runner.explain(rc.WrongTypeError("WRONGTYPE k")))
        self.assertEqual(runner.explain(TickError("plain")), "plain")


class MainTest(RunnerCase):
    def test_ok_with_json(self):
        run = self.run_main(self.counting({"b": 2, "a": 1}), "--json")
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(run.stdout, '{"a": 1, "b": 2}\n')
        run = self.run_main(self.counting({"a": 1}))
        self.assertEqual(run.stdout, "")

    def test_help(self):
        run = self.run_main(self.counting(AssertionError("must not run")), "--help")
        self.assertEqual(run.code, 0)
        self.assertIn("usage: faketick.py [options]", run.stdout)
        self.assertEqual(self.calls, 0)

    def test_usage_error_exits_2(self):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = runner.main("faketick", self.counting({}), "x", argv=["--bogus"])
        self.assertEqual(code, 2)
        self.assertEqual(err.getvalue(), "faketick.py: error: unknown option --bogus (see --help)\n")
        self.assertEqual(self.calls, 0)

    def test_usage_error_from_tick_exits_2(self):
        self.assert_one_line(self.run_main(self.counting(runner.UsageError("give a WORD"))), 2,
                             "error: give a WORD")

    def test_config_error_exits_2(self):
        with open(os.path.join(self.config_dir, "config.json"), "w") as fh:
            fh.write('{"node": {"id": "a b"}}')
        line = self.assert_one_line(self.run_main(self.counting({})), 2, "config error:", "node.id")
        self.assertIn("config.json", line)
        self.assertEqual(self.calls, 0)

    def test_tick_error_exits_1(self):
        run = self.run_main(self.counting(TickError("the cluster is on fire")))
        self.assert_one_line(run, 1, "error: the cluster is on fire")
        self.assertIn("ERROR", run.log_text)
        self.assertIn("the cluster is on fire", run.log_text)
        self.assertEqual(self.calls, 1)  # not retried

    def test_exit_code_set_by_tick(self):
        def tick(ctx):
            ctx.exit_code = 4
            return {"partial": True}
        run = self.run_main(tick, "--json")
        self.assertEqual(run.code, 4)
        self.assertEqual(json.loads(run.stdout), {"partial": True})

    def test_connection_faults_are_retried_then_exit_1(self):
        run = self.run_main(self.counting(rc.RedisConnectionError("cannot connect to h:1: refused")))
        self.assertEqual(self.calls, 3)  # retry_count 2 -> 3 attempts
        self.assertEqual(run.code, 1)
        self.assertIn("attempt 1/3 failed", run.stderr)
        self.assertIn("attempt 2/3 failed", run.stderr)
        self.assertIn("Redis unreachable: cannot connect to h:1", run.stderr_lines[-1])
        self.assertNotIn("Traceback", run.stderr + run.log_text)

    def test_loading_and_readonly_are_retried(self):
        for exc in (rc.LoadingError("LOADING"), rc.ReadOnlyError("READONLY"), rc.RedisTimeoutError("slow")):
            with self.subTest(exc=type(exc).__name__):
                self.calls = 0
                run = self.run_main(self.counting(exc, {"ok": 1}), "--json")
                self.assertEqual((run.code, self.calls), (0, 2), run.stderr)

    def test_retry_then_success(self):
        run = self.run_main(self.counting(rc.RedisConnectionError("x"), rc.RedisConnectionError("y"), {"ok": 1}),
                            "--json")
        self.assertEqual((run.code, self.calls, run.stdout), (0, 3, '{"ok": 1}\n'))

    def test_response_errors_are_not_retried(self):
        for exc in (rc.WrongTypeError("WRONGTYPE k"), rc.AuthError("h:1 refused the credentials"),
                    rc.NoPermError("NOPERM"), rc.ProtocolError("h:1 sent junk")):
            with self.subTest(exc=type(exc).__name__):
                self.calls = 0
                run = self.run_main(self.counting(exc))
                self.assert_one_line(run, 1, str(exc))
                self.assertEqual(self.calls, 1)

    def test_retry_count_zero(self):
        self.write_config({"node": {"retry_count": 0}})
        run = self.run_main(self.counting(rc.RedisConnectionError("x")))
        self.assert_one_line(run, 1)
        self.assertEqual(self.calls, 1)

    def test_unexpected_error_exits_3_with_traceback_in_log_only(self):
        run = self.run_main(self.counting(ValueError("boom")))
        line = self.assert_one_line(run, 3, "unexpected error: ValueError: boom")
        self.assertIn(os.path.join(self.log_dir, "faketick.log"), line)
        self.assertIn("Traceback", run.log_text)
        self.assertIn("ValueError: boom", run.log_text)

    def test_a_refused_write_under_the_log_dir_is_a_config_error(self):
        # a full disk under logs/run (local_state names the file it could not write): exit 2 naming the dir
        path = os.path.join(self.log_dir, "run", "rn1.instance")
        run = self.run_main(self.counting(OSError(28, "No space left on device", path)))
        line = self.assert_one_line(run, 2, "config error: log dir %s" % self.log_dir, "No space left on device")
        self.assertNotIn("unexpected", line)
        # the same fault anywhere else is still unexpected
        run = self.run_main(self.counting(OSError(28, "No space left on device", "/elsewhere/file")))
        self.assert_one_line(run, 3, "unexpected error")

    def test_error_lines_and_log_never_show_the_password(self):
        secret = "Sup3rS3cretPW"
        os.environ["REDIS_PASSWORD"] = secret
        for exc, code in ((TickError("cannot resolve host of default:%s@h:6379" % secret), 1),
                          (rc.ResponseError("ERR unknown command, with args beginning with: '%s'" % secret), 1),
                          (RuntimeError("boom %s" % secret), 3)):
            with self.subTest(exc=type(exc).__name__):
                run = self.run_main(self.counting(exc))
                self.assertEqual(run.code, code, run.stderr)
                self.assertNotIn(secret, run.stderr + run.stdout + run.log_text)
                self.assertIn("***", run.stderr)

    def test_closed_or_failing_stdout_keeps_the_tick_exit_code(self):
        class Full(io.StringIO):
            def write(self, text):
                raise OSError(28, "No space left on device")

        def tick(ctx):
            self.calls += 1
            print("queued task 1")  # the work is done before the output fails
            return {"id": "1"}
        for stream in (None, Full()):
            with self.subTest(stream=stream):
                err = io.StringIO()
                args = ["--json", "--config-dir", self.config_dir, "--log-dir", self.log_dir]
                with mock.patch.object(sys, "stdout", stream), contextlib.redirect_stderr(err):
                    code = runner.main("faketick", tick, "A fake tick.", argv=args)
                self.assertEqual(code, 0, err.getvalue())
                self.assertNotIn("Traceback", err.getvalue())
        self.assertEqual(self.calls, 2)

    def test_keyboard_interrupt(self):
        self.assertEqual(self.run_main(self.counting(KeyboardInterrupt())).code, 130)

    def test_config_warnings_are_logged(self):
        self.write_config({"node": {"hartbeat_interval": 3}})
        run = self.run_main(self.counting({}))
        self.assertEqual(run.code, 0)
        self.assertIn("did you mean heartbeat_interval?", run.log_text)
        self.assertIn("did you mean heartbeat_interval?", run.stderr)

    def test_quiet(self):
        run = self.run_main(self.counting(TickError("bad")), "--quiet")
        self.assertEqual(run.stderr_lines, ["faketick.py: error: bad"])
        run = self.run_main(lambda ctx: ctx.log.info("only in the file"), "--quiet")
        self.assertEqual(run.stderr, "")
        self.assertIn("only in the file", run.log_text)

    def test_context(self):
        seen = {}

        def tick(ctx):
            seen.update(node=ctx.node_id, args=ctx.args, flags=ctx.flags, loop=ctx.loop,
                        peer=ctx.redis.peer, same=ctx.redis is ctx.redis)
        run = self.run_main(tick, "word1", "--json", "word2", extra_flags=[("--who", "W", "")])
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(seen["node"], "rn1")
        self.assertEqual(seen["args"], ["word1", "word2"])
        self.assertTrue(seen["flags"]["--json"])
        self.assertFalse(seen["loop"])
        self.assertEqual(seen["peer"], "127.0.0.1:1")
        self.assertTrue(seen["same"])


class LockTest(RunnerCase):
    def hold_lock(self) -> int:
        run_dir = os.path.join(self.log_dir, "run")
        os.makedirs(run_dir, exist_ok=True)
        fd = os.open(os.path.join(run_dir, "faketick.rn1.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.addCleanup(os.close, fd)
        return fd

    def test_held_lock_skips_with_exit_0(self):
        self.hold_lock()
        run = self.run_main(self.counting({"ran": True}), "--json")
        self.assertEqual(run.code, 0)
        self.assertEqual(self.calls, 0)
        self.assertEqual(run.stdout, "")
        self.assertIn("skipping", run.log_text)

    def test_unlocked_script_ignores_the_lock(self):
        self.hold_lock()
        self.assertEqual(self.run_main(self.counting({}), locked=False).code, 0)
        self.assertEqual(self.calls, 1)
        wants_lock = lambda ctx: "write" in ctx.args  # noqa: E731
        self.assertEqual(self.run_main(self.counting({}), "read", locked=wants_lock).code, 0)
        self.assertEqual(self.calls, 2)
        run = self.run_main(self.counting({}), "write", locked=wants_lock)
        self.assertEqual((run.code, self.calls), (0, 2))
        self.assertIn("skipping", run.log_text)

    def test_lock_is_per_node(self):
        self.hold_lock()
        self.write_config({"node": {"id": "rn2"}})
        self.assertEqual(self.run_main(self.counting({})).code, 0)
        self.assertEqual(self.calls, 1)


class LoopTest(RunnerCase):
    def test_loop_runs_ticks_survives_faults_and_calls_on_stop(self):
        stopped = []

        def tick(ctx):
            self.calls += 1
            if self.calls == 2:
                raise TickError("one bad tick")
            if self.calls == 3:
                raise rc.RedisConnectionError("blip")  # retried inside the tick's attempts
            if self.calls >= 5:
                ctx.stopping = True
            return {"n": self.calls}

        run = self.run_main(tick, "--loop", "--json", interval_s=lambda cfg: 0.01,
                            on_stop=lambda ctx: stopped.append(ctx.node_id))
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(self.calls, 5)
        self.assertEqual([json.loads(line)["n"] for line in run.stdout.splitlines()], [1, 4, 5])
        self.assertIn("tick failed (1 in a row): one bad tick", run.log_text)
        self.assertIn("attempt 1/3 failed: blip", run.log_text)
        self.assertEqual(stopped, ["rn1"])


class JobSurvivalTest(RunnerCase):
    """Issue 13 item 11: a loop survives every exception, not only Redis ones."""

    def test_loop_survives_any_exception_with_the_traceback_in_the_log(self):
        def tick(ctx):
            self.calls += 1
            if self.calls == 1:
                raise OSError(28, "No space left on device")
            if self.calls == 2:
                raise KeyError("surprise")
            if self.calls >= 4:
                ctx.stopping = True
            return {"n": self.calls}

        run = self.run_main(tick, "--loop", "--json", interval_s=lambda cfg: 0.01)
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(self.calls, 4)
        self.assertEqual([json.loads(line)["n"] for line in run.stdout.splitlines()], [3, 4])
        self.assertIn("Traceback", run.log_text)
        self.assertIn("No space left on device", run.log_text)
        self.assertIn("KeyError", run.log_text)
        self.assertNotIn("Traceback", run.stderr)
        console = [line for line in run.stderr_lines if "tick failed" in line]
        self.assertEqual(len(console), 2, run.stderr)
        self.assertIn("(2 in a row)", console[1])

    def test_bad_usage_still_ends_the_loop_with_exit_2(self):
        run = self.run_main(self.counting(runner.UsageError("no such command")), "--loop", "--quiet",
                            interval_s=lambda cfg: 0.01)
        self.assert_one_line(run, 2, "no such command")
        self.assertEqual(self.calls, 1)

    def test_health_is_recorded_on_the_context(self):
        seen = []

        def tick(ctx):
            self.calls += 1
            seen.append((ctx.failures_in_a_row, ctx.last_ok_s is not None))
            if self.calls in (2, 3):
                raise RuntimeError("bad")
            if self.calls >= 4:
                ctx.stopping = True
            return {}

        self.run_main(tick, "--loop", "--quiet", interval_s=lambda cfg: 0.01)
        self.assertEqual(seen, [(0, False), (0, True), (1, True), (2, True)])


class LogDirTest(RunnerCase):
    """Issue 13 item 15: an unwritable log dir is a config error naming the dir (exit 2), before the tick."""

    def test_log_dir_that_is_a_file(self):
        with open(self.log_dir, "w") as fh:
            fh.write("not a folder")
        run = self.run_main(self.counting({}))
        line = self.assert_one_line(run, 2, "config error:", self.log_dir, "--log-dir")
        self.assertNotIn("unexpected", line)
        self.assertEqual(self.calls, 0)

    def test_run_dir_that_is_a_file(self):
        os.makedirs(self.log_dir)
        with open(os.path.join(self.log_dir, "run"), "w") as fh:
            fh.write("not a folder")
        run = self.run_main(self.counting({}))
        self.assert_one_line(run, 2, "config error:", os.path.join(self.log_dir, "run"))
        self.assertEqual(self.calls, 0)

    @unittest.skipIf(os.geteuid() == 0, "root writes into a read-only folder")
    def test_read_only_log_dir(self):
        os.makedirs(self.log_dir)
        os.chmod(self.log_dir, 0o500)
        self.addCleanup(os.chmod, self.log_dir, 0o700)
        self.assert_one_line(self.run_main(self.counting({})), 2, "config error:", self.log_dir)
        self.assertEqual(self.calls, 0)


class BrokenPipeTest(RunnerCase):
    """Issue 13 item 15: output cut short by the reader (``| head``) is not an error: exit 0, quietly."""

    def test_closed_stdout_exits_0_without_a_traceback(self):
        read_fd, write_fd = os.pipe()
        os.close(read_fd)  # nobody will ever read: the first flush fails with EPIPE
        pipe = open(write_fd, "w")
        self.addCleanup(pipe.close)

        def tick(ctx):
            for i in range(20000):
                print("line %d" % i)
            return {"done": True}

        err = io.StringIO()
        with contextlib.redirect_stdout(pipe), contextlib.redirect_stderr(err):
            code = runner.main("faketick", tick, "A fake tick.", argv=["--json", "--config-dir", self.config_dir,
                                                                      "--log-dir", self.log_dir])
        self.assertEqual(code, 0, err.getvalue())
        self.assertEqual(err.getvalue(), "")
        self.assertFalse(os.path.exists(os.path.join(self.log_dir, "faketick.log")), "nothing to log")


class PrintConfigTest(RunnerCase):
    def test_relation_error_still_prints_the_config(self):
        self.write_config({"node": {"heartbeat_intervall": 1, "heartbeat_ttl": 1.5}})
        run = self.run_main(self.counting({}), "--print-config")
        self.assertEqual(run.code, 2)
        self.assertIn("node.heartbeat_ttl = 1.5  (config.json)", run.stdout)
        self.assertIn("unknown key 'node.heartbeat_intervall'", run.stderr)
        self.assertIn("faketick.py: config error:", run.stderr)
        self.assertEqual(self.calls, 0)


class NumberFlagTest(RunnerCase):
    def test_upper_bound(self):
        ctx = mock.Mock(flags={"--timeout": "1e300"})
        with self.assertRaises(runner.UsageError) as caught:
            runner.number_flag(ctx, "--timeout", above=True, maximum=604800)
        self.assertIn("--timeout must be at most 604800", str(caught.exception))
        ctx = mock.Mock(flags={"--limit": "9" * 5000})
        with self.assertRaises(runner.UsageError):
            runner.number_flag(ctx, "--limit", int)
        ctx = mock.Mock(flags={"--timeout": "604800"})
        self.assertEqual(runner.number_flag(ctx, "--timeout", maximum=604800), 604800)

    def test_ascii_digits_only_and_a_short_echo(self):
        for raw in ("\u0663", "\uff13", "1_0", "nan", "inf", "-inf", "9" * 100000):
            for kind in (int, float):
                with self.subTest(raw=raw[:10], kind=kind.__name__):
                    with self.assertRaises(runner.UsageError) as caught:
                        runner.number_flag(mock.Mock(flags={"--n": raw}), "--n", kind)
                    self.assertLess(len(str(caught.exception)), 120)


if __name__ == "__main__":
    unittest.main()
