"""scripts/log.py: line format, levels, console, rotation, and rotation under concurrent writers."""

import glob
import io
import os
import re
import subprocess
import sys
import unittest

from support.base import SCRIPTS, SKIP_SLOW, TempDirCase  # first: puts scripts/ on sys.path
from distnode.core import log as log_mod

LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) node=(\S+) (\S+): (.*)$")

# A writer process: N lines "w<k> <i> <padding>" through one Logger each, as separate scripts would.
WRITER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from distnode.core import log
logger = log.Logger("shared", "w" + sys.argv[3], sys.argv[2], max_bytes=int(sys.argv[5]),
                    backup_count=int(sys.argv[6]), use_syslog=False, console=None)
pad = "x" * (int(sys.argv[3]) * 7 % 40)
for i in range(int(sys.argv[4])):
    logger.info("w%s %d %s", sys.argv[3], i, pad)
logger.close()
"""


class LogCase(TempDirCase):
    tmp_prefix = "dn-log-"

    def logger(self, **kw) -> log_mod.Logger:
        kw.setdefault("use_syslog", False)
        kw.setdefault("console", None)
        logger = log_mod.Logger("tick", "n1", self.tmp, **kw)
        self.addCleanup(logger.close)
        return logger

    def files(self, name: str = "tick") -> list:
        """The log and its backups, oldest first."""
        path = os.path.join(self.tmp, name + ".log")
        backups = sorted(glob.glob(path + ".[0-9]*"), key=lambda p: -int(p.rsplit(".", 1)[1]))
        return backups + ([path] if os.path.exists(path) else [])

    def lines(self, name: str = "tick") -> list:
        out = []
        for path in self.files(name):
            with open(path, "rb") as fh:
                data = fh.read()
            self.assertTrue(data.endswith(b"\n") or not data, "%s ends mid-line" % path)
            out += data.decode("utf-8").splitlines()
        return out


class LoggerTest(LogCase):
    def test_line_format_and_levels(self):
        console = io.StringIO()
        logger = self.logger(level="INFO", console=console)
        logger.debug("hidden %d", 1)
        logger.info("hello %s %d", "world", 5)
        logger.warning("100% literal, no args")
        logger.error("bad: %r", "x")
        lines = self.lines()
        self.assertEqual(len(lines), 3)
        parsed = [LINE_RE.match(line) for line in lines]
        self.assertTrue(all(parsed), lines)
        self.assertEqual([(m.group(1), m.group(2), m.group(3), m.group(4)) for m in parsed], [
            ("INFO", "n1", "tick", "hello world 5"),
            ("WARNING", "n1", "tick", "100% literal, no args"),
            ("ERROR", "n1", "tick", "bad: 'x'"),
        ])
        self.assertEqual(console.getvalue().splitlines(), lines)

    def test_debug_level_and_console_off(self):
        logger = self.logger(level="DEBUG")
        logger.debug("shown")
        logger.log("INFO", "file only", console=False)
        self.assertEqual(len(self.lines()), 2)

    def test_file_mode(self):
        self.logger().info("x")
        self.assertEqual(os.stat(os.path.join(self.tmp, "tick.log")).st_mode & 0o777, 0o640)

    def test_rotation_single_writer(self):
        logger = self.logger(max_bytes=1000, backup_count=3)
        for i in range(200):
            logger.info("line %03d", i)
        files = self.files()
        self.assertEqual([os.path.basename(p) for p in files], ["tick.log.3", "tick.log.2", "tick.log.1", "tick.log"])
        for path in files:
            self.assertLessEqual(os.path.getsize(path), 1000, path)
        numbers = [int(line.rsplit(" ", 1)[1]) for line in self.lines()]
        self.assertEqual(numbers, list(range(numbers[0], 200)), "lines out of order or missing")
        self.assertGreater(len(numbers), 3 * 1000 // 60)

    def test_backup_count_zero_truncates(self):
        logger = self.logger(max_bytes=500, backup_count=0)
        for i in range(50):
            logger.info("line %03d", i)
        self.assertEqual([os.path.basename(p) for p in self.files()], ["tick.log"])
        self.assertLessEqual(os.path.getsize(self.files()[0]), 500)
        self.assertTrue(self.lines()[-1].endswith("line 049"))

    def test_line_longer_than_max_bytes(self):
        logger = self.logger(max_bytes=100, backup_count=2)
        logger.info("y" * 300)
        logger.info("short")
        self.assertEqual([os.path.basename(p) for p in self.files()], ["tick.log.1", "tick.log"])
        self.assertTrue(self.lines()[0].endswith("y" * 300))

    def test_reopens_after_external_rotation(self):
        logger = self.logger()
        logger.info("before")
        os.rename(os.path.join(self.tmp, "tick.log"), os.path.join(self.tmp, "tick.log.1"))
        logger.info("after")  # logrotate-style rename: the next line goes to a fresh file
        with open(os.path.join(self.tmp, "tick.log")) as fh:
            self.assertTrue(fh.read().rstrip().endswith("after"))

    def test_unwritable_log_dir_does_not_raise(self):
        blocker = os.path.join(self.tmp, "not-a-dir")
        with open(blocker, "w"):
            pass
        console = io.StringIO()
        logger = log_mod.Logger("tick", "n1", blocker, use_syslog=False, console=console)
        logger.info("still fine")
        logger.close()
        self.assertIn("unwritable", console.getvalue())
        self.assertIn("still fine", console.getvalue())

    def test_nothing_raises_when_the_file_and_the_console_both_fail(self):
        """Issue 13 item 11: a job logs its failure through this; logging the failure must not fail."""
        class Broken:
            def write(self, _text):
                raise OSError(28, "No space left on device")

            def flush(self):
                raise ValueError("I/O operation on closed file")

        blocker = os.path.join(self.tmp, "not-a-dir")
        with open(blocker, "w"):
            pass
        logger = log_mod.Logger("tick", "n1", blocker, use_syslog=False, console=Broken())
        logger.error("disk full: %s", "x")
        logger.log("ERROR", "traceback only in the file", console=False)
        logger.close()

    def test_for_config(self):
        class Cfg(dict):
            node_id = "cfg-node"
            log_dir = self.tmp
        cfg = Cfg(logging={"level": "WARNING", "max_bytes": 123, "backup_count": 2, "syslog": False})
        logger = log_mod.for_config("tick", cfg, console=None)
        self.addCleanup(logger.close)
        logger.info("dropped")
        logger.warning("kept")
        self.assertEqual((logger.max_bytes, logger.backup_count), (123, 2))
        self.assertEqual(len(self.lines()), 1)
        self.assertIn("node=cfg-node", self.lines()[0])


class ConcurrentRotationTest(LogCase):
    """Several processes writing one log while it rotates at a small max_bytes."""

    def run_writers(self, writers: int, lines_each: int, max_bytes: int, backup_count: int) -> None:
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, SCRIPTS, self.tmp, str(k), str(lines_each),
                                   str(max_bytes), str(backup_count)], stderr=subprocess.PIPE)
                 for k in range(writers)]
        for proc in procs:
            _out, err = proc.communicate(timeout=60)
            self.assertEqual(proc.returncode, 0, err.decode())
            self.assertEqual(err, b"")

    def parse(self, name: str = "shared") -> dict:
        """{writer: [line numbers in file order]}, failing on any torn or foreign line."""
        seen = {}
        for line in self.lines(name):
            match = LINE_RE.match(line)
            self.assertTrue(match, "torn line: %r" % line[:120])
            words = match.group(4).split(" ")
            writer, number = words[0], int(words[1])
            self.assertEqual("w" + match.group(2)[1:], writer)
            self.assertEqual(words[2] if len(words) > 2 else "", "x" * (int(writer[1:]) * 7 % 40))
            seen.setdefault(writer, []).append(number)
        return seen

    def test_no_line_lost_or_torn(self):
        writers, each = (3, 400) if SKIP_SLOW else (4, 1500)
        self.run_writers(writers, each, max_bytes=4096, backup_count=1000)
        seen = self.parse()
        self.assertEqual(sorted(seen), ["w%d" % k for k in range(writers)])
        for writer, numbers in seen.items():
            self.assertEqual(sorted(numbers), list(range(each)), "%s lost or duplicated lines" % writer)
        backups = len(self.files("shared")) - 1
        self.assertGreater(backups, 5, "the test must make the log rotate many times")
        for path in self.files("shared"):
            # Writers append without a lock, so a file may take a few lines past max_bytes, never more.
            self.assertLessEqual(os.path.getsize(path), 4096 + writers * 200, path)

    def test_backups_never_exceed_backup_count(self):
        self.run_writers(4, 300 if SKIP_SLOW else 800, max_bytes=2048, backup_count=3)
        names = sorted(os.listdir(self.tmp))
        self.assertEqual([n for n in names if n.startswith("shared.log.") and n != "shared.log.lock"],
                         ["shared.log.1", "shared.log.2", "shared.log.3"])
        self.assertTrue(all(n.startswith("shared.log") for n in names), names)
        self.parse()  # whatever is left is whole lines


if __name__ == "__main__":
    unittest.main()
