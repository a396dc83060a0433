"""All of a node's ticks in one process, for hosts without OpenClaw cron (``start-node.sh --foreground``).

Each job (heartbeat, election, failover, state sync, task worker) runs in its
own thread with its own Redis connection and log file, on its own interval,
holding the same per-node lock its cron job would, so the two never run
side by side. SIGTERM or SIGINT stops them all (each finishes its current
tick), then the node leaves gracefully: pending tasks handed back, lease
released, heartbeat deleted, record marked ``left``.
"""

import signal
import threading

import failover
import log as log_mod
import membership
import runner
from elector import Elector
from errors import TickError


def _heartbeat(ctx) -> dict:
    return {"time": membership.beat(ctx)}


def _election(ctx) -> dict:
    if not hasattr(ctx, "elector"):
        ctx.elector = Elector(ctx)
    return ctx.elector.try_acquire_or_renew().as_dict()


def jobs(cfg) -> list:
    """(script name, tick, period in seconds) for every job of this node."""
    beat_s = cfg["node"]["heartbeat_interval"]
    out = [("heartbeat", _heartbeat, beat_s),
           ("leader_election", _election, cfg.renew_interval_s),
           ("failover_manager", failover.step, beat_s)]
    import cluster_state
    import taskq
    out.append(("state_sync", cluster_state.sync, beat_s))
    out.append(("task_queue", taskq.work_tick, min(beat_s, 2.0)))
    return out


def run(ctx) -> dict:
    """Run every job until a signal; then leave the cluster. Returns what leaving did."""
    cfg, stop = ctx.cfg, threading.Event()
    threads = []
    for script, tick, period_s in jobs(cfg):
        if runner.acquire_lock(cfg, script) is None:
            stop.set()
            raise TickError("%s for node %s is already running (a cron job or another loop): remove the cron "
                            "jobs first (./start-node.sh --uninstall)" % (script, cfg.node_id))
        job_ctx = runner.Context(script, cfg, log_mod.for_config(script, cfg, console=ctx.log.console),
                                 {"--loop": True})
        job_ctx.stop_event = stop
        thread = threading.Thread(target=runner.run_loop, args=(job_ctx, tick, period_s), name=script, daemon=True)
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
