"""procs/spawn.py and procs/env.py: the owner's side of every child (handlers, agent turns, hooks).

A child's whole process group goes at its deadline, when its lease is not
renewed and when its owner dies; its output is bounded and counted; its
environment holds no Redis credential.
"""

import os
import signal
import subprocess
import sys
import time
import unittest

from support.base import SCRIPTS, TempDirCase  # first: puts scripts/ on sys.path
from support.nodes import process_alive, wait_for

from distnode.procs import env as child_env
from distnode.procs import spawn

LEAVES_A_GRANDCHILD = 'sleep 60 & echo $! > "%s"; wait'


class Run(TempDirCase):
    def grandchild(self, pid_file: str) -> int:
        with open(pid_file) as fh:
            pid = int(fh.read())
        self.addCleanup(_kill, pid)
        return pid

    def test_the_deadline_kills_the_whole_group(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        outcome = spawn.run(["sh", "-c", LEAVES_A_GRANDCHILD % pid_file], b"", None, 0.5, 1000)
        self.assertEqual((outcome.ok, outcome.reason, outcome.error), (False, "timeout", "timed out after 0.5s: killed"))
        grandchild = self.grandchild(pid_file)
        wait_for(lambda: not process_alive(grandchild), 5, message="the grandchild to be killed")

    def test_the_supervisor_kills_a_handler_whose_lease_is_not_renewed(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        argv = ["sh", "-c", LEAVES_A_GRANDCHILD % pid_file]
        for renewal in (None, 0):  # renewals failing, then the lease reported lost
            lease = spawn.Lease(time.monotonic() + 1.0, 0.3, lambda r=renewal: r)
            outcome = spawn.run(argv, b"", None, 60, 1000, lease=lease)
            self.assertFalse(outcome.ok)
            self.assertIn("lease", outcome.error)
            grandchild = self.grandchild(pid_file)
            wait_for(lambda: not process_alive(grandchild), 5, message="the grandchild to be killed")

    def test_output_is_bounded_and_counted_and_the_payload_is_on_stdin(self):
        outcome = spawn.run(["sh", "-c", "cat; head -c 100000 /dev/zero"], b"hello", None, 60, 1000)
        self.assertTrue(outcome.ok, outcome.error)
        self.assertEqual((outcome.output[:5], len(outcome.output)), (b"hello", 1000))
        self.assertEqual((outcome.out_bytes, outcome.dropped_bytes), (100005, 99005))

    def test_a_failure_names_its_exit_and_stderr(self):
        outcome = spawn.run(["sh", "-c", "echo boom >&2; exit 3"], b"", None, 60, 1000)
        self.assertEqual((outcome.ok, outcome.code, outcome.error, outcome.err_tail), (False, 3, "exit 3: boom", b"boom\n"))

    def test_a_killed_owner_takes_its_child_s_group_at_once(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        code = ("import sys; sys.path.insert(0, %r); from distnode.procs import spawn; "
                "spawn.run(['sh', '-c', %r], b'', None, 60, 1000)" % (SCRIPTS, LEAVES_A_GRANDCHILD % pid_file))
        owner = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
        self.addCleanup(owner.wait)
        self.addCleanup(_kill, owner.pid)
        wait_for(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file), 10, message="the child")
        grandchild = self.grandchild(pid_file)
        owner.kill()  # kill -9: nothing in the owner runs any more
        wait_for(lambda: not process_alive(grandchild), 10, message="the child's group to be killed")


class Environment(unittest.TestCase):
    def test_a_short_password_is_dropped_only_by_exact_value(self):
        env = child_env.clean_env({"redis": {"password": "ab"}}, base={"EXACT": "ab", "WORD": "about", "HOME": "/h"})
        self.assertEqual(env, {"WORD": "about", "HOME": "/h"})

    def test_credentials_by_name_by_url_and_inside_values_are_dropped(self):
        cfg = {"redis": {"password": "s3cret-pw", "instances": [{"password": "other-pw"}]}}
        base = {"REDIS_PASSWORD": "x", "REDISCLI_AUTH": "x", "MY_REDIS_TOKEN": "x", "CACHE_REDIS_URL": "redis://h",
                "APP_DSN": "pg://u:s3cret-pw@db", "OTHER": "other-pw", "KEEP": "kept"}
        self.assertEqual(child_env.clean_env(cfg, {"TASK_ID": "t1"}, base=base), {"KEEP": "kept", "TASK_ID": "t1"})


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


if __name__ == "__main__":
    unittest.main()
