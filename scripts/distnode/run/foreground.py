"""All of a node's ticks in one process, for hosts without OpenClaw cron (``start-node.sh --foreground``).

Each job (heartbeat, election, failover, state sync, task worker) runs in its
own thread with its own Redis connection and log file, on its own interval,
holding the same per-node lock its cron job would, so the two never run
side by side. SIGTERM or SIGINT stops them all (each finishes its current
tick), then the node leaves gracefully: pending tasks handed back, lease
released, heartbeat deleted, record marked ``left``.

No job dies silently: every exception a tick raises (a full disk under the
log dir, a bug) is logged with its traceback and the job ticks on
(``runner.run_loop``). The task worker claims only while this process's
heartbeat job works: it skips its tick until the first beat succeeded, and
after ``HEARTBEAT_FAILURES_BEFORE_PAUSE`` failed beats in a row or no good
beat for ``node.heartbeat_ttl`` (the cluster then sees this node offline),
until a beat succeeds again. A busy worker tick already under way finishes
first (it ends within ``tasks.tick_budget_s``).
"""

import signal
import threading
import time

from distnode.cluster import failover
from distnode.core import log as log_mod
from distnode.cluster import membership
from distnode.run import runner
from distnode.cluster.elector import Elector
from distnode.core.errors import NodeIdCollision, TickError
from distnode.redis.client import RedisError


HEARTBEAT_FAILURES_BEFORE_PAUSE = 2  # failed beats in a row (attempts, retries included) that stop the worker
FIRST_BEAT_WAIT_S = 5.0  # the worker's first tick waits this long for the first beat rather than skip


def _heartbeat(ctx) -> dict:
    try:
        return {"time": membership.beat(ctx)}
    except NodeIdCollision:
        # another live process took this node id (this one was paused past its heartbeat):
        # stop every job; leaving then refuses (the record is not ours) and the process exits 1
        ctx.stop_event.set()
        raise


class BeatWatch:
    """Whether this process's heartbeat job beats, for the task worker beside it."""

    def __init__(self, ttl_s: float, clock=time.monotonic):
        self.ttl_s, self.clock = ttl_s, clock
        self.last_ok_s = None
        self.failures_in_a_row = 0
        self.first_beat = threading.Event()

    def watched(self, tick):
        """``tick`` that records each outcome here."""
        def beat(ctx):
            try:
                result = tick(ctx)
            except BaseException:
                self.failures_in_a_row += 1
                raise
            self.last_ok_s, self.failures_in_a_row = self.clock(), 0
            self.first_beat.set()
            return result
        return beat

    def why_paused(self):
        """None while the heartbeat works; else why the worker must not claim."""
        if self.last_ok_s is None:
            return "no heartbeat has succeeded yet"
        if self.failures_in_a_row >= HEARTBEAT_FAILURES_BEFORE_PAUSE:
            return "the heartbeat job failed %d times in a row" % self.failures_in_a_row
        age_s = self.clock() - self.last_ok_s
        if age_s > self.ttl_s:
            return "no heartbeat succeeded for %.0fs (node.heartbeat_ttl %gs)" % (age_s, self.ttl_s)
        return None

    def gated(self, tick):
        """``tick`` that is skipped (and says so once) while the heartbeat does not work."""
        state = {"paused": False}

        def work(ctx):
            if self.last_ok_s is None:
                self.first_beat.wait(FIRST_BEAT_WAIT_S)
            why = self.why_paused()
            if why is not None:
                if not state["paused"]:
                    ctx.log.warning("not claiming tasks: %s (the cluster will see this node offline); "
                                    "claiming resumes after the next good heartbeat", why)
                state["paused"] = True
                return {"node": ctx.node_id, "paused": why}
            if state["paused"]:
                ctx.log.info("the heartbeat works again: claiming tasks")
                state["paused"] = False
            return tick(ctx)
        return work


def _election(ctx) -> dict:
    if not hasattr(ctx, "elector"):
        ctx.elector = Elector(ctx)
    return ctx.elector.try_acquire_or_renew().as_dict()


def _job(ctx, tick, period_s: float) -> None:
    """One job's thread: ``runner.run_loop`` (which survives every tick's exception), restarted should
    the loop itself ever raise, so a job never ends before the process is told to stop."""
    while not ctx.stopping:
        try:
            runner.run_loop(ctx, tick, period_s)
        except BaseException as exc:  # the top of a long-running job
            try:
                ctx.log.error("job loop failed: %s: %s; restarting it", type(exc).__name__, exc)
            except Exception:  # noqa: BLE001 - the log may be the fault
                pass
            ctx.sleep(period_s)


def jobs(cfg) -> list:
    """(script name, tick, period in seconds) for every job of this node."""
    beat_s = cfg["node"]["heartbeat_interval"]
    out = [("heartbeat", _heartbeat, beat_s),
           ("leader_election", _election, cfg.renew_interval_s),
           ("failover_manager", failover.step, beat_s)]
    from distnode.cluster import cluster_state
    from distnode.tasks import queue as taskq
    out.append(("state_sync", cluster_state.sync, beat_s))
    out.append(("task_queue", taskq.work_tick, min(beat_s, 2.0)))
    return out


def run(ctx) -> dict:
    """Run every job until a signal; then leave the cluster. Returns what leaving did."""
    cfg, stop = ctx.cfg, threading.Event()
    threads = []
    watch = BeatWatch(cfg["node"]["heartbeat_ttl"])
    try:  # a node id another live process holds: NodeIdCollision, one line, exit 1, nothing started
        membership.beat(ctx)
    except RedisError as exc:
        ctx.log.warning("first heartbeat failed (the heartbeat job retries): %s", exc)
    for script, tick, period_s in jobs(cfg):
        if script == "heartbeat":
            tick = watch.watched(tick)
        elif script == "task_queue":
            tick = watch.gated(tick)
        if runner.acquire_lock(cfg, script, long_lived=True) is None:
            stop.set()
            raise TickError("%s for node %s is already running (a cron job or another loop): remove the cron "
                            "jobs first (./start-node.sh --uninstall)" % (script, cfg.node_id))
        job_ctx = runner.Context(script, cfg, log_mod.for_config(script, cfg, console=ctx.log.console),
                                 {"--loop": True})
        job_ctx.stop_event = stop
        thread = threading.Thread(target=_job, args=(job_ctx, tick, period_s), name=script, daemon=True)
        threads.append((thread, job_ctx))

    def on_signal(signum, _frame):
        ctx.log.info("got %s: stopping every job, then leaving the cluster", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for thread, _ in threads:
        thread.start()
    ctx.log.info("node %s running %d jobs in the foreground; stop with Ctrl-C or SIGTERM", ctx.node_id, len(threads))
    while not stop.wait(0.5):
        pass
    for thread, job_ctx in threads:
        thread.join(cfg["tasks"]["tick_budget_s"] + cfg["redis"]["socket_timeout"] + 5)
        job_ctx.close()
        job_ctx.log.close()
    return membership.leave(ctx)
