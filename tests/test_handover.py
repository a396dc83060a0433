"""A living follower steps the moment the lease is vacant (issue 15): ``ElectionJob.wait`` in cluster/election_job.py.

Under ``--loop`` and ``--foreground`` a follower blocks on the cluster events between its steps and
steps at another node's ``leader_released`` / ``leader_stepped_down``, or when the lease its last step
saw lapses (its PTTL), instead of at its next tick; a leader sleeps its period. Checked on real
redis-servers by order, never by a stopwatch: the periods are long (a step every 30 s, a heartbeat and
a failover tick every 20 s), so a follower that took over at its next tick, as before, cannot have
done it within the bounds below (half of a period, or less); the events stream says who released and
who took the lease after whom, and Redis's own clock says the lease had lapsed first.
"""

import calendar
import os
import signal
import subprocess
import threading
import time
import unittest

from support.base import RedisCase, slow  # first: puts scripts/ on sys.path
from support.nodes import NodeEnv, wait_for

from distnode.cluster import membership
from distnode.cluster.election_job import ElectionJob
from distnode.core import config
from distnode.core import log as log_mod
from distnode.run.context import Context

ME, OTHER = "n1", "n2"
EVENTS, LEADER, EPOCH, TERM = "openclaw:cluster:events", "openclaw:cluster:leader", "openclaw:cluster:epoch", \
    "openclaw:cluster:term"
PERIOD_S = 30  # election.renew_interval of the nodes below: the tick a follower used to wait for
# Long periods throughout: the heartbeat's (and the failover manager's, which elects on a vacant lease)
# is 20 s, the lease 90 s; DEBUG logs show every election step.
LONG = {"node": {"heartbeat_interval": 20, "heartbeat_ttl": 60},
        "election": {"lease_ttl": 90, "renew_interval": PERIOD_S},
        "logging": {"level": "DEBUG"}}
# Where a follower that steps only at its ticks cannot have taken the lease yet: from its first step,
# its next election tick is 30 s away and its next failover tick 20 s.
WITHIN_S = 15


def leader_events(server) -> list:
    """(type, node) of the events about the lease in the stream, oldest first."""
    out = []
    for _id, fields in server.command("XRANGE", EVENTS, "-", "+") or []:
        record = dict(zip(fields[::2], fields[1::2]))
        if record["type"].startswith("leader_"):
            out.append((record["type"], record["node"]))
    return out


def event_time(server, kind: str, node: str) -> float:
    """Redis's time (s) of the last ``kind`` event of ``node``."""
    for _id, fields in reversed(server.command("XRANGE", EVENTS, "-", "+") or []):
        record = dict(zip(fields[::2], fields[1::2]))
        if (record["type"], record["node"]) == (kind, node):
            return float(record["time"])
    raise AssertionError("no %s event of %s" % (kind, node))


def timed_steps(node) -> list:
    """(time s, outcome) of ``node``'s election job's steps, from its log (DEBUG: every step is there)."""
    out = []
    for line in node.log_text("leader_election").splitlines():
        if ": election: " in line and "woken by" not in line:
            stamp_s = calendar.timegm(time.strptime(line[:19], "%Y-%m-%dT%H:%M:%S")) + float(line[19:23])
            out.append((stamp_s, line.split(": election: ", 1)[1].split(" ", 1)[0]))
    return out


def steps(node) -> list:
    """The outcomes of ``node``'s election job's steps, oldest first."""
    return [outcome for _stamp_s, outcome in timed_steps(node)]


class LivingHandover(RedisCase):
    """Two nodes, each a living process; the leader goes away; the follower takes over at once."""

    tmp_prefix = "dn-handover-"

    def setUp(self):
        super().setUp()
        # an epoch already: no bootstrap round (one heartbeat interval, 20 s here) before the first term
        self.server.command("SET", EPOCH, "1")

    def spawn_loop(self, node, script: str) -> subprocess.Popen:
        return node.spawn(script, "--loop", "--quiet")

    def start_loop_node(self, node_id: str, extra: dict = None):
        """A node as two --loop processes: the heartbeat (its first beat done), then the election."""
        node = self.new_node(node_id, LONG)
        if extra:
            node.update_config(extra)
        self.spawn_loop(node, "heartbeat.py")
        wait_for(lambda: self.server.command("EXISTS", "hb:" + node_id), 20, message="%s's first beat" % node_id)
        return node, self.spawn_loop(node, "leader_election.py")

    def start_foreground(self, node_id: str):
        node = self.new_node(node_id, LONG)
        proc = subprocess.Popen(node.argv("node_manager.py", "run", "--quiet"), env=node.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        node.procs.append(proc)
        return node, proc

    def wait_following(self, node, leader: str) -> float:
        """Until ``node``'s first step saw ``leader`` hold the lease; time.monotonic() then."""
        wait_for(lambda: steps(node), 20, message="%s's first election step" % node.node_id)
        self.assertEqual(node.memory().get("leader"), leader, node.log_text(tail_chars=3000))
        return time.monotonic()

    def wait_leader(self, node_id: str, since_s: float, within_s: float = WITHIN_S, nodes=()) -> None:
        """``node_id`` leads within ``within_s`` of ``since_s`` (monotonic)."""
        left_s = since_s + within_s - time.monotonic()
        try:
            wait_for(lambda: self.server.command("GET", LEADER) == node_id, max(left_s, 0.1),
                     message="%s to take the lease" % node_id)
        except AssertionError:
            raise AssertionError("%s did not take the lease within %gs (its ticks are %gs apart); events %s\n%s" % (
                node_id, within_s, PERIOD_S, leader_events(self.server),
                "\n".join(n.log_text(tail_chars=3000) for n in nodes)))

    def test_foreground_handover_happens_at_the_release_not_at_the_next_tick(self):
        a, proc_a = self.start_foreground("a")
        wait_for(lambda: self.server.command("GET", LEADER) == "a" or proc_a.poll() is not None, 20,
                 message="a to lead")
        b, _proc_b = self.start_foreground("b")
        first_s = self.wait_following(b, "a")
        proc_a.send_signal(signal.SIGTERM)  # a leaves: leave.lua releases its lease (leader_released)
        self.wait_leader("b", first_s, nodes=(a, b))
        proc_a.wait(30)
        self.assertEqual(proc_a.returncode, 0, a.log_text(tail_chars=3000))
        self.assertEqual(leader_events(self.server),
                         [("leader_elected", "a"), ("leader_released", "a"), ("leader_elected", "b")])
        wait_for(lambda: steps(b)[-1] == "acquired", 10, message="b's log to show the step that took it")
        log = b.log_text("leader_election")
        self.assertIn("woken by leader_released of a", log.split("election: follower")[-1], log)

    def test_loop_handover_happens_at_the_release_not_at_the_next_tick(self):
        a, election_a = self.start_loop_node("a")
        wait_for(lambda: self.server.command("GET", LEADER) == "a", 20, message="a to lead")
        b, _election_b = self.start_loop_node("b")
        first_s = self.wait_following(b, "a")
        os.killpg(election_a.pid, signal.SIGTERM)  # ElectionJob.stop releases the lease
        self.wait_leader("b", first_s, nodes=(a, b))
        self.assertEqual(election_a.wait(30), 0)
        self.assertEqual(leader_events(self.server),
                         [("leader_elected", "a"), ("leader_released", "a"), ("leader_elected", "b")])
        self.assertIn("released the lease on shutdown", a.log_text("leader_election"))

    @slow("waits out a 6 s lease after a kill -9")
    def test_after_a_crash_the_follower_steps_when_the_lease_lapses_not_at_its_next_tick(self):
        # a renews a 6 s lease every 2 s; b, with the long periods, learns from each step when it lapses
        a, _election_a = self.start_loop_node("a", {"election": {"lease_ttl": 6, "renew_interval": 2}})
        wait_for(lambda: self.server.command("GET", LEADER) == "a", 20, message="a to lead")
        b, _election_b = self.start_loop_node("b")
        self.wait_following(b, "a")
        a.stop_all(signal.SIGKILL)  # no release, no event: the lease must run out
        now_s, now_us = (int(x) for x in self.server.command("TIME"))
        pttl_ms = self.server.command("PTTL", LEADER)
        self.assertGreater(pttl_ms, 0, "a's lease lapsed before b's step could see it")
        lapse_s = now_s + now_us / 1e6 + pttl_ms / 1000  # by Redis's clock
        killed_s = time.monotonic()
        # b takes it once it lapsed (at most 6 s), long before its next tick (30 s after its last step)
        self.wait_leader("b", killed_s, within_s=pttl_ms / 1000 + 8, nodes=(a, b))
        self.assertGreaterEqual(event_time(self.server, "leader_elected", "b"), lapse_s - 0.001,
                                "b took the lease before it lapsed")
        self.assertEqual(leader_events(self.server), [("leader_elected", "a"), ("leader_elected", "b")])
        wait_for(lambda: steps(b)[-1] == "acquired", 10, message="b's log to show the step that took it")

    @slow("waits for a follower's 4 s tick")
    def test_without_blocking_reads_the_follower_takes_over_at_its_next_tick(self):
        period_s = 4
        a, election_a = self.start_loop_node("a")
        wait_for(lambda: self.server.command("GET", LEADER) == "a", 20, message="a to lead")
        b, _election_b = self.start_loop_node("b", {"election": {"lease_ttl": 12, "renew_interval": period_s},
                                                    "redis": {"blocking_reads": False}})
        self.wait_following(b, "a")
        seen = len(steps(b))
        wait_for(lambda: len(steps(b)) > seen, 20, message="b's next step")  # its ticks are 4 s apart
        os.killpg(election_a.pid, signal.SIGTERM)  # released right after one of b's ticks
        wait_for(lambda: steps(b)[-1] == "acquired", 20, message="b to take the lease")
        # b slept its whole period through a's release: its step before the one that took the lease
        # came (at least) a period earlier, much longer than a woken follower would have waited
        stamps = [stamp for stamp, _outcome in timed_steps(b)[-2:]]
        self.assertGreater(stamps[1] - stamps[0], period_s / 2, timed_steps(b))
        self.assertNotIn("woken by", b.log_text("leader_election"))


def make_ctx(base_dir: str, node_id: str, server, extra: dict = None) -> Context:
    """A Context for in-process steps of ``node_id``: the long periods, but a heartbeat round of 1 s."""
    env = NodeEnv(base_dir, node_id, server, config=dict(LONG, node={"heartbeat_interval": 1, "heartbeat_ttl": 60},
                                                         **(extra or {})))
    cfg = config.load(env.config_dir, env.log_dir)
    cfg.values["node"]["id"] = node_id
    cfg.values["redis"].update(host=server.host, port=server.port)
    logger = log_mod.Logger("leader_election", node_id, env.log_dir, console=None, use_syslog=False)
    return Context("leader_election", cfg, logger, {"--loop": True})


class FollowerWait(RedisCase):
    """ElectionJob.wait in one process: what wakes a follower, and that a step it wakes early changes nothing."""

    tmp_prefix = "dn-follower-wait-"

    def setUp(self):
        super().setUp()
        self.server.command("SET", EPOCH, "4")
        self.ctx = self.new_ctx()
        membership.beat(self.ctx)  # registered and alive: eligible
        self.job = ElectionJob(self.ctx)
        self.addCleanup(self.ctx.close)
        self.addCleanup(self.job.stop, self.ctx)

    def new_ctx(self, extra: dict = None) -> Context:
        return make_ctx(self.tmp, ME, self.server, extra)

    def hold(self, node_id: str, lease_ms: int, epoch: int = 4) -> None:
        """``node_id`` holds the lease in a term at ``epoch`` for ``lease_ms``."""
        self.server.command("SET", LEADER, node_id, "PX", lease_ms)
        self.server.command("HSET", TERM, "node", node_id, "instance", "other", "epoch", epoch, "confirmed", "1")
        self.server.command("PEXPIRE", TERM, lease_ms)

    def add_event(self, kind: str, node: str) -> None:
        self.server.command("XADD", EVENTS, "*", "type", kind, "node", node, "epoch", "4", "time", "0")

    def follow(self) -> None:
        """One step (a follower), the wait that reads the stream's position ("primed"), a second step."""
        self.assertEqual(self.job(self.ctx)["outcome"], "follower")
        self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "primed")
        self.assertEqual(self.job(self.ctx)["outcome"], "follower")

    def test_a_step_woken_while_the_lease_is_held_changes_nothing(self):
        self.hold(OTHER, 60000)
        self.follow()
        self.add_event("leader_released", OTHER)  # a release the lease does not reflect: it is still held
        self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "woken")
        result = self.job(self.ctx)
        self.assertEqual((result["outcome"], result["leader"], result["epoch"]), ("follower", OTHER, 4))
        self.assertEqual(self.server.command("GET", LEADER), OTHER)
        self.assertEqual(self.server.command("GET", EPOCH), "4")
        self.assertEqual(leader_events(self.server), [("leader_released", OTHER)])  # nothing elected

    def test_only_another_nodes_release_or_step_down_wakes_a_follower(self):
        self.hold(OTHER, 60000)
        self.follow()
        for kind, node in (("leader_stepped_down", OTHER), ("leader_released", OTHER)):
            with self.subTest(kind):
                before = self.server.command("XLEN", EVENTS)
                # first what must not wake it: another kind of event, this node's own release (it is barred)
                adds = [("node_offline", OTHER), ("leader_elected", OTHER), ("leader_released", ME), (kind, node)]
                timers = [threading.Timer(0.2 * (i + 1), self.add_event, event) for i, event in enumerate(adds)]
                for timer in timers:
                    timer.start()
                self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "woken")
                landed = self.server.command("XLEN", EVENTS) - before  # when it woke
                for timer in timers:
                    timer.join()
                self.assertEqual(landed, len(adds), "woken before the event that means the lease is vacant")

    def test_a_follower_steps_when_the_lease_it_saw_lapses(self):
        self.hold(OTHER, 1500)
        self.follow()
        started_s = time.monotonic()
        self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "due")  # no event: the lapse ended the wait
        self.assertLess(time.monotonic() - started_s, WITHIN_S)
        self.assertEqual(self.server.command("EXISTS", LEADER), 0, "woken before the lease lapsed")
        self.assertEqual(self.job(self.ctx)["outcome"], "acquired")

    def test_the_bootstrap_round_ends_the_wait(self):
        self.server.command("DEL", EPOCH)  # no epoch: a round of one heartbeat interval (1 s) starts
        self.assertEqual(self.job(self.ctx)["outcome"], "waiting")
        self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "primed")
        self.assertEqual(self.job(self.ctx)["outcome"], "waiting")
        started_s = time.monotonic()
        self.assertEqual(self.job.wait(self.ctx, PERIOD_S), "due")
        self.assertLess(time.monotonic() - started_s, WITHIN_S)
        self.assertEqual(self.job(self.ctx)["outcome"], "acquired")

    def test_a_leader_and_a_node_without_blocking_reads_sleep_their_period(self):
        slept = []
        for name, extra, lease_holder in (("a leader", None, None), ("no blocking reads",
                                                                     {"redis": {"blocking_reads": False}}, OTHER)):
            with self.subTest(name):
                self.server.command("DEL", LEADER, TERM)
                if lease_holder:
                    self.hold(lease_holder, 60000)
                ctx = self.new_ctx(extra)
                ctx.sleep = slept.append
                job = ElectionJob(ctx)
                self.addCleanup(job.stop, ctx)
                self.assertEqual(job(ctx)["outcome"], "follower" if lease_holder else "acquired")
                self.add_event("leader_released", OTHER)
                self.assertEqual(job.wait(ctx, PERIOD_S), "slept")
                self.assertIsNone(job.watch, "it opened a blocking connection")
                ctx.close()
        self.assertEqual(slept, [PERIOD_S, PERIOD_S])

    def test_stop_closes_the_events_connection(self):
        self.hold(OTHER, 60000)
        self.follow()

        def clients() -> int:
            return len(self.server.command("CLIENT", "LIST").strip().splitlines())
        with_watch = clients()
        self.job.stop(self.ctx)
        wait_for(lambda: clients() < with_watch, 5, message="the events connection to close")


if __name__ == "__main__":
    unittest.main()
