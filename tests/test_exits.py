"""core/exits.py and core/errors.py: every exit code has one name and one meaning, every error its code.

Guards issue 14's "errors and exit codes as data": a number means one thing in
every script (the two old collisions stay gone), no script returns a bare
number, every application error derives from one root and carries its exit
code and hint, Redis faults read from one table, and the docs' exit-code
tables are the ones ``exits.markdown_table`` generates.
"""

import ast
import glob
import json
import os
import re
import signal
import subprocess
import unittest

from support.base import REPO, SCRIPTS, RedisCase, TempDirCase  # first: puts scripts/ on sys.path

from distnode.cluster import shared_state  # noqa: E402
from distnode.core import config, errors, exits, local_state  # noqa: E402
from distnode.redis import errors as redis_errors  # noqa: E402
from distnode.redis import sentinel  # noqa: E402
from distnode.run import cli  # noqa: E402
from support.nodes import wait_for  # noqa: E402
from support.redis_server import free_port  # noqa: E402

# What a user runs: the entry scripts and the runners they share. The helper processes under
# procs/ (supervisor, detached owner) mirror their child's status for their owner, never for a user.
USER_FACING = sorted(glob.glob(os.path.join(SCRIPTS, "*.py")) + glob.glob(os.path.join(SCRIPTS, "distnode", "run", "*.py")))
ALL_MODULES = sorted(glob.glob(os.path.join(SCRIPTS, "**", "*.py"), recursive=True))
EXIT_CALLS = ("sys.exit", "exit", "SystemExit", "os._exit")
# functions annotated ``-> int`` in USER_FACING files that return something other than an exit code (a pid)
NOT_EXIT_CODES = {"_lock_pid", "holder_pid"}
# exceptions that are control flow inside one module, never shown to a user
PRIVATE_EXCEPTIONS = {"_HostileJson", "_WakeUp", "WakeUp"}


def _parse(path: str) -> ast.Module:
    with open(path, encoding="utf-8") as fh:
        return ast.parse(fh.read(), path)


def _is_int(node) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def bare_exit_numbers(path: str) -> list:
    """(line, what) for every bare number this file may exit with."""
    found = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in EXIT_CALLS and node.args and _is_int(node.args[0]):
            found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.Assign) and _is_int(node.value):
            names = [t.attr if isinstance(t, ast.Attribute) else getattr(t, "id", "") for t in node.targets]
            if any(n in ("code", "exit_code") or n.startswith("EXIT_") for n in names):
                found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.FunctionDef) and node.returns is not None and ast.unparse(node.returns) == "int" \
                and node.name not in NOT_EXIT_CODES:
            found += [(ret.lineno, "%s: %s" % (node.name, ast.unparse(ret))) for ret in ast.walk(node)
                      if isinstance(ret, ast.Return) and _is_int(ret.value)]
    return found


class CodesTest(unittest.TestCase):
    def test_each_code_has_one_name_and_one_meaning(self):
        numbers = [row[0] for row in exits.CODES]
        names = [row[1] for row in exits.CODES]
        self.assertEqual(len(set(numbers)), len(numbers), "a number listed twice")
        self.assertEqual(len(set(names)), len(names), "a name listed twice")
        for code, name, en, zh in exits.CODES:
            with self.subTest(name=name):
                self.assertEqual(getattr(exits, name), code)
                self.assertTrue(en and zh)
                self.assertEqual(exits.meaning(code), en)
                self.assertEqual(exits.meaning(code, "zh"), zh)

    def test_every_constant_is_in_the_table(self):
        constants = {name: value for name, value in vars(exits).items() if name.isupper() and type(value) is int}
        self.assertEqual(constants, {row[1]: row[0] for row in exits.CODES})
        with self.assertRaises(KeyError):
            exits.meaning(7)

    def test_the_two_old_collisions_are_named_apart(self):
        # 2 was also "Redis unreachable" (health), 4 also "wait timed out" (submit --wait)
        self.assertNotIn("unreachable", exits.meaning(exits.BAD_CONFIG))
        self.assertIn("unreachable", exits.meaning(exits.FAILED))
        self.assertIn("--wait-timeout", exits.meaning(exits.TIMED_OUT))
        self.assertNotIn("wait", exits.meaning(exits.NOT_FOUND))

    def test_markdown_table(self):
        for lang in ("en", "zh"):
            with self.subTest(lang=lang):
                lines = exits.markdown_table(lang).splitlines()
                self.assertEqual(len(lines), len(exits.CODES) + 2)
                self.assertEqual(lines[1], "|---|---|")
                for line, (code, _name, en, zh) in zip(lines[2:], exits.CODES):
                    self.assertEqual(line, "| %d | %s |" % (code, (zh if lang == "zh" else en).replace("|", "\\|")))
        self.assertIn("含义", exits.markdown_table("zh"))
        self.assertIn("status \\| head", exits.markdown_table("en"))  # a pipe in a cell is escaped
        with self.assertRaises(ValueError):
            exits.markdown_table("fr")

    def test_with_table_replaces_only_between_the_markers(self):
        page = "intro\n%s\n| old |\n%s\nafter\n" % (exits.BEGIN, exits.END)
        self.assertEqual(exits.with_table(page, "en"),
                         "intro\n%s\n%s%s\nafter\n" % (exits.BEGIN, exits.markdown_table("en"), exits.END))
        with self.assertRaises(ValueError):
            exits.with_table("no markers", "en")

    def test_help_names_the_common_codes(self):
        text = cli.format_help("x.py", "Does x.", [])
        for code in exits.COMMON:
            self.assertRegex(text, r"\n  %d +(ok|failed: Redis unreachable|bad config|unexpected|interrupted)" % code)
        self.assertNotIn("lock", text)  # only a script that runs a job under its lock says a run may be skipped
        self.assertIn("0    ok (or skipped: a previous run still holds the lock)",
                      cli.format_help("x.py", "Does x.", [], locked=True))
        more = cli.format_help("x.py", "Does x.", [], codes=exits.COMMON + (exits.TIMED_OUT, exits.TERMINATED))
        self.assertRegex(more, r"\n  6 +a wait ran out\n  130 +interrupted \(Ctrl-C\)\n  143 +stopped by SIGTERM$")


class NoBareNumbersTest(TempDirCase):
    def test_scripts_exit_only_with_named_codes(self):
        found = {os.path.relpath(path, SCRIPTS): bare_exit_numbers(path) for path in USER_FACING}
        self.assertEqual({path: hits for path, hits in found.items() if hits}, {})

    def test_no_exit_constants_outside_exits(self):
        for path in ALL_MODULES:
            if os.sep + "procs" + os.sep in path or path.endswith(os.path.join("core", "exits.py")):
                continue
            with self.subTest(path=os.path.relpath(path, SCRIPTS)):
                tree = _parse(path)
                names = [t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                         for t in node.targets for t in ([t] if isinstance(t, ast.Name) else getattr(t, "elts", []))
                         if isinstance(t, ast.Name) and t.id.startswith("EXIT_")]
                self.assertEqual(names, [])

    def test_the_scan_finds_a_bare_number(self):
        path = os.path.join(self.tmp, "bad.py")
        with open(path, "w") as fh:
            fh.write("import sys\nEXIT_X = 4\n\ndef main() -> int:\n    ctx.exit_code = 2\n    return 3\n\n"
                     "sys.exit(main() or exits.OK)\nraise SystemExit(5)\n")
        self.assertEqual(sorted(line for line, _ in bare_exit_numbers(path)), [2, 5, 6, 9])


class AppErrorTest(unittest.TestCase):
    CLASSES = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.AppError)]
    # classes whose every message names its own next step, so no class hint is added to the line
    NO_CLASS_HINT = {"AppError", "ConfigError", "TickError", "NodeIdCollision", "SetupError"}

    def test_every_class_has_a_code_and_a_hint(self):
        codes = {row[0] for row in exits.CODES}
        self.assertGreaterEqual({cls.__name__ for cls in self.CLASSES},
                                {"ConfigError", "UsageError", "TickError", "SetupError", "BadInput", "NodeIdCollision"})
        for cls in self.CLASSES:
            with self.subTest(cls=cls.__name__):
                self.assertIn(cls.exit_code, codes)
                self.assertIsInstance(cls.hint, str)
                self.assertEqual(cls.hint == "", cls.__name__ in self.NO_CLASS_HINT)
                self.assertTrue(cls.__doc__)

    def test_one_root(self):
        # the old homes still name the same classes, so `except config.ConfigError` keeps working
        self.assertIs(config.ConfigError, errors.ConfigError)
        self.assertIs(cli.UsageError, errors.UsageError)
        self.assertIs(local_state.InputError, errors.InputError)
        self.assertIs(shared_state.BadInput, errors.BadInput)
        self.assertTrue(issubclass(errors.BadInput, ValueError))
        # no other error root in the product: only the Redis client's tree and private control flow
        for path in ALL_MODULES:
            if os.sep + "redis" + os.sep in path or path.endswith(os.path.join("core", "errors.py")):
                continue
            for node in ast.walk(_parse(path)):
                if isinstance(node, ast.ClassDef) and node.name not in PRIVATE_EXCEPTIONS:
                    bases = {ast.unparse(b) for b in node.bases}
                    with self.subTest(cls=node.name, path=os.path.relpath(path, SCRIPTS)):
                        self.assertFalse(bases & {"Exception", "ValueError", "RuntimeError", "OSError"}, bases)

    def test_line(self):
        self.assertEqual(errors.UsageError("give a WORD").line(), "error: give a WORD (see --help)")
        self.assertEqual(errors.UsageError("unknown option -x (see --help)").line(),
                         "error: unknown option -x (see --help)")
        self.assertEqual(errors.ConfigError("config.json: node.id is bad").line(),
                         "config error: config.json: node.id is bad")
        self.assertEqual(errors.TickError("the cluster is on fire").line(), "error: the cluster is on fire")
        self.assertEqual(errors.TickError("x", hint="check y").line(), "error: x (check y)")
        setup = errors.SetupError("gateway down", exits.BAD_CONFIG)
        self.assertEqual((setup.line(), setup.exit_code), ("gateway down", exits.BAD_CONFIG))
        self.assertEqual(errors.SetupError("x").exit_code, exits.FAILED)

    def test_describe(self):
        self.assertEqual(errors.describe(errors.ConfigError("bad")), (exits.BAD_CONFIG, "config error: bad"))
        self.assertEqual(errors.describe(errors.BadInput("bad key")), (exits.BAD_CONFIG, "error: bad key (see --help)"))
        self.assertEqual(errors.describe(errors.NodeIdCollision("taken")), (exits.FAILED, "error: taken"))
        self.assertEqual(errors.describe(redis_errors.WrongTypeError("WRONGTYPE k")),
                         (exits.FAILED, "error: Redis refused: WRONGTYPE k"))
        self.assertIsNone(errors.describe(ValueError("a bug")))
        self.assertIsNone(errors.describe(OSError(28, "No space left on device")))


class RedisHintsTest(unittest.TestCase):
    CASES = [  # (fault, words its line must hold): the most specific class wins
        (sentinel.MasterNotFoundError("no sentinel answered"), "Redis Sentinel: no sentinel answered"),
        (sentinel.SentinelAuthError("refused"), "check redis.sentinels"),
        (redis_errors.WrongPassError("h:1 refused"), "check redis.password"),
        (redis_errors.NoAuthError("NOAUTH"), "check redis.password"),
        (redis_errors.RedisTimeoutError("no reply from h:1"), "Redis timed out: no reply from h:1"),
        (redis_errors.RedisConnectionError("h:1 refused"), "Redis unreachable: h:1 refused (check redis.host"),
        (redis_errors.ProtocolError("h:1 sent junk"), "not a Redis server? h:1 sent junk"),
        (redis_errors.ReadOnlyError("READONLY x"), "read-only replica"),
        (redis_errors.LoadingError("LOADING"), "still loading"),
        (redis_errors.NoPermError("NOPERM x"), "Redis ACL refused a command: NOPERM x"),
        (redis_errors.FencedError("FENCED epoch 3"), "Redis refused: FENCED epoch 3"),
        (redis_errors.ResponseError("ERR x"), "Redis refused: ERR x"),
    ]

    def test_each_fault_reads_as_its_class(self):
        for exc, words in self.CASES:
            with self.subTest(cls=type(exc).__name__):
                code, line = errors.describe(exc)
                self.assertEqual(code, exits.FAILED)
                self.assertIn(words, line)
                self.assertEqual(errors.explain(exc), line[len("error: "):])

    def test_a_plain_redis_error_is_its_text(self):
        self.assertEqual(errors.explain(redis_errors.RedisError("odd")), "odd")
        self.assertEqual(errors.explain(errors.TickError("plain")), "plain")

    def test_every_table_key_is_a_redis_error(self):
        for cls in errors.REDIS_HINTS:
            self.assertTrue(issubclass(cls, redis_errors.RedisError), cls)


class HealthUnreachableTest(TempDirCase):
    def test_health_exits_1_when_redis_is_unreachable(self):
        node = self.new_node("n1", redis={"host": "127.0.0.1", "port": free_port()})
        run = node.run("node_manager.py", "health")
        self.assertEqual(run.returncode, exits.FAILED, run.stderr)  # was 2, which means bad config everywhere
        self.assertEqual(run.stdout.strip().splitlines()[-1], "unreachable")
        run = node.run("node_manager.py", "health", "--json", "--quiet")
        self.assertEqual((run.returncode, json.loads(run.stdout)["status"]), (exits.FAILED, "unreachable"))


class CodesEndToEndTest(RedisCase):
    """The codes a user sees for an answer that is not a fault: each its own number."""

    def test_health_degraded_exits_1(self):
        run = self.new_node("n1").run("node_manager.py", "health")  # no heartbeat, no leader
        self.assertEqual((run.returncode, run.stdout.strip().splitlines()[-1]), (exits.FAILED, "degraded"))

    def test_get_of_a_missing_key_exits_4(self):
        run = self.new_node("n1").run("state_sync.py", "get", "missing")
        self.assertEqual(run.returncode, exits.NOT_FOUND, run.stderr)

    def test_submit_wait_timeout_exits_6(self):
        run = self.new_node("n1").run("task_queue.py", "submit", "--type", "echo", "--require", "nobody",
                                      "--wait", "--wait-timeout", "0.3", "--quiet")
        self.assertEqual(run.returncode, exits.TIMED_OUT, run.stderr)
        self.assertIn("it stays queued", run.stderr)


class TerminatedTest(RedisCase):
    """SIGTERM to a one-shot command: one line saying so (the task a --wait leaves queued named), in the
    log too, and exit 143; not a silent death by the signal."""

    def start(self, node, *args) -> subprocess.Popen:
        proc = subprocess.Popen(node.argv(*args), env=node.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.communicate()))
        return proc

    def clients(self) -> int:
        """Connections to the test's Redis besides the one asking."""
        return len(self.server.command("CLIENT", "LIST").splitlines()) - 1

    def stop(self, proc: subprocess.Popen) -> str:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, exits.TERMINATED, err)  # -15: killed by the signal, nothing said
        self.assertNotIn("Traceback", err)
        return err

    def test_watch(self):
        node = self.new_node("n1")
        watch = self.start(node, "state_sync.py", "watch", "k", "--timeout", "60", "--quiet")
        wait_for(lambda: self.clients() >= 1, 20, message="the watch to reach Redis")
        self.assertEqual(self.stop(watch), "state_sync.py: stopped by SIGTERM\n")
        self.assertIn("WARNING", node.log_text("state_sync"))
        self.assertIn("stopped by SIGTERM", node.log_text("state_sync"))

    def test_submit_wait_names_the_task_that_stays_queued(self):
        node = self.new_node("n1")
        submit = self.start(node, "task_queue.py", "submit", "--type", "echo", "--require", "nobody", "--wait",
                            "--quiet")
        found = wait_for(lambda: re.search(r"submitted task (\S+)", node.log_text("task_queue")), 20,
                         message="the task to be queued")
        task_id = found.group(1)
        err = self.stop(submit)
        self.assertEqual(err.splitlines(), ["task_queue.py: stopped by SIGTERM while waiting; task %s stays queued: "
                                            "check it with `task_queue.py status %s`" % (task_id, task_id)])
        self.assertIn("task %s stays queued" % task_id, node.log_text("task_queue"))
        status = node.run_json("task_queue.py", "status", task_id)
        self.assertEqual(status["state"], "pending")


class DocsTablesTest(unittest.TestCase):
    """The exit-code table of each README is the one exits.markdown_table generates
    (``python3 -m distnode.core.exits --update-docs`` rewrites it)."""

    def test_readme_tables_match_exits(self):
        for lang, page in exits.PAGES.items():
            with self.subTest(page=page):
                with open(os.path.join(REPO, page), encoding="utf-8") as fh:
                    text = fh.read()
                if exits.BEGIN not in text:
                    self.skipTest("%s has no %s table yet: the docs helper adds it" % (page, exits.BEGIN))
                self.assertEqual(exits.with_table(text, lang), text,
                                 "run: python3 -m distnode.core.exits --update-docs (from scripts/)")

    def test_skill_md_states_the_resolved_codes(self):
        with open(os.path.join(REPO, "SKILL.md"), encoding="utf-8") as fh:
            text = fh.read()
        self.assertNotRegex(text, r"2 Redis unreachable")
        self.assertNotRegex(text, r"exit 4 when `--wait-timeout`")
        self.assertIn("exit %d when `--wait-timeout`" % exits.TIMED_OUT, text)
        self.assertIn("health` exits %d, not 2, when Redis is" % exits.FAILED, text)


if __name__ == "__main__":
    unittest.main()
