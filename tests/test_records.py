"""procs/records.py: kill_leftover kills only what a killed owner and supervisor left, never another group."""

import json
import os
import shutil
import sys
import tempfile
import unittest

from support.base import SCRIPTS
from support.nodes import process_alive, wait_for

from distnode.procs import records


class LeftoverKiller(unittest.TestCase):
    """records.kill_leftover kills only what a killed supervisor's child left, never another group."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="leftover-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.record = os.path.join(self.tmp, "rec.json")
        self.victims = []
        self.addCleanup(self.kill_victims)

    def kill_victims(self):
        import signal
        for pid in self.victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def dead_pid(self) -> int:
        import subprocess
        proc = subprocess.Popen(["true"])
        proc.wait()
        return proc.pid

    def orphaned_group(self, mark=None):
        """(pid, pgid) of a sleeper left in a group whose leader exited, as a killed supervisor's handler
        leaves it; with ``mark``, the sleeper carries the marker the supervisor gives the handler."""
        import subprocess
        env = dict(os.environ)
        if mark:
            env[records.MARK_ENV] = mark
        proc = subprocess.Popen(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], stdout=subprocess.PIPE, env=env,
                                start_new_session=True)
        pid = int(proc.stdout.read())
        proc.wait()
        proc.stdout.close()
        self.victims.append(pid)
        return pid, proc.pid

    def write(self, path=None, **fields):
        rec = dict(pgid=0, start="4242", owner=self.dead_pid(), owner_start="1", boot=records.boot_id(), mark="m-1")
        rec.update(fields)
        with open(path or self.record, "w") as fh:
            json.dump(rec, fh)

    def alive(self, pid) -> bool:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return process_alive(pid)

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_record_naming_group_0_1_or_the_caller_s_own_is_refused(self):
        import subprocess
        for pgid in (0, 1, -5, "own"):
            code = ("import json, os, sys; sys.path.insert(0, %r); from distnode.procs import records\n"
                    "rec = json.load(open(%r)); rec['pgid'] = os.getpgid(0) if rec['pgid'] == 'own' else rec['pgid']\n"
                    "json.dump(rec, open(%r, 'w')); print(records.kill_leftover(%r)); print('survived')"
                    % (SCRIPTS, self.record, self.record, self.record))
            self.write(pgid=pgid)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True,
                                 timeout=60)
            self.assertEqual(out.stdout.split(), ["None", "survived"], (pgid, out.returncode, out.stderr))
            self.assertFalse(os.path.exists(self.record))

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_group_whose_leader_is_gone_loses_only_the_processes_carrying_the_marker(self):
        stranger, stranger_group = self.orphaned_group()  # e.g. a daemon whose group got the recorded id
        self.write(pgid=stranger_group, start="4242", mark="m-%s" % os.urandom(4).hex())
        self.assertIsNone(records.kill_leftover(self.record))
        self.assertTrue(self.alive(stranger))
        ours, our_group = self.orphaned_group(mark="m-ours")
        self.write(pgid=our_group, start="4242", mark="m-ours", boot="another-boot")
        self.assertIsNone(records.kill_leftover(self.record))  # a record from another boot names nothing of ours
        self.assertTrue(self.alive(ours))
        self.write(pgid=our_group, start="4242", mark="m-ours")
        self.assertEqual(records.kill_leftover(self.record), our_group)
        wait_for(lambda: not self.alive(ours), 5, message="the marked leftover to be killed")
        self.assertTrue(self.alive(stranger))

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_killed_writer_s_temporary_record_is_not_left_behind(self):
        ours, our_group = self.orphaned_group(mark="m-tmp")
        dead = self.dead_pid()
        self.write(path="%s.tmp.%d" % (self.record, dead), pgid=our_group, owner=dead, mark="m-tmp")
        records.kill_leftover(self.record)
        self.assertEqual(os.listdir(self.tmp), [])
        wait_for(lambda: not self.alive(ours), 5, message="the group the unfinished record named to be killed")


if __name__ == "__main__":
    unittest.main()
