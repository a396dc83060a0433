"""The invariants a chaos run must keep, as pure functions of what was recorded.

Each check returns a ``Check``: a name, the violations found (each one line
that names the node, the epoch and where it was seen) and counts for the
summary. A check with violations fails the run. ``expected`` lists
documented exceptions (the epoch-floor limit, see schedule.py), printed but
not failures.

Sources of "acting as leader at epoch E":
- samples: the lease holder and the epoch, read atomically from Redis;
- events: ``leader_elected`` entries in openclaw:cluster:events, written by
  elect.lua inside Redis with the epoch it took; every other entry there
  (``leader_released``, ``leader_stepped_down``, ``node_offline``,
  ``node_left``) is written inside a Lua script with the epoch current at
  that moment, ``node_offline`` only by the lease holder at its epoch
  (failover_scan.lua is fenced);
- logs: "became leader at epoch E" (the elector's transition) and "node X is
  offline ...; marked at epoch E" (a fenced sweep that marked a node).
"""

import statistics

from schedule import CATEGORY


class Check:
    def __init__(self, number: int, name: str):
        self.number, self.name = number, name
        self.violations, self.expected, self.facts = [], [], []

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"number": self.number, "name": self.name, "ok": self.ok, "violations": self.violations,
                "expected": self.expected, "facts": self.facts}


def _segments(restarts) -> dict:
    """generation -> index of the data lifetime it belongs to (only an empty restart starts a new one)."""
    lifetime, out = 0, {0: 0}
    for restart in restarts:
        if restart.empty:
            lifetime += 1
        out[restart.generation] = lifetime
    return out


# -- 1. one leader per epoch; fenced writes never go back ----------------------------------

def check_single_leader(samples, events, claims, restarts=()) -> Check:
    check = Check(1, "never two leaders with one epoch; fenced writes carry non-decreasing epochs")
    holders = {}  # epoch -> {node: first place seen}
    for s in samples:
        if s.leader is not None and s.epoch is not None:
            holders.setdefault(s.epoch, {}).setdefault(s.leader, "Redis at t=%.2fs" % s.t)
    for e in events:
        if e.kind == "leader_elected":
            holders.setdefault(e.epoch, {}).setdefault(e.node, "event %s" % e.id)
    for node, epoch, script, _line in claims.became:
        holders.setdefault(epoch, {}).setdefault(node, "%s.log of %s" % (script, node))
    for epoch in sorted(holders):
        if len(holders[epoch]) > 1:
            check.violations.append("epoch %d held by %s" % (epoch, ", ".join(
                "%s (%s)" % (n, where) for n, where in sorted(holders[epoch].items()))))
    for marker, epoch, offline, _line in claims.marked:
        owner = holders.get(epoch, {})
        if marker not in owner:
            check.violations.append("%s marked %s offline at epoch %d, but the leader of epoch %d was %s" % (
                marker, offline, epoch, epoch, ", ".join(sorted(owner)) or "nobody seen"))
    for e in events:
        if e.kind == "node_offline" and e.epoch not in holders:
            check.violations.append("node_offline of %s (event %s) at epoch %d, which no leader held"
                                    % (e.node, e.id, e.epoch))
    _check_event_order(events, _segments(restarts), check)
    check.facts = ["%d epochs with a leader (%s)" % (len(holders), _ranges(sorted(holders))),
                   "%d lease samples" % len(samples),
                   "%d events" % len(events), "%d 'became leader' log lines" % len(claims.became),
                   "%d offline markings in logs" % len(claims.marked)]
    return check


def _ranges(numbers: list) -> str:
    """[1, 2, 3, 5] -> '1-3, 5'."""
    out, start = [], None
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            out.append(str(start) if start == n else "%d-%d" % (start, n))
            start = None
    return ", ".join(out)


def _check_event_order(events, lifetime: dict, check: Check) -> None:
    """In the order Redis wrote them, the epochs of the event stream never go down while Redis keeps
    its data (AOF restarts included); across an empty restart check 2 judges the new epochs."""
    last = None
    for e in events:
        if last is not None and e.epoch < last.epoch and lifetime[e.generation] == lifetime[last.generation]:
            check.violations.append("event %s (%s of %s) carries epoch %d after event %s at epoch %d" % (
                e.id, e.kind, e.node, e.epoch, last.id, last.epoch))
        last = e


# -- 2. epochs only grow, Redis restarts included ---------------------------------------------

def check_epochs_grow(samples, events, claims, restarts) -> Check:
    check = Check(2, "epochs only grow (an empty Redis starts above every epoch seen before)")
    lifetime = _segments(restarts)
    prev = None
    for s in samples:
        if s.epoch is None:
            continue
        if prev is not None and s.epoch < prev.epoch:
            if lifetime[s.generation] == lifetime[prev.generation]:
                check.violations.append("the epoch went down from %d to %d at t=%.2fs without an empty restart"
                                        % (prev.epoch, s.epoch, s.t))
        prev = s
    floors = []
    for restart in restarts:
        if restart.empty:
            floors.append(_check_restart(restart, samples, events, check))
    by_node = {}
    for node, epoch, script, _line in claims.became:
        by_node.setdefault((node, script), []).append(epoch)
    for (node, script), epochs in sorted(by_node.items()):
        for a, b in zip(epochs, epochs[1:]):
            if b <= a:
                check.violations.append("%s became leader at epoch %d after epoch %d (%s.log)" % (node, b, a, script))
    check.facts = ["%d Redis restarts (%d empty)" % (len(restarts), sum(r.empty for r in restarts)),
                   ] + floors + [
                   "highest epoch %d" % max([s.epoch for s in samples if s.epoch is not None] + [0])]
    return check


def _check_restart(restart, samples, events, check: Check) -> str:
    """After an empty restart the first term must be above every epoch seen before it.

    Returns one line for the summary: the floor the nodes restored and the first new term.
    """
    before = restart.max_epoch_before
    mine = [s for s in samples if s.generation == restart.generation and s.epoch is not None]
    floor = mine[0].epoch if mine and mine[0].leader is None else None
    term = next((s.epoch for s in mine if s.leader is not None), None)
    what = "empty restart" if getattr(restart, "kind", "empty") == "empty" else restart.kind
    fact = "%s at t=%.1fs: highest epoch before %d, floor restored %s, first new term %s" % (
        what, restart.t_down, before, floor if floor is not None else "-", term if term is not None else "-")
    firsts = [(s.epoch, "Redis at t=%.2fs" % s.t) for s in samples
              if s.generation == restart.generation and s.leader is not None]
    firsts += [(e.epoch, "event %s" % e.id) for e in events
               if e.generation == restart.generation and e.kind == "leader_elected"]
    low = [(epoch, where) for epoch, where in firsts if epoch <= before]
    if not low:
        return fact
    remembered = max(restart.remembered.values() or [0])
    line = "after the %s at t=%.2fs a leader held epoch %d (%s), not above %d seen before" % (
        what, restart.t_down, low[0][0], low[0][1], before)
    if remembered < before:
        check.expected.append(line + "; documented limit: no live node remembered epoch %d (highest %d)"
                              % (before, remembered))
    else:
        check.violations.append(line + " although a live node remembered %d" % remembered)
    return fact


# -- 3. tasks -------------------------------------------------------------------------------

def check_tasks(stream, ledger: dict, drained: bool) -> Check:
    check = Check(3, "every submitted task done or dead; none lost")
    states = {tid: stream.last_state.get(tid, "missing") for tid in stream.acked.values()}
    done = sum(1 for s in states.values() if s == "done")
    dead = sum(1 for s in states.values() if s == "dead")
    wiped = [t for t, s in states.items() if s not in ("done", "dead") and t in stream.wiped]
    lost = [t for t, s in states.items() if s == "missing" and t not in stream.wiped]
    stuck = [(t, s) for t, s in states.items() if s not in ("done", "dead", "missing") and t not in stream.wiped]
    for tid in lost:
        check.violations.append("task %s was acknowledged and is gone (no record in Redis)" % tid)
    for tid, state in stuck:
        check.violations.append("task %s is still %s after the drain%s" % (tid, state, "" if drained else
                                                                          " (drain timed out)"))
    never = [t for t, s in states.items() if s == "done" and t not in ledger]
    for tid in never:
        check.violations.append("task %s is done but its handler never ran" % tid)
    runs = [len(ledger.get(t, ())) for t in states]
    dup_tasks = sum(1 for n in runs if n > 1)
    extra = sum(n - 1 for n in runs if n > 1)
    check.facts = ["submitted %d" % len(states), "done %d" % done, "dead %d" % dead, "lost %d" % len(lost),
                   "gone with an empty Redis %d (by design: no persistence)" % len(wiped),
                   "duplicates %d (%d tasks ran more than once)" % (extra, dup_tasks),
                   "never acknowledged %d" % len(stream.unacked), "failed submit runs %d" % stream.failed_submits]
    check.counts = {"submitted": len(states), "done": done, "dead": dead, "lost": len(lost), "wiped": len(wiped),
                    "duplicates": extra, "duplicate_tasks": dup_tasks, "stuck": len(stuck)}
    return check


# -- 4. convergence ---------------------------------------------------------------------------

def check_convergence(faults, final, bound_s) -> Check:
    check = Check(4, "after the last fault the cluster converges (one leader, all online, memories agree)")
    if final is None or final.get("seconds") is None:
        reason = (final or {}).get("reason", "not measured")
        check.violations.append("no convergence within %.1fs after the last fault: %s" % (bound_s, reason))
    elif final["seconds"] > bound_s:
        check.violations.append("converged %.2fs after the last fault, above the bound %.2fs"
                                % (final["seconds"], bound_s))
    for f in faults:
        if f.converged_s is None:
            check.violations.append("fault %s: the cluster did not converge within %.1fs: %s" % (
                f.label(), f.bound_s, f.reason))
    times = [f.converged_s for f in faults if f.converged_s is not None]
    late = [f for f in faults[:-1] if f.converged_s is not None and f.converged_s > f.bound_s]
    if late:
        check.facts.append("%d earlier fault(s) converged after their bound: %s" % (len(late), ", ".join(
            "%s %.2fs > %.2fs" % (f.label(), f.converged_s, f.bound_s) for f in late)))
    if final and final.get("seconds") is not None:
        check.facts.append("final convergence %.2fs (bound %.2fs)" % (final["seconds"], bound_s))
    if times:
        check.facts.append("after each fault: min %.2fs, median %.2fs, max %.2fs" % (
            min(times), statistics.median(times), max(times)))
    return check


# -- 5. failover times ------------------------------------------------------------------------

def failover_table(faults) -> dict:
    """category -> {"n", "min", "median", "max", "missed"} over faults that hit the leader."""
    out = {}
    for f in faults:
        if not f.hit_leader:
            continue
        row = out.setdefault(CATEGORY[f.spec.kind], {"times": [], "missed": 0})
        if f.failover_s is None:
            row["missed"] += 1
        else:
            row["times"].append(f.failover_s)
    for row in out.values():
        times = row.pop("times")
        row.update(n=len(times), min=min(times) if times else None, max=max(times) if times else None,
                   median=statistics.median(times) if times else None)
    return out


def check_failovers(faults, bounds: dict) -> Check:
    check = Check(5, "a fault on the leader moves the lease to another node before it heals")
    for f in faults:
        if f.hit_leader and f.failover_s is None:
            check.violations.append("fault %s: the lease never left %s" % (f.label(), f.old_leader))
    table = failover_table(faults)
    for category, row in sorted(table.items()):
        if row["max"] is not None and row["max"] > bounds[category]:
            check.facts.append("%s failover max %.2fs is above the documented %.2fs (timing, not a violation)"
                               % (category, row["max"], bounds[category]))
    check.table = table
    return check


# -- 6. no node crashed ---------------------------------------------------------------------------

def check_processes(nodes, claims) -> Check:
    check = Check(6, "no node process crashed or printed a traceback")
    for node in nodes:
        for script, code in node.unexpected_exits():
            check.violations.append("%s of %s exited with code %s while nobody stopped it" % (script, node.node_id,
                                                                                               code))
    for node_id, where, line in claims.tracebacks:
        check.violations.append("%s (%s): %s" % (node_id, where, line))
    return check


# -- the summary ------------------------------------------------------------------------------------

def summary(header: list, faults, checks, table: dict, bounds: dict) -> str:
    lines = list(header)
    lines.append("")
    lines.append("faults injected (%d):" % len(faults))
    lines.append("  %-4s %-16s %-18s %7s %9s %10s %7s" % ("#", "kind", "target", "held", "failover", "converged",
                                                          "bound"))
    for f in faults:
        fo = "%.2fs" % f.failover_s if f.failover_s is not None else ("missed" if f.hit_leader else "-")
        cv = "%.2fs" % f.converged_s if f.converged_s is not None else "NO"
        lines.append("  %-4d %-16s %-18s %6.1fs %9s %10s %6.2fs" % (f.spec.index, f.spec.kind, f.target_text(),
                                                                   f.held_s, fo, cv, f.bound_s))
    lines.append("")
    lines.append("failover times (leader faults):")
    lines.append("  %-10s %3s %8s %8s %8s %8s %7s" % ("kind", "n", "min", "median", "max", "bound", "missed"))
    for category in ("crash", "graceful", "stall"):
        row = table.get(category)
        if not row:
            lines.append("  %-10s %3d %8s %8s %8s %7.2fs %7s" % (category, 0, "-", "-", "-", bounds[category], "-"))
            continue
        fmt = lambda v: "%.2fs" % v if v is not None else "-"  # noqa: E731
        lines.append("  %-10s %3d %8s %8s %8s %7.2fs %7d" % (category, row["n"], fmt(row["min"]),
                                                               fmt(row["median"]), fmt(row["max"]),
                                                               bounds[category], row["missed"]))
    lines.append("")
    lines.append("invariants:")
    for c in checks:
        lines.append("  [%s] %d. %s" % ("ok" if c.ok else "FAIL", c.number, c.name))
        if c.facts:
            lines.append("         " + "; ".join(c.facts))
        for v in c.violations[:20]:
            lines.append("         VIOLATION: " + v)
        if len(c.violations) > 20:
            lines.append("         ... and %d more" % (len(c.violations) - 20))
        for e in c.expected:
            lines.append("         expected (documented limit): " + e)
    bad = sum(len(c.violations) for c in checks)
    lines.append("")
    lines.append("RESULT: %s (%d violation%s)" % ("PASS" if not bad else "FAIL", bad, "" if bad == 1 else "s"))
    return "\n".join(lines)
