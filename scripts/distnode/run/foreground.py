"""All of a node's ticks in one process, for hosts without OpenClaw cron (``start-node.sh --foreground``).

Each job (heartbeat, election, failover, state sync, task worker) runs in its
own thread with its own Redis connection and log file, on its own interval,
holding the same per-node lock its cron job would, so the two never run
side by side. SIGTERM or SIGINT stops them all (each finishes its current
tick), then the node leaves gracefully: pending tasks handed back, lease
released, heartbeat deleted, record marked ``left``.

No job dies silently: every exception a tick raises (a full disk under the
log dir, a bug) is logged with its traceback and the job ticks on
(``ticks.run_loop``). The jobs and their periods are ``run/jobs.py``'s, the
same a cron install runs (a job's tick is imported here, not by reading the
table). The task worker claims only while this process's
heartbeat job works: it skips its tick until the first beat succeeded, and
after ``defaults.HEARTBEAT_FAILURES_BEFORE_PAUSE`` failed beats in a row or no good
beat for ``node.heartbeat_ttl`` (the cluster then sees this node offline),
until a beat succeeds again. A busy worker tick already under way finishes
first (it ends within ``tasks.tick_budget_s``).
"""

import signal
import threading
import time

from distnode.cluster import lifecycle
from distnode.cluster import membership
from distnode.core import defaults
from distnode.core import log as log_mod
from distnode.core.errors import NodeIdCollision, TickError
from distnode.redis.errors import RedisError
from distnode.run import jobs, lock, ticks, wake
from distnode.run.context import Context


def _stops_on_collision(tick):
    """The heartbeat's ``tick`` that, when another live process took this node id (this one was
    paused past its heartbeat), stops every job; leaving then refuses (the record is not ours)
    and the process exits 1."""
    def beat(ctx):
        try:
            return tick(ctx)
        except NodeIdCollision:
            ctx.stop_event.set()
            raise
    return beat


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
        if self.failures_in_a_row >= defaults.HEARTBEAT_FAILURES_BEFORE_PAUSE:
            return "the heartbeat job failed %d times in a row" % self.failures_in_a_row
        age_s = self.clock() - self.last_ok_s
        if age_s > self.ttl_s:
            return "no heartbeat succeeded for %.0fs (node.heartbeat_ttl %gs)" % (age_s, self.ttl_s)
        return None

    def paused_sleeps(self, wait):
        """The worker's ``wait`` that sleeps its period while the worker is paused: a blocking read
        would read past the tasks that land meanwhile, and claiming would resume only at its end."""
        def paused_or_wait(ctx, seconds):
            if self.why_paused() is not None:
                ctx.sleep(seconds)
            else:
                wait(ctx, seconds)
        return paused_or_wait

    def gated(self, tick):
        """``tick`` that is skipped (and says so once) while the heartbeat does not work."""
        state = {"paused": False}

        def work(ctx):
            if self.last_ok_s is None:
                self.first_beat.wait(defaults.FIRST_BEAT_WAIT_S)
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


def _job(ctx, tick, period_s: float, wait) -> None:
    """One job's thread: ``ticks.run_loop`` (which survives every tick's exception), restarted should
    the loop itself ever raise, so a job never ends before the process is told to stop."""
    while not ctx.stopping:
        try:
            ticks.run_loop(ctx, tick, period_s, wait=wait)
        except BaseException as exc:  # the top of a long-running job
            try:
                ctx.log.error("job loop failed: %s: %s; restarting it", type(exc).__name__, exc)
            except Exception:  # noqa: BLE001 - the log may be the fault
                pass
            ctx.sleep(period_s)


def _counting_requeued(tick, handed_back: list):
    """The worker's ``tick`` that adds to ``handed_back[0]`` the tasks it handed back to the queue
    because this process stopped (their handlers killed: the outcome ``requeued``), so leaving can
    report every task this node gave back, not only those it finds still delivered."""
    def work(ctx):
        result = tick(ctx)
        if isinstance(result, dict):
            handed_back[0] += result.get("requeued", 0)
        return result
    return work


def _guarded(job: jobs.Job, tick, watch: BeatWatch, handed_back: list):
    """``tick`` as this process runs it: the heartbeat watched (and stopping all on a collision),
    the worker gated on it and its hand-backs counted."""
    if job.name == "heartbeat":
        return watch.watched(_stops_on_collision(tick))
    if job.name == "task_queue":
        return watch.gated(_counting_requeued(tick, handed_back))
    return tick


def run(ctx) -> dict:
    """Run every job until a signal; then leave the cluster. Returns what leaving did.

    This (main) context's Redis calls, the first beat and the leave, are each retried
    (``ctx.retried``), and its connection is closed in between: hours later, a server that
    dropped idle clients (its ``timeout``) or restarted meanwhile costs the leave nothing.
    """
    cfg, stop = ctx.cfg, threading.Event()
    threads, handed_back = [], [0]
    watch = BeatWatch(cfg.heartbeat_ttl_s)
    try:  # a node id another live process holds: NodeIdCollision, one line, exit 1, nothing started
        ctx.retried(membership.beat, ctx)
    except RedisError as exc:
        ctx.log.warning("first heartbeat failed (the heartbeat job retries): %s", exc)
    finally:
        ctx.close()  # idle until the leave: each job has its own connection
    for job in jobs.JOBS:
        if lock.acquire(cfg, job.name, long_lived=True) is None:
            stop.set()
            raise TickError("%s for node %s is already running (a cron job or another loop): remove the cron "
                            "jobs first (./start-node.sh --uninstall)" % (job.name, cfg.node_id))
        job_ctx = Context(job.name, cfg, log_mod.for_config(job.name, cfg, console=ctx.log.console),
                          {"--loop": True})
        job_ctx.stop_event = stop
        made = jobs.Tick(job)  # made at its first call, in run_loop
        tick = _guarded(job, made, watch, handed_back)
        wait = watch.paused_sleeps(made.wait) if job.name == "task_queue" else made.wait
        thread = threading.Thread(target=_job, args=(job_ctx, tick, job.period_s(cfg), wait), name=job.name,
                                  daemon=True)
        threads.append((thread, job_ctx))

    def on_signal(signum, _frame):
        ctx.log.info("got %s: stopping every job, then leaving the cluster", signal.Signals(signum).name)
        stop.set()
        wake.interrupt_all()  # a job blocked on Redis (run/wake.py) stops now, not when its read ends

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for thread, _ in threads:
        thread.start()
    ctx.log.info("node %s running %d jobs in the foreground; stop with Ctrl-C or SIGTERM", ctx.node_id, len(threads))
    while not stop.wait(defaults.SIGNAL_POLL_S):
        pass
    for thread, job_ctx in threads:
        thread.join(cfg["tasks"]["tick_budget_s"] + cfg.socket_timeout_s + defaults.JOB_STOP_SLACK_S)
        job_ctx.close()
        job_ctx.log.close()
    return ctx.retried(lifecycle.leave, ctx, handed_back[0])
