"""cluster/hooks.py: a hook runs detached, as every child runs (procs.spawn), and never outlives its deadline.

Each test fires hooks directly (hooks.fire); test_elector.py checks which
transitions fire them. No Redis is needed: firing a hook sends nothing.
"""

import os
import signal
import unittest

from support.base import TempDirCase  # first: puts scripts/ on sys.path
from support.nodes import FAST, merge, process_alive, wait_for, wait_processes_gone, write_config

from distnode.cluster import hooks
from distnode.core import config
from distnode.core import log as log_mod
from distnode.procs import records
from distnode.run.context import Context

ME = "n1"
GRANDCHILD = "sleep 60 & echo $! > %s; sleep 60"  # a hook that leaves a grandchild in its group, then hangs


class HookCase(TempDirCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(wait_processes_gone, self.tmp, 30, True)  # the detached owners write under tmp
        self.addCleanup(self.stop_hooks)

    def ctx(self, settings: dict) -> Context:
        """A Context for node ME whose config holds ``settings`` (no Redis is contacted)."""
        folder = os.path.join(self.tmp, "config")
        write_config(folder, merge(FAST, dict({"node": {"id": ME}, "redis": {"port": 16379}}, **settings)))
        cfg = config.load(folder, os.path.join(self.tmp, "logs"))
        os.makedirs(cfg.run_dir, exist_ok=True)  # the runner makes it; the owners' records go there
        ctx = Context("test", cfg, log_mod.for_config("test", cfg, console=None), {})
        self.addCleanup(ctx.log.close)
        return ctx

    @staticmethod
    def stop_hooks():
        """SIGKILL the detached owners still running (their supervisors kill the hooks' groups)."""
        for proc in list(hooks._started):
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)

    @staticmethod
    def wait_hooks_done():
        for proc in list(hooks._started):
            proc.wait(30)  # the detached owners write into logs/: let them finish before the dir goes

    def logged(self, ctx) -> str:
        try:
            with open(os.path.join(ctx.cfg.log_dir, "hooks.log")) as fh:
                return fh.read()
        except OSError:
            return ""

    def grandchild(self, pid_file: str) -> int:
        wait_for(lambda: os.path.exists(pid_file) and os.path.getsize(pid_file), 10, message="the hook")
        with open(pid_file) as fh:
            pid = int(fh.read())
        self.addCleanup(_kill, pid)
        return pid


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


class Deadline(HookCase):
    def test_a_hook_past_its_timeout_loses_its_whole_process_group(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        ctx = self.ctx({"hooks": {"on_become_leader": ["sh", "-c", GRANDCHILD % pid_file], "timeout_s": 1}})
        self.assertTrue(hooks.fire(ctx, "on_become_leader", ME, 1))
        grandchild = self.grandchild(pid_file)
        self.wait_hooks_done()
        wait_for(lambda: not process_alive(grandchild), 5, message="the hook's grandchild to be killed")
        self.assertIn("hooks: on_become_leader sh -c", self.logged(ctx))
        self.assertIn("(killed after 1s, ", self.logged(ctx))

    def test_a_hook_that_cannot_start_is_logged_and_the_tick_goes_on(self):
        ctx = self.ctx({"hooks": {"on_leader_change": ["/nonexistent/hook"]}})
        self.assertTrue(hooks.fire(ctx, "on_leader_change", ME, 1))
        self.wait_hooks_done()
        self.assertIn("ERROR node=n1 hooks: on_leader_change /nonexistent/hook (failed to start: ", self.logged(ctx))

    def test_a_killed_owner_takes_its_hook_s_group_at_once(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        ctx = self.ctx({"hooks": {"on_become_leader": ["sh", "-c", GRANDCHILD % pid_file], "timeout_s": 60}})
        self.assertTrue(hooks.fire(ctx, "on_become_leader", ME, 1))
        grandchild = self.grandchild(pid_file)
        owner = hooks._started[-1]
        owner.kill()  # kill -9 of the detached owner: its supervisor sees the pipe close
        owner.wait()
        wait_for(lambda: not process_alive(grandchild), 10, message="the hook's group to be killed")

    @unittest.skipUnless(os.path.exists("/proc/self/stat"), "needs /proc")
    def test_a_group_left_by_a_killed_owner_and_supervisor_is_killed_by_the_next_hook_fired(self):
        pid_file = os.path.join(self.tmp, "grandchild")
        ctx = self.ctx({"hooks": {"on_become_leader": ["sh", "-c", GRANDCHILD % pid_file], "timeout_s": 60,
                                  "on_leader_change": ["true"]}})
        self.assertTrue(hooks.fire(ctx, "on_become_leader", ME, 1))
        grandchild = self.grandchild(pid_file)
        prefix = os.path.join(ctx.cfg.run_dir, "hook-child.%s." % ME)
        wait_for(lambda: [n for n in os.listdir(ctx.cfg.run_dir) if n.startswith("hook-child.")], 5,
                 message="the owner's record")
        os.killpg(hooks._started[-1].pid, signal.SIGSTOP)  # the owner cannot react: kill both, supervisor first
        supervisors = [p for p in _children(hooks._started[-1].pid)]
        for pid in supervisors:
            os.kill(pid, signal.SIGKILL)
        hooks._started[-1].kill()
        hooks._started[-1].wait()
        self.assertTrue(process_alive(grandchild), "the group's rest outlives its leader and supervisor")
        self.assertTrue(hooks.fire(ctx, "on_leader_change", ME, 1))
        wait_for(lambda: not process_alive(grandchild), 5, message="the orphaned group to be killed")
        self.assertEqual(records.kill_leftovers(prefix), [])


def _children(pid: int) -> list:
    """The pids whose parent is ``pid`` (/proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as fh:
                    if int(fh.read().rsplit(") ", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return out


class EnvironmentAndOutput(HookCase):
    def test_a_hook_gets_no_redis_credential_and_its_own_variables(self):
        secret = "pw-%s" % os.urandom(4).hex()
        self.patch_env(REDIS_PASSWORD=secret, MY_REDIS_URL="redis://:%s@h:1/0" % secret)
        ctx = self.ctx({"hooks": {"on_node_offline": ["env"]}})
        self.assertTrue(hooks.fire(ctx, "on_node_offline", "leader-1", 4, OFFLINE_NODE_ID="n9"))
        self.wait_hooks_done()
        with open(os.path.join(ctx.cfg.log_dir, "hooks.log.out")) as fh:
            seen = dict(line.split("=", 1) for line in fh.read().splitlines() if "=" in line)
        self.assertEqual({k: seen.get(k) for k in ("NODE_ID", "LEADER_ID", "EPOCH", "HOOK", "OFFLINE_NODE_ID")},
                         {"NODE_ID": ME, "LEADER_ID": "leader-1", "EPOCH": "4", "HOOK": "on_node_offline",
                          "OFFLINE_NODE_ID": "n9"})
        self.assertFalse(any(secret in v for v in seen.values()), "a hook saw the Redis password")
        self.assertNotIn("REDIS_PASSWORD", seen)

    def test_hook_output_is_bounded_logged_and_rotated(self):
        noisy = ["sh", "-c", "echo $EPOCH; yes | head -c 3000000"]
        ctx = self.ctx({"hooks": {"on_become_leader": noisy}, "tasks": {"max_output_bytes": 150000},
                        "logging": {"max_bytes": 200000, "backup_count": 1}})
        for epoch in (1, 2, 3):
            self.assertTrue(hooks.fire(ctx, "on_become_leader", ME, epoch))
            self.wait_hooks_done()
        out = os.path.join(ctx.cfg.log_dir, "hooks.log.out")
        kept = [p for p in (out, out + ".1", out + ".2") if os.path.exists(p)]
        with open(out, "rb") as fh:
            self.assertEqual(fh.read(2), b"3\n", "the last hook's output is kept")
        self.assertFalse(os.path.exists(out + ".2"), "more rotated files than logging.backup_count")
        for path in kept:
            self.assertLessEqual(os.path.getsize(path), 200000, path)
        lines = self.logged(ctx).splitlines()
        self.assertEqual(len(lines), 3, lines)
        for line in lines:
            self.assertIn("(exit 0, %d output bytes dropped, " % (3000002 - 150000), line)

    def test_an_unset_hook_starts_nothing(self):
        ctx = self.ctx({})
        before = len(hooks._started)
        self.assertFalse(hooks.fire(ctx, "on_become_leader", ME, 1))
        self.assertEqual(len(hooks._started), before)
        self.assertEqual(self.logged(ctx), "")


if __name__ == "__main__":
    unittest.main()
