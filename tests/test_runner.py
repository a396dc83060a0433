"""distnode/run/: flags, exit codes, one-line errors, retries, the overlap lock, loop mode, the job table.

Runs ``ticks.main`` and ``commands.main`` in-process with small fake ticks and
commands (no Redis needed), so
every exit path is checked without timing; tests/test_heartbeat.py runs the
same paths end to end as subprocesses against a real Redis.
"""

import contextlib
import fcntl
import gc
import io
import json
import os
import runpy
import subprocess
import sys
import unittest
from unittest import mock

from support.base import SCRIPTS, TempDirCase  # first: puts scripts/ on sys.path
from distnode.core import config
from distnode.redis import errors as redis_errors
from distnode.core import errors
from distnode.run import cli, commands, cron, installer, jobs, ticks
from distnode.run.commands import Command
from distnode.core.errors import TickError

OUR_ENV = list(config.ENV_OVERRIDES) + ["OPENCLAW_DISTRIBUTED_CONFIG_DIR", "OPENCLAW_DISTRIBUTED_LOG_DIR"]


def fake_main(tick, argv) -> int:
    """``ticks.main`` of a job "faketick" that ticks ``tick``."""
    return ticks.main(jobs.Job("faketick", ("faketick.py",), "a fake job", lambda cfg: 1.0, tick), "A fake tick.",
                      argv=argv)


class Run:
    """What one ``ticks.main`` or ``commands.main`` call returned and printed."""

    def __init__(self, code: int, stdout: str, stderr: str, log_text: str):
        self.code, self.stdout, self.stderr, self.log_text = code, stdout, stderr, log_text

    @property
    def stderr_lines(self) -> list:
        return self.stderr.strip().splitlines()


class RunnerCase(TempDirCase):
    tmp_prefix = "dn-runner-"

    def setUp(self):
        super().setUp()
        self.config_dir = os.path.join(self.tmp, "config")
        self.log_dir = os.path.join(self.tmp, "logs")
        os.makedirs(self.config_dir)
        self.write_config({})
        self.patch_env(drop=OUR_ENV)
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

    def run_main(self, tick, *argv, period_s: float = 1.0, on_stop=None, table: dict = None, own_flags=()) -> Run:
        """Run ``tick`` as the job "faketick" (``ticks.main``), or with ``table`` as a command script."""
        out, err = io.StringIO(), io.StringIO()
        args = list(argv) + ["--config-dir", self.config_dir, "--log-dir", self.log_dir]
        if on_stop is not None:
            tick.stop = on_stop  # a tick's stop(ctx) runs when its loop ends
        job = jobs.Job("faketick", ("faketick.py",), "a fake job", lambda cfg: period_s, tick)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if table is None:
                code = ticks.main(job, "A fake tick for tests.", argv=args)
            else:
                code = commands.main("faketick", "A fake command script.", table, own_flags, argv=args)
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
    FLAGS = [("--name", "N", ""), ("--force", None, "")] + cli.COMMON_FLAGS

    def test_parse(self):
        parse = lambda *a: cli.parse_flags(list(a), self.FLAGS)  # noqa: E731
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
                with self.assertRaises(cli.UsageError) as ctx:
                    cli.parse_flags(argv, self.FLAGS)
                self.assertEqual(str(ctx.exception), message)

    def test_help_text(self):
        text = cli.format_help("x.py", "Does x.", self.FLAGS, "[options] WORD")
        self.assertTrue(text.startswith("usage: x.py [options] WORD\n\nDoes x."))
        for name, _metavar, _help in self.FLAGS:
            self.assertIn(name, text)
        self.assertIn("\nexit codes:\n  0    ok\n", text)

    def test_explain(self):
        self.assertIn("check redis.password", errors.explain(redis_errors.WrongPassError("h:1 refused")))
        self.assertIn("Redis timed out", errors.explain(redis_errors.RedisTimeoutError("no reply from h:1")))
        self.assertIn("Redis unreachable", errors.explain(redis_errors.RedisConnectionError("h:1 refused")))
        self.assertIn("not a Redis server?", errors.explain(redis_errors.ProtocolError("h:1 sent junk")))
        self.assertIn("Redis ACL refused", errors.explain(redis_errors.NoPermError("NOPERM x")))
        self.assertIn("Redis refused: WRONGTYPE k", errors.explain(redis_errors.WrongTypeError("WRONGTYPE k")))
        self.assertEqual(errors.explain(TickError("plain")), "plain")


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
            code = fake_main(self.counting({}), argv=["--bogus"])
        self.assertEqual(code, 2)
        self.assertEqual(err.getvalue(), "faketick.py: error: unknown option --bogus (see --help)\n")
        self.assertEqual(self.calls, 0)

    def test_usage_error_from_tick_exits_2(self):
        self.assert_one_line(self.run_main(self.counting(cli.UsageError("give a WORD"))), 2,
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
        run = self.run_main(self.counting(redis_errors.RedisConnectionError("cannot connect to h:1: refused")))
        self.assertEqual(self.calls, 3)  # retry_count 2 -> 3 attempts
        self.assertEqual(run.code, 1)
        self.assertIn("attempt 1/3 failed", run.stderr)
        self.assertIn("attempt 2/3 failed", run.stderr)
        self.assertIn("Redis unreachable: cannot connect to h:1", run.stderr_lines[-1])
        self.assertNotIn("Traceback", run.stderr + run.log_text)

    def test_loading_and_readonly_are_retried(self):
        for exc in (redis_errors.LoadingError("LOADING"), redis_errors.ReadOnlyError("READONLY"),
                    redis_errors.RedisTimeoutError("slow")):
            with self.subTest(exc=type(exc).__name__):
                self.calls = 0
                run = self.run_main(self.counting(exc, {"ok": 1}), "--json")
                self.assertEqual((run.code, self.calls), (0, 2), run.stderr)

    def test_retry_then_success(self):
        run = self.run_main(self.counting(redis_errors.RedisConnectionError("x"),
                                          redis_errors.RedisConnectionError("y"), {"ok": 1}), "--json")
        self.assertEqual((run.code, self.calls, run.stdout), (0, 3, '{"ok": 1}\n'))

    def test_response_errors_are_not_retried(self):
        for exc in (redis_errors.WrongTypeError("WRONGTYPE k"), redis_errors.AuthError("h:1 refused the credentials"),
                    redis_errors.NoPermError("NOPERM"), redis_errors.ProtocolError("h:1 sent junk")):
            with self.subTest(exc=type(exc).__name__):
                self.calls = 0
                run = self.run_main(self.counting(exc))
                self.assert_one_line(run, 1, str(exc))
                self.assertEqual(self.calls, 1)

    def test_retry_count_zero(self):
        self.write_config({"node": {"retry_count": 0}})
        run = self.run_main(self.counting(redis_errors.RedisConnectionError("x")))
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
                          (redis_errors.ResponseError("ERR unknown command, with args beginning with: '%s'"
                                                      % secret), 1),
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
                    code = fake_main(tick, argv=args)
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
        table = {"word1": Command(lambda ctx, words: tick(ctx), "word1 WORD")}
        run = self.run_main(None, "word1", "--json", "word2", table=table, own_flags=[("--who", "W", "")])
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

    def test_a_command_ignores_the_lock_its_job_takes(self):
        self.hold_lock()
        read = self.counting({})
        table = {"read": Command(lambda ctx, words: read(ctx), "read", words=0)}
        self.assertEqual(self.run_main(None, "read", table=table).code, 0)
        self.assertEqual(self.calls, 1)
        run = self.run_main(self.counting({}))  # the job itself: skipped while the lock is held
        self.assertEqual((run.code, self.calls), (0, 1))
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
                raise redis_errors.RedisConnectionError("blip")  # retried inside the tick's attempts
            if self.calls >= 5:
                ctx.stopping = True
            return {"n": self.calls}

        run = self.run_main(tick, "--loop", "--json", period_s=0.01,
                            on_stop=lambda ctx: stopped.append(ctx.node_id))
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(self.calls, 5)
        self.assertEqual([json.loads(line)["n"] for line in run.stdout.splitlines()], [1, 4, 5])
        self.assertIn("tick failed (1 in a row): one bad tick", run.log_text)
        self.assertIn("attempt 1/3 failed: blip", run.log_text)
        self.assertEqual(stopped, ["rn1"])

    def test_a_tick_with_its_own_wait_waits_between_good_ticks_and_sleeps_after_a_failed_one(self):
        """Issue 15: a living job waits with its tick's ``wait`` (a blocking read), never after a failure."""
        case, pauses = self, []

        class Waiting:
            def __init__(self, ctx):
                pass

            def __call__(self, ctx):
                case.calls += 1
                if case.calls == 2:
                    raise TickError("one bad tick")
                if case.calls >= 3:
                    ctx.stopping = True
                return {"n": case.calls}

            def wait(self, ctx, seconds):
                pauses.append(("wait", case.calls, 0 < seconds <= 30.0))

        with mock.patch.object(ticks.Context, "sleep", lambda ctx, s: pauses.append(("sleep", case.calls))):
            run = self.run_main(Waiting, "--loop", "--quiet", period_s=30.0)
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(pauses, [("wait", 1, True), ("sleep", 2)])


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

        run = self.run_main(tick, "--loop", "--json", period_s=0.01)
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
        run = self.run_main(self.counting(cli.UsageError("no such command")), "--loop", "--quiet",
                            period_s=0.01)
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

        self.run_main(tick, "--loop", "--quiet", period_s=0.01)
        self.assertEqual(seen, [(0, False), (0, True), (1, True), (2, True)])


class CollectorTest(RunnerCase):
    """A tick script run as a program starts with the cyclic garbage collector off (a one-shot tick frees
    nothing with it: run/ticks.py says why); a loop turns it back on; importing a script changes nothing."""

    TICK_SCRIPTS = ("heartbeat.py", "leader_election.py", "failover_manager.py")

    def setUp(self):
        super().setUp()
        self.addCleanup(gc.enable)

    def test_a_tick_script_run_as_a_program_starts_without_it(self):
        probe = ("import gc, os, runpy, sys\nsys.argv = [sys.argv[1], '--help']\n"
                 "sys.path.insert(0, os.path.dirname(sys.argv[0]))\ntry:\n"
                 "    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
                 "sys.stderr.write('collector %s\\n' % gc.isenabled())\n")
        for script in self.TICK_SCRIPTS:
            with self.subTest(script=script):
                proc = subprocess.run([sys.executable, "-c", probe, os.path.join(SCRIPTS, script)],
                                      capture_output=True, text=True, timeout=60)
                self.assertIn("collector False", proc.stderr)
                runpy.run_path(os.path.join(SCRIPTS, script), run_name="imported")  # not run as a program
                self.assertTrue(gc.isenabled())

    def test_a_loop_turns_it_back_on_and_a_one_shot_tick_leaves_it_off(self):
        seen = []

        def tick(ctx):
            seen.append(gc.isenabled())
            ctx.stopping = True
            return {}

        gc.disable()
        self.run_main(tick, "--quiet")
        self.run_main(tick, "--loop", "--quiet", period_s=0.01)
        self.assertEqual(seen, [False, True])


class LazyTickTest(RunnerCase):
    """A job's tick class is made at its first tick, inside the loop's protection: a local fault while
    making it (the elector's instance file where a directory stands) is a failed tick, not the end."""

    def flaky_class(self, fails: int):
        case = self

        class Flaky:
            def __init__(self, ctx):
                case.calls += 1
                if case.calls <= fails:
                    raise IsADirectoryError(21, "Is a directory", os.path.join(ctx.cfg.run_dir, "rn1.instance"))

            def __call__(self, ctx):
                ctx.stopping = True
                return {"made": case.calls}

            def stop(self, ctx):
                case.stopped = True
        return Flaky

    def test_a_loop_survives_a_fault_while_its_tick_is_made(self):
        self.stopped = False
        run = self.run_main(self.flaky_class(fails=2), "--loop", "--json", period_s=0.01)
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual([json.loads(line) for line in run.stdout.splitlines()], [{"made": 3}])
        self.assertIn("tick failed (2 in a row): log dir %s" % self.log_dir, run.log_text)
        self.assertIn("Is a directory", run.log_text)
        self.assertTrue(self.stopped, "the tick made late still gets its stop(ctx)")

    def test_a_one_shot_tick_keeps_its_exit_code(self):
        run = self.run_main(self.flaky_class(fails=1), "--json")
        self.assert_one_line(run, 2, "config error: log dir %s" % self.log_dir, "Is a directory")
        self.assertEqual(run.stdout, "")

    def test_a_loop_stopped_before_its_tick_was_made_stops_nothing(self):
        def never_made(ctx):
            raise AssertionError("not made")
        tick = jobs.Tick(jobs.Job("x", ("x.py",), "", lambda cfg: 1.0, never_made))
        tick.stop(None)  # nothing made: nothing to stop, no error
        self.assertIsNone(tick.made)


class InstallerTest(RunnerCase):
    """node_setup.py (run/installer.py) guards its output and refuses bad words as every script does."""

    class Gone(io.StringIO):  # a reader that went away (`--status | head -c0`)
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    def setup_main(self, *argv, stdout=None):
        out, err = stdout or io.StringIO(), io.StringIO()
        args = list(argv) + ["--config-dir", self.config_dir, "--log-dir", self.log_dir]
        with mock.patch.object(sys, "stdout", out), contextlib.redirect_stderr(err):
            code = installer.main("Sets the node up.", argv=args)
        return code, (out.getvalue() if stdout is None else ""), err.getvalue()

    def test_a_reader_that_went_away_costs_the_output_only(self):
        done = mock.Mock(returncode=0)
        with mock.patch.object(installer.cron, "find_openclaw", return_value=None), \
                mock.patch.object(installer.subprocess, "run", return_value=done) as status_run:
            self.assertEqual(self.setup_main("status", stdout=self.Gone())[::2], (0, ""))
        self.assertEqual(status_run.call_count, 1)
        self.assertEqual(self.setup_main("--help", stdout=self.Gone())[::2], (0, ""))

    def test_a_bad_word_is_one_usage_line(self):
        for argv, words in ((["bogus"], ["unknown command 'bogus'", "install, uninstall, status"]),
                            ([], ["expected a command"]),
                            (["status", "extra"], ["unexpected word 'extra' after status"])):
            with self.subTest(argv=argv):
                code, out, err = self.setup_main(*argv)
                self.assertEqual((code, out), (2, ""))
                self.assertEqual(len(err.splitlines()), 1, err)
                self.assertTrue(err.startswith("start-node.sh: error: "), err)
                for word in words:
                    self.assertIn(word, err)

    def test_help_names_no_lock(self):
        code, out, _err = self.setup_main("--help")
        self.assertEqual(code, 0)
        self.assertIn("usage: node_setup.py {install,uninstall,status}", out)
        self.assertNotIn("lock", out)
        self.assertEqual(help_codes(out), [0, 1, 2, 3, 130])


def help_codes(text: str) -> list:
    """The exit codes a --help text lists, in order."""
    lines = text.split("exit codes:\n", 1)[1].splitlines()
    return [int(line.split()[0]) for line in lines if line.strip()]


class StrayWordsAndFlagsTest(RunnerCase):
    """A word or a flag a script or command does not take is refused (exit 2, one line naming it and
    the command, nothing done), never silently ignored."""

    def run_script(self, module, *argv) -> Run:
        out, err = io.StringIO(), io.StringIO()
        args = list(argv) + ["--config-dir", self.config_dir, "--log-dir", self.log_dir]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(args)
        return Run(code, out.getvalue(), err.getvalue(), "")

    def test_a_tick_script_takes_no_words(self):
        run = self.run_main(self.counting({}), "extra-word")
        self.assert_one_line(run, 2, "unexpected word 'extra-word'", "faketick.py takes no words")
        self.assertEqual(self.calls, 0)
        import heartbeat
        import leader_election
        for module, argv, word in ((heartbeat, ["extra-word"], "'extra-word'"),
                                   (leader_election, ["a", "b", "c"], "'a'")):
            with self.subTest(script=module.__name__):
                run = self.run_script(module, *argv)
                self.assertEqual((run.code, run.stdout), (2, ""), run.stderr)
                self.assertEqual(run.stderr_lines, ["%s.py: error: unexpected word %s: %s.py takes no words, "
                                                    "only options (see --help)" % (module.__name__, word,
                                                                                   module.__name__)])

    def test_a_command_takes_only_its_own_flags(self):
        import node_manager
        import state_sync
        import task_queue
        for module, argv, words in ((task_queue, ["list", "--type", "x"], "--type does not apply to list"),
                                    (task_queue, ["submit", "--type", "echo", "--state", "pending"],
                                     "--state does not apply to submit"),
                                    (task_queue, ["stats", "--limit", "3"], "--limit does not apply to stats"),
                                    (node_manager, ["status", "--older-than", "3"],
                                     "--older-than does not apply to status"),
                                    (node_manager, ["status", "extra"], "unexpected word 'extra' after status"),
                                    (state_sync, ["get", "k", "--timeout", "3"], "--timeout does not apply to get")):
            with self.subTest(argv=argv):
                run = self.run_script(module, *argv)
                self.assertEqual((run.code, run.stdout), (2, ""), run.stderr)
                self.assertEqual(len(run.stderr_lines), 1, run.stderr)
                self.assertIn(words, run.stderr)
        table = {"get": Command(lambda ctx, words: {}, "get KEY", words=1)}
        self.assert_one_line(self.run_main(None, "get", "k", "--who", "me", table=table,
                                           own_flags=[("--who", "W", "")]), 2, "--who does not apply to get")

    def test_every_own_flag_applies_to_some_command(self):
        import node_manager
        import state_sync
        import task_queue
        for module in (node_manager, state_sync, task_queue):
            with self.subTest(script=module.__name__):
                listed = {flag for row in module.COMMANDS.values() for flag in row.flags}
                self.assertEqual(listed, {flag for flag, _metavar, _text in module.FLAGS})


class HelpCodesTest(RunnerCase):
    """Each script's --help lists the exit codes it returns, and only those."""

    EXPECTED = {"heartbeat": [0, 1, 2, 3, 130], "leader_election": [0, 1, 2, 3, 130],
                "failover_manager": [0, 1, 2, 3, 130], "node_manager": [0, 1, 2, 3, 130, 143],
                "state_sync": [0, 1, 2, 3, 4, 5, 6, 130, 143], "task_queue": [0, 1, 2, 3, 6, 130, 143],
                "node_setup": [0, 1, 2, 3, 130]}

    def test_each_script_lists_its_codes(self):
        import importlib
        for name, codes in self.EXPECTED.items():
            with self.subTest(script=name):
                out = io.StringIO()
                with contextlib.redirect_stdout(out):
                    self.assertEqual(importlib.import_module(name).main(["--help"]), 0)
                self.assertEqual(help_codes(out.getvalue()), codes)
                locked = name not in ("node_manager", "node_setup")  # these run no job under its lock
                self.assertEqual("still holds the lock" in out.getvalue(), locked)


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
            code = fake_main(tick, argv=["--json", "--config-dir", self.config_dir, "--log-dir", self.log_dir])
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
        with self.assertRaises(cli.UsageError) as caught:
            cli.number_flag(ctx, "--timeout", above=True, maximum=604800)
        self.assertIn("--timeout must be at most 604800", str(caught.exception))
        ctx = mock.Mock(flags={"--limit": "9" * 5000})
        with self.assertRaises(cli.UsageError):
            cli.number_flag(ctx, "--limit", int)
        ctx = mock.Mock(flags={"--timeout": "604800"})
        self.assertEqual(cli.number_flag(ctx, "--timeout", maximum=604800), 604800)

    def test_ascii_digits_only_and_a_short_echo(self):
        for raw in ("\u0663", "\uff13", "1_0", "nan", "inf", "-inf", "9" * 100000):
            for kind in (int, float):
                with self.subTest(raw=raw[:10], kind=kind.__name__):
                    with self.assertRaises(cli.UsageError) as caught:
                        cli.number_flag(mock.Mock(flags={"--n": raw}), "--n", kind)
                    self.assertLess(len(str(caught.exception)), 120)


if __name__ == "__main__":
    unittest.main()


class CommandRetryTest(RunnerCase):
    """A command prepares once (stdin, a token) and retries only its Redis call."""

    def test_a_dropped_connection_repeats_the_call_not_the_stdin_read(self):
        reads, sent = [], []

        def put(value):
            sent.append(value)
            if len(sent) == 1:
                raise redis_errors.RedisConnectionError("h:1 dropped the connection")
            return {"stored": value}

        def cmd_set(ctx, words):
            value = sys.stdin.read()
            reads.append(value)
            return ctx.retried(put, value)

        with mock.patch.object(sys, "stdin", io.StringIO("payload-once")):
            run = self.run_main(None, "set", "--json", table={"set": Command(cmd_set, "set", words=0)})
        self.assertEqual(run.code, 0, run.stderr)
        self.assertEqual(reads, ["payload-once"])
        self.assertEqual(sent, ["payload-once", "payload-once"])
        self.assertEqual(json.loads(run.stdout), {"stored": "payload-once"})
        self.assertIn("attempt 1/3 failed", run.log_text)

    def test_the_runner_never_repeats_a_whole_command(self):
        def cmd_set(ctx, words):
            self.calls += 1
            raise redis_errors.RedisConnectionError("h:1 dropped the connection")  # outside ctx.retried: not repeated

        run = self.run_main(None, "set", table={"set": Command(cmd_set, "set", words=0)})
        self.assertEqual((run.code, self.calls), (1, 1), run.stderr)

    def test_usage_is_checked_against_the_table(self):
        table = {"get": Command(lambda ctx, words: {}, "get KEY", words=1)}
        self.assert_one_line(self.run_main(None, "get", table=table), 2, "expected: get KEY (got 0 arguments")
        self.assert_one_line(self.run_main(None, "frob", table=table), 2, "unknown command 'frob'")
        self.assert_one_line(self.run_main(None, "get", "k", "--loop", table=table), 2, "--loop works only with")


class JobTableTest(RunnerCase):
    """One job table: the entry scripts, the cron installer and the foreground runner agree with it."""

    def load_cfg(self):
        self.write_config({"node": {"heartbeat_interval": 4, "heartbeat_ttl": 12},
                           "election": {"renew_interval": 3}, "tasks": {"poll_interval_s": 0.5}})
        return config.load(self.config_dir, self.log_dir)

    def test_periods(self):
        cfg = self.load_cfg()
        periods = {job.name: job.period_s(cfg) for job in jobs.JOBS}
        self.assertEqual(periods, {"heartbeat": 4, "leader_election": 3, "failover_manager": 4, "state_sync": 4,
                                   "task_queue": 0.5})

    def test_entry_scripts_run_their_job(self):
        import state_sync
        import task_queue
        scripts_dir = os.path.dirname(os.path.dirname(os.path.abspath(jobs.__file__)))
        scripts_dir = os.path.dirname(scripts_dir)
        tables = {"state_sync.py": state_sync.COMMANDS, "task_queue.py": task_queue.COMMANDS}
        for job in jobs.JOBS:
            with self.subTest(job=job.name):
                with open(os.path.join(scripts_dir, job.argv[0])) as fh:
                    source = fh.read()
                if job.argv[0] in tables:
                    self.assertEqual(tables[job.argv[0]][job.argv[1]].job, job.name)
                else:
                    self.assertEqual(len(job.argv), 1)
                    self.assertIn('ticks.main(jobs.get("%s")' % job.name, source)

    def test_cron_installer_plans_the_table(self):
        cfg = self.load_cfg()
        planned = cron.plan(cfg, {})
        self.assertEqual([p.name for p in planned], list(jobs.NAMES))
        for job, cron_job in zip(jobs.JOBS, planned):
            with self.subTest(job=job.name):
                self.assertEqual(cron_job.every_s, job.period_s(cfg))
                self.assertEqual(cron_job.text, job.text)
                self.assertEqual(os.path.basename(cron_job.argv[1]), job.argv[0])
                self.assertEqual(cron_job.argv[2:2 + len(job.argv) - 1], list(job.argv[1:]))

    def test_foreground_runs_the_table(self):
        from distnode.run import foreground
        started = []
        # no tick is made before its thread's loop runs it: making one may fail (run_loop survives that)
        with mock.patch.object(jobs, "Tick", side_effect=lambda job: started.append(job.name) or mock.Mock()), \
                mock.patch.object(jobs, "load_tick", side_effect=AssertionError("a tick made outside its loop")):
            with mock.patch.object(foreground.threading, "Thread") as thread, \
                    mock.patch.object(foreground.membership, "beat"), \
                    mock.patch.object(foreground.lifecycle, "leave", return_value={}), \
                    mock.patch.object(foreground.signal, "signal"):
                stop_now = mock.Mock(wait=mock.Mock(return_value=True))
                with mock.patch.object(foreground.threading, "Event", return_value=stop_now):
                    cfg = self.load_cfg()
                    ctx = mock.Mock(cfg=cfg, node_id=cfg.node_id)
                    foreground.run(ctx)
        self.assertEqual(started, list(jobs.NAMES))
        periods = [call.kwargs["args"][2] for call in thread.call_args_list]
        self.assertEqual(periods, [job.period_s(cfg) for job in jobs.JOBS])

    def test_every_tick_path_names_a_tick(self):
        for job in jobs.JOBS:
            with self.subTest(job=job.name):
                self.assertTrue(callable(jobs.load_tick(job)))
