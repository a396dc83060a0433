"""The chaos harness (tests/chaos/): its checks can fail, its schedule replays, its proxy stalls; and the short run.

The short run is ``tests/chaos/run.py --seed 7 --duration 60``: five nodes,
every fault kind, a task stream; it must report every invariant held. It
takes about a minute (``DN_TEST_SKIP_SLOW=1`` skips it). The long run is
``python3 tests/chaos/run.py --long``.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from support.base import TESTS, RedisCase, slow  # first: puts scripts/ on sys.path
from support.redis_server import RedisReplyError

CHAOS = os.path.join(TESTS, "chaos")
if CHAOS not in sys.path:
    sys.path.insert(0, CHAOS)  # the harness's modules import each other by bare name
import checker  # noqa: E402
import schedule as sched  # noqa: E402
from cluster import Timing  # noqa: E402
from proxy import StallProxy  # noqa: E402
from recorder import Event, LogClaims, Recorder, Restart, Sample, parse_logs  # noqa: E402
import adversary  # noqa: E402
import redlock  # noqa: E402

SHORT_SEED, SHORT_DURATION_S = 7, 60


def samples(*rows, gen=0):
    """rows: (t, leader, epoch) -> Samples of one generation."""
    return [Sample(t, leader, epoch, gen) for t, leader, epoch in rows]


def claims(became=(), marked=(), lost=()):
    c = LogClaims()
    c.became = [(node, epoch, "leader_election", "") for node, epoch in became]
    c.marked = [(marker, epoch, offline, "") for marker, epoch, offline in marked]
    c.lost = [(node, epoch, "leader_election", "") for node, epoch in lost]
    return c


class SingleLeaderCheckTest(unittest.TestCase):
    def test_clean_history_passes(self):
        history = samples((0.1, "n1", 1), (4.0, None, 1), (4.5, "n2", 2))
        events = [Event(0, "1-0", "leader_elected", "n1", 1, 0), Event(0, "2-0", "node_offline", "n1", 2, 0),
                  Event(0, "1-1", "leader_elected", "n2", 2, 0)]
        check = checker.check_single_leader(history, events, claims(became=[("n1", 1), ("n2", 2)],
                                                                    marked=[("n2", 2, "n1")]))
        self.assertTrue(check.ok, check.violations)

    def test_two_nodes_with_one_epoch_in_redis(self):
        check = checker.check_single_leader(samples((0.1, "n1", 3), (2.0, "n2", 3)), [], claims())
        self.assertEqual(len(check.violations), 1)
        self.assertIn("epoch 3 held by n1", check.violations[0])
        self.assertIn("n2", check.violations[0])

    def test_two_nodes_claiming_one_epoch_in_their_logs(self):
        check = checker.check_single_leader(samples((0.1, "n1", 3)), [], claims(became=[("n1", 3), ("n4", 3)]))
        self.assertIn("n4 (leader_election.log of n4)", check.violations[0])

    def test_offline_marked_by_a_node_that_did_not_lead_that_epoch(self):
        check = checker.check_single_leader(samples((0.1, "n1", 3)), [], claims(marked=[("n2", 3, "n5")]))
        self.assertIn("n2 marked n5 offline at epoch 3, but the leader of epoch 3 was n1", check.violations[0])

    def test_fenced_write_at_an_older_epoch(self):
        events = [Event(0, "1-0", "leader_elected", "n1", 4, 0), Event(0, "2-0", "leader_elected", "n2", 5, 0),
                  Event(0, "3-0", "node_offline", "n3", 4, 0)]
        check = checker.check_single_leader([], events, claims())
        self.assertEqual(len(check.violations), 1)
        self.assertIn("event 3-0 (node_offline of n3) carries epoch 4 after event 2-0 at epoch 5", check.violations[0])

    def test_stream_starting_over_after_an_empty_restart_is_judged_by_check_2(self):
        restart = Restart(5.0, True, 1, 5, {"n1": 5})
        events = [Event(0, "1-0", "leader_elected", "n1", 5, 0), Event(0, "1-0", "leader_elected", "n2", 6, 1)]
        self.assertTrue(checker.check_single_leader([], events, claims(), [restart]).ok)


class EpochsGrowCheckTest(unittest.TestCase):
    def test_epoch_going_down_without_a_restart(self):
        check = checker.check_epochs_grow(samples((0.1, "n1", 5), (1.0, "n1", 4)), [], claims(), [])
        self.assertIn("went down from 5 to 4", check.violations[0])

    def test_aof_restart_keeps_the_lifetime(self):
        history = samples((0.1, "n1", 5)) + samples((3.0, "n1", 4), gen=1)
        check = checker.check_epochs_grow(history, [], claims(), [Restart(2.0, False, 1, 5, {})])
        self.assertIn("went down from 5 to 4", check.violations[0])

    def test_empty_restart_with_a_higher_first_term_passes(self):
        history = samples((0.1, "n1", 5)) + samples((3.0, None, 5), (4.0, "n2", 6), gen=1)
        check = checker.check_epochs_grow(history, [], claims(), [Restart(2.0, True, 1, 5, {"n2": 5})])
        self.assertTrue(check.ok, check.violations)
        self.assertIn("floor restored 5, first new term 6", " ".join(check.facts))

    def test_empty_restart_reusing_an_epoch_a_live_node_remembered(self):
        history = samples((0.1, "n1", 5)) + samples((3.0, "n2", 5), gen=1)
        check = checker.check_epochs_grow(history, [], claims(), [Restart(2.0, True, 1, 5, {"n2": 5})])
        self.assertIn("a leader held epoch 5", check.violations[0])
        self.assertIn("although a live node remembered 5", check.violations[0])

    def test_documented_limit_is_reported_not_hidden(self):
        history = samples((0.1, "n1", 5)) + samples((3.0, "n2", 5), gen=1)
        check = checker.check_epochs_grow(history, [], claims(), [Restart(2.0, True, 1, 5, {"n2": 4})])
        self.assertTrue(check.ok)
        self.assertIn("documented limit: no live node remembered epoch 5", check.expected[0])

    def test_a_node_becoming_leader_at_a_lower_epoch_than_before(self):
        check = checker.check_epochs_grow([], [], claims(became=[("n1", 4), ("n1", 4)]), [])
        self.assertIn("n1 became leader at epoch 4 after epoch 4", check.violations[0])


class _Stream:
    def __init__(self, states, wiped=(), unacked=()):
        self.acked = {i: tid for i, tid in enumerate(states)}
        self.last_state, self.wiped, self.unacked, self.failed_submits = dict(states), set(wiped), set(unacked), 0


class TaskCheckTest(unittest.TestCase):
    def test_accounting(self):
        stream = _Stream({"a": "done", "b": "dead", "c": "missing", "d": "running", "e": "missing", "f": "done"},
                         wiped={"e"})
        ledger = {"a": [("n1", "1"), ("n2", "2")], "b": [("n1", "1")] * 5}
        check = checker.check_tasks(stream, ledger, drained=False)
        self.assertEqual(check.counts, {"submitted": 6, "done": 2, "dead": 1, "lost": 1, "wiped": 1,
                                        "duplicates": 5, "duplicate_tasks": 2, "stuck": 1})
        text = "\n".join(check.violations)
        self.assertIn("task c was acknowledged and is gone", text)
        self.assertIn("task d is still running after the drain (drain timed out)", text)
        self.assertIn("task f is done but its handler never ran", text)
        self.assertEqual(len(check.violations), 3)


class _Fault:
    def __init__(self, kind, hit_leader, failover_s, converged_s=0.5):
        self.spec = sched.FaultSpec(1, kind, "leader", 5.0, 0.1)
        self.hit_leader, self.failover_s, self.converged_s = hit_leader, failover_s, converged_s
        self.old_leader, self.bound_s, self.reason = "n1", 2.0, "n3 is offline"

    def label(self):
        return "#1 " + self.spec.kind


class FailoverAndConvergenceCheckTest(unittest.TestCase):
    def test_failover_table_and_a_missed_failover(self):
        faults = [_Fault("kill", True, 3.0), _Fault("kill", True, 4.0), _Fault("kill", True, 3.5),
                  _Fault("stop", True, None), _Fault("graceful", False, None)]
        check = checker.check_failovers(faults, {"crash": 4, "graceful": 1, "stall": 4})
        self.assertEqual(check.table["crash"], {"n": 3, "min": 3.0, "median": 3.5, "max": 4.0, "missed": 0})
        self.assertEqual(check.table["stall"]["missed"], 1)
        self.assertNotIn("graceful", check.table)
        self.assertEqual(check.violations, ["fault #1 stop: the lease never left n1"])

    def test_convergence_bound(self):
        self.assertTrue(checker.check_convergence([_Fault("kill", False, None)], {"seconds": 1.5}, 2.0).ok)
        late = checker.check_convergence([], {"seconds": 2.5}, 2.0)
        self.assertIn("converged 2.50s after the last fault, above the bound 2.00s", late.violations[0])
        never = checker.check_convergence([_Fault("kill", False, None, None)], {"seconds": None, "reason": "x"}, 2.0)
        self.assertEqual(len(never.violations), 2)


class _LoggedNode:
    node_id = "n2"
    LOGS = {"leader_election": [
        "2026-01-01T00:00:00.000Z INFO node=n2 leader_election: became leader at epoch 7",
        "2026-01-01T00:00:09.000Z WARNING node=n2 leader_election: lost leadership of epoch 7 (follower)"],
        "failover_manager": [
        "2026-01-01T00:00:05.000Z WARNING node=n2 failover_manager: node n4 is offline (heartbeat expired); "
        "marked at epoch 7"]}

    def log_lines(self, script):
        return self.LOGS.get(script, [])

    def console_text(self):
        return "Traceback (most recent call last):\n  boom"


class LogParsingTest(unittest.TestCase):
    def test_claims_and_tracebacks(self):
        parsed = parse_logs([_LoggedNode()])
        self.assertEqual([c[:2] for c in parsed.became], [("n2", 7)])
        self.assertEqual([c[:2] for c in parsed.lost], [("n2", 7)])
        self.assertEqual([c[:3] for c in parsed.marked], [("n2", 7, "n4")])
        self.assertEqual([t[:2] for t in parsed.tracebacks], [("n2", "console")])


class _ScriptedProbe:
    """Answers the recorder's MULTI/GET/GET/EXEC with scripted (leader, epoch) pairs, XRANGE with nothing."""

    def __init__(self):
        self.lease = (None, None)

    def request(self, commands):
        if commands[0][0] == "XRANGE":
            return [[]]
        if self.lease == "loading":
            error = RedisReplyError("LOADING Redis is loading the dataset in memory")
            return [error, error, error, RedisReplyError("EXECABORT Transaction discarded")]
        leader, epoch = self.lease
        return ["OK", "QUEUED", "QUEUED", [leader, None if epoch is None else str(epoch).encode()]]


class RecorderTest(unittest.TestCase):
    def test_samples_belong_to_the_redis_that_answered_them(self):
        """Samples read while Redis is stopping belong to the old life; the new life starts once it is gone."""
        probe = _ScriptedProbe()
        rec = Recorder(probe, clock=iter(range(1000)).__next__)
        probe.lease = (b"n1", 6)
        rec.poll_lease()
        restart = rec.redis_stopping(True, {"n1": 6})
        rec.poll_lease()  # the old server still answers while it shuts down
        self.assertEqual([s.generation for s in rec.samples], [0])
        rec.redis_stopped(restart)
        for lease in ((None, None), "loading", (None, 6), (b"n2", 7)):
            probe.lease = lease
            rec.poll_lease()
        self.assertEqual([(s.leader, s.epoch, s.generation) for s in rec.samples],
                         [("n1", 6, 0), (None, None, 1), (None, 6, 1), ("n2", 7, 1)])
        self.assertEqual(rec.failed_polls, 1, "a LOADING Redis is a failed poll, not a crash")
        check = checker.check_epochs_grow(rec.samples, rec.events, claims(), rec.restarts)
        self.assertTrue(check.ok, check.violations)
        self.assertIn("highest epoch before 6, floor restored 6, first new term 7", " ".join(check.facts))


class HooksCheckTest(unittest.TestCase):
    """One on_become_leader per term; no 'lost leadership of epoch E' while Redis still shows E held."""

    OFFSET = 1000.0  # wall time of t=0

    def lost(self, node, epoch, t):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.OFFSET + t)) + ".%03dZ" % round(t % 1 * 1000)
        return (node, epoch, "leader_election", "%s WARNING node=%s leader_election: lost leadership of epoch %d "
                                                "(follower)" % (stamp, node, epoch))

    def test_clean_history_passes(self):
        history = samples((0.1, "n1", 1), (4.0, None, 1), (4.5, "n2", 2))
        hooks = [("on_become_leader", "n1", 1, "n1", 0.2), ("on_become_leader", "n2", 2, "n2", 4.6),
                 ("on_lose_leadership", "n1", 2, "n1", 5.0)]
        violations, facts = adversary.check_hooks(hooks, [self.lost("n1", 1, 4.9)], history, self.OFFSET)
        self.assertEqual(violations, [])
        self.assertIn("2 on_become_leader runs over 2 terms", facts[0])

    def test_two_become_hooks_for_one_term(self):
        hooks = [("on_become_leader", "n1", 3, "n1", 1.0), ("on_become_leader", "n1", 3, "n1", 1.1)]
        violations, _ = adversary.check_hooks(hooks, [], samples((0.5, "n1", 3)), self.OFFSET)
        self.assertEqual(violations, ["on_become_leader ran 2 times for epoch 3 (n1 at t=1.00s, n1 at t=1.10s)"])

    def test_lost_leadership_while_redis_still_shows_the_lease(self):
        history = samples((0.1, "n1", 4), (9.0, "n2", 5))
        violations, _ = adversary.check_hooks([], [self.lost("n1", 4, 3.0)], history, self.OFFSET)
        self.assertEqual(len(violations), 1)
        self.assertIn("n1 said 'lost leadership of epoch 4' at t=3.00s", violations[0])
        self.assertIn("while Redis still showed n1 holding epoch 4", violations[0])
        quiet, _ = adversary.check_hooks([], [self.lost("n1", 4, 3.0)], history, self.OFFSET, until_t=3.1)
        self.assertEqual(quiet, [], "claims after the recorder stopped are not judged")


class HandlerOverlapTest(unittest.TestCase):
    def test_a_second_copy_while_the_first_still_runs(self):
        runs = {"t1": [(100, "n2", "n2", 1.0, None), (200, "n2", "n2", 3.0, 7.0)],
                "t2": [(300, "n3", "n3", 1.0, 2.0), (400, "n4", "n4", 2.5, 4.0)]}
        out = adversary.handler_overlaps(runs, {100: 6.0})
        self.assertEqual(out, ["task t1: handler pid 100 (n2, started t=1.00s) still ran at t=3.00s when pid 200 "
                               "(n2) started a second copy"])

    def test_a_killed_copy_that_died_with_its_worker_passes(self):
        runs = {"t1": [(100, "n2", "n2", 1.0, None), (200, "n2", "n2", 3.0, 7.0)]}
        self.assertEqual(adversary.handler_overlaps(runs, {100: 2.0}), [])


class RedlockCheckTest(unittest.TestCase):
    """Check 12 (--redlock): the data Redis's lease never outlives what is left on a majority of instances."""

    def test_the_quorum_is_the_majority_th_longest_claim_of_the_same_process(self):
        reads = [("n1", 2900, "tok"), ("n1", 800, "tok"), ("n1", 2500, "other")]  # the third: another process
        self.assertEqual(redlock.quorum_left_ms("n1", "tok", reads, 2), 800)
        self.assertEqual(redlock.quorum_left_ms("n1", "tok", [("n1", 2900, "tok"), None, ("n2", 3000, "x")], 2), 0)
        self.assertEqual(redlock.quorum_left_ms("n1", None, [("n1", 2900, None), ("n1", 2800, None), None], 2), 2800)

    def test_a_data_lease_longer_than_the_quorums_is_a_violation(self):
        # issue 13 item 4 as found: a slow instance; the data Redis got the full validity, 4 s past the quorum
        reads = [("n1", 1500, "tok"), ("n1", 1450, "tok"), (None, -2, None)]
        margin, text = redlock.judge("n1", 5900, "tok", reads, 3.0, quorum=2)
        self.assertGreater(margin, 4000)
        self.assertIn("5900 ms left", text)
        self.assertIn("1450 ms", text)

    def test_a_data_lease_within_the_quorum_and_the_tolerance_passes(self):
        reads = [("n1", 2990, "tok"), ("n1", 2980, "tok"), ("n1", 400, "tok")]
        self.assertIsNone(redlock.judge("n1", 2950, "tok", reads, 2.0, quorum=2)[1])
        self.assertIsNone(redlock.judge("n1", 2980 + redlock.TOLERANCE_MS, "tok", reads, 0.0, quorum=2)[1])
        self.assertIsNone(redlock.judge(None, -2, None, reads, 2.0, quorum=2)[0], "no lease: nothing to judge")


class ScheduleTest(unittest.TestCase):
    def test_same_seed_same_schedule(self):
        timing = Timing(1.0)
        first = [f.as_tuple() for f in sched.make_schedule(7, timing)]
        self.assertEqual(first, [f.as_tuple() for f in sched.make_schedule(7, timing)])
        self.assertNotEqual(first, [f.as_tuple() for f in sched.make_schedule(8, timing)])

    def test_every_kind_first_and_node_faults_outlast_the_lease(self):
        timing = Timing(1.0)
        plan = sched.make_schedule(3, timing)
        self.assertEqual(sorted(f.kind for f in plan[:len(sched.KINDS)]), sorted(sched.KINDS))
        for f in plan[:len(sched.KINDS)]:
            if f.kind in ("kill", "stop", "graceful", "stall_delay", "stall_cut"):
                self.assertEqual(f.target, "leader", f.describe())
        self.assertLessEqual({"handshake", "lagging_failover", "duplicate", "worker_kill", "disk_full"},
                             set(sched.KINDS), "the faults of issue 13")

    def test_redlock_kinds_only_with_redlock(self):
        self.assertFalse(set(sched.REDLOCK_KINDS) & set(sched.KINDS), "the default (single Redis) run has none")
        timing = Timing(1.0)
        plan = sched.make_schedule(3, timing, sched.REDLOCK_KINDS)
        for f in plan[:10]:
            self.assertEqual(f.target, "redlock", f.describe())
            if f.kind == "redlock_slow":
                self.assertTrue(0.2 <= f.delay_s <= 0.7 and f.duration_s > timing.lease_s, f.describe())
        proc = subprocess.run([sys.executable, os.path.join(CHAOS, "run.py"), "--faults", "redlock_slow"],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--redlock", proc.stderr)
        for f in plan:
            if f.kind in sched.NODE_KINDS:
                self.assertGreaterEqual(f.duration_s, timing.lease_s + 2 * timing.interval_s, f.describe())
            if f.kind == "stall_delay":
                self.assertGreater(f.delay_s, timing.lease_s, "late writes must land after the lease lapsed")


class ProxyTest(RedisCase):
    def ping(self, port, timeout_s=2.0):
        """(reply bytes, seconds); b"" when the connection was closed or reset."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            started = time.monotonic()
            try:
                sock.sendall(b"PING\r\n")
                data = sock.recv(100)
            except ConnectionResetError:
                data = b""
            return data, time.monotonic() - started

    def test_pass_delay_cut(self):
        proxy = StallProxy(self.server.host, self.server.port)
        try:
            port = proxy.add("n1")
            self.assertEqual(self.ping(port)[0], b"+PONG\r\n")
            proxy.set_mode("n1", "delay", 0.3)
            data, took = self.ping(port)
            self.assertEqual(data, b"+PONG\r\n")
            self.assertGreaterEqual(took, 0.55, "0.3 s each way")
            proxy.set_mode("n1", "cut")
            data, _took = self.ping(port)
            self.assertEqual(data, b"", "a cut connection is closed, not answered")
            proxy.set_mode("n1", "pass")
            self.assertEqual(self.ping(port)[0], b"+PONG\r\n")
        finally:
            proxy.close()

    def test_late_write_still_lands_after_the_client_gave_up(self):
        proxy = StallProxy(self.server.host, self.server.port)
        try:
            port = proxy.add("n1")
            proxy.set_mode("n1", "delay", 0.5)
            with socket.create_connection(("127.0.0.1", port), timeout=0.1) as sock:
                sock.sendall(b"SET chaos:late 1\r\n")
                with self.assertRaises(socket.timeout):
                    sock.recv(100)
            deadline = time.monotonic() + 3
            while self.server.command("GET", "chaos:late") is None and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(self.server.command("GET", "chaos:late"), "1")
        finally:
            proxy.close()


@slow("a 60 s chaos run of five nodes")
class ShortRunTest(unittest.TestCase):
    def test_short_run_keeps_every_invariant(self):
        with tempfile.TemporaryDirectory() as tmp:
            report_path = os.path.join(tmp, "report.json")
            proc = subprocess.run([sys.executable, os.path.join(CHAOS, "run.py"), "--seed", str(SHORT_SEED),
                                   "--duration", str(SHORT_DURATION_S), "--report", report_path],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
            sys.stderr.write("\n" + proc.stdout[proc.stdout.find("chaos run:"):] + "\n")
            self.assertEqual(proc.returncode, 0, proc.stdout[-6000:])
            with open(report_path) as fh:
                report = json.load(fh)
        self.assertTrue(report["ok"])
        # 60 s samples the kinds (the first round, one of each in a seeded order, takes longer); the long run
        # covers them all
        self.assertLessEqual(set(report["exercised"]), set(report["kinds"]))
        self.assertGreaterEqual(len(report["exercised"]), 6, report["exercised"])
        self.assertEqual(len(report["kinds"]), len(sched.KINDS) - len(report["notes"]))
        self.assertGreaterEqual(report["tasks"]["submitted"], 30)
        self.assertEqual((report["tasks"]["lost"], report["tasks"]["stuck"]), (0, 0))
        for f in report["faults"]:
            if f["leader"] and f["kind"] in sched.NODE_KINDS:
                self.assertGreaterEqual(report["failover"][sched.CATEGORY[f["kind"]]]["n"], 1, f)
        numbers = [c["number"] for c in report["checks"]]
        self.assertEqual(numbers[:6], [1, 2, 3, 4, 5, 6])
        self.assertLessEqual({7, 10}, set(numbers), "the hooks and handler checks run in every run")


if __name__ == "__main__":
    unittest.main()
