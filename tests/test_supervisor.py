"""procs/supervisor.py: its lean start (no ctypes, no os.execvpe, a text protocol) keeps its guarantees."""

import os
import shutil
import sys
import unittest

from support import base  # noqa: F401 - first: puts scripts/ on sys.path

from distnode.procs import spawn
from distnode.procs import supervisor


class Supervisor(unittest.TestCase):
    @unittest.skipUnless(sys.platform.startswith("linux"), "PR_SET_PDEATHSIG is Linux's")
    def test_the_handler_still_gets_pr_set_pdeathsig(self):
        probe = "import ctypes; s = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(s)); print(s.value)"
        outcome = spawn.run([sys.executable, "-c", probe], b"", None, 60, 1000)
        self.assertTrue(outcome.ok, outcome.error)
        self.assertEqual(outcome.output.strip(), b"9")  # PR_GET_PDEATHSIG: SIGKILL

    def test_a_handler_that_closed_its_output_is_still_waited_for_and_stopped(self):
        outcome = spawn.run(["sh", "-c", "exec >&- 2>&-; sleep 0.2; exit 3"], b"", None, 60, 1000)
        self.assertEqual(outcome.error, "exit 3")
        calls = []
        outcome = spawn.run(["sh", "-c", "exec >&- 2>&-; sleep 60"], b"", None, 60, 1000, term_grace_s=5,
                            should_stop=lambda: calls.append(1) or len(calls) > 2)
        self.assertTrue(outcome.stopped, outcome.error)

    def test_the_path_search_and_bad_argv_end_as_errors(self):
        env = dict(os.environ, PATH=os.pathsep.join(["/nonexistent", os.path.dirname(shutil.which("sh"))]))
        self.assertTrue(spawn.run(["sh", "-c", "exit 0"], b"", env, 60, 1000).ok)
        for argv in (["no-such-command-here"], ["/nonexistent/x"], ["sh", "a\0b"], []):
            outcome = spawn.run(argv, b"", env, 60, 1000)
            self.assertFalse(outcome.ok, argv)
            self.assertTrue(outcome.error.startswith("cannot "), outcome.error)

    def test_a_cut_report_is_no_report(self):
        self.assertEqual(supervisor.parse_report(b"exit 0 12 -\n"), {"code": 0, "out_bytes": 12, "reason": None})
        self.assertEqual(supervisor.parse_report(b"exit -9 0 owner gone\n")["reason"], "owner gone")
        for cut in (b"", b"exit 0 12 -", b"exit 0", b"error cannot", b"exit x 1 -\n", b"exit 0 1 -\nexit 0 1 -\n"):
            self.assertIsNone(supervisor.parse_report(cut), cut)
        status = {"error": "cannot run x: two\nlines"}
        self.assertEqual(supervisor.parse_report(supervisor.report_line(status)), {"error": "cannot run x: two lines"})


if __name__ == "__main__":
    unittest.main()
