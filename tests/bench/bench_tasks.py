"""Section 5b: task throughput and submit-to-done latency with 1 and 3 workers, beside rq.

Ours: K processes of ``task_queue.py work --loop`` (default config, handler
``echo`` = ``cat``: the payload comes back as the result), tasks submitted
through the project's own ``submit.submit`` in the bench process so that
submitting is not what is measured. Throughput is the number of tasks over
the span from the first start to the last finish (Redis's clock, from the
task records), so an idle worker's first poll does not count. Latency is
``finished - created`` of single tasks submitted one at a time to idle
workers, each after a random pause within one poll interval (``tasks.poll_interval_s``,
1 s by default: with ``redis.blocking_reads`` false, an idle worker polls at that period).

rq (tests/bench/peers/rq_driver.py): the same counts, its default forking
worker, ``rq_jobs.echo``; measured in the same run, alternating with ours.
"""

import os
import random
import signal
import subprocess
import time

import benchlib
from distnode.core import keys

WORKER_COUNTS = (1, 3)
GOAL_X_RQ = 5.0  # issue 15: tasks/s at least 5x rq's
HANDLER = {"echo": ["cat"]}


def _context(workdir: str, port: int):
    """A Context like a script's, for submitting from this process."""
    import json
    from distnode.core import config
    from distnode.core import log as log_mod
    from distnode.run.context import Context
    cfg_dir = os.path.join(workdir, "submitter", "config")
    os.makedirs(cfg_dir, exist_ok=True)
    with open(os.path.join(cfg_dir, "config.json"), "w") as fh:
        json.dump({"node": {"id": "bench-submitter"}, "redis": {"host": "127.0.0.1", "port": port},
                   "tasks": {"handlers": HANDLER}, "logging": {"syslog": False}}, fh)
    cfg = config.load(cfg_dir, os.path.join(workdir, "submitter", "logs"))
    return Context("task_queue", cfg, log_mod.for_config("task_queue", cfg, console=None), {})


def _done_count(client) -> int:
    return client.execute("ZCARD", keys.task_index("done")) + client.execute("ZCARD", keys.task_index("dead"))


def _times(client, task_ids: list) -> list:
    """(created, started, finished) in seconds for each task, from its record."""
    replies = client.request([("HMGET", keys.task(t), "created_ms", "started_ms", "finished_ms") for t in task_ids])
    return [tuple(int(v) / 1000.0 if v else None for v in r) for r in replies]


def _wait(client, target: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while _done_count(client) < target:
        if time.monotonic() > deadline:
            raise RuntimeError("tasks: only %d of %d done within %gs" % (_done_count(client), target, timeout_s))
        time.sleep(0.005)


def run_ours(server, workdir: str, python: str, workers: int, tasks: int, samples: int) -> dict:
    from distnode.tasks import submit
    server.flushall()
    ctx = _context(workdir, server.port)
    nodes = [benchlib.Node(workdir, "tw%d" % i, server.port, {"tasks": {"handlers": HANDLER}}, python)
             for i in range(workers)]
    procs = [subprocess.Popen(n.argv("task_queue.py", "work", "--loop", "--quiet"), env=n.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for n in nodes]
    client = ctx.redis
    poll_s = ctx.cfg["tasks"]["poll_interval_s"]
    try:
        for _ in range(workers):  # warm: every worker up and polling
            submit.submit(ctx, "echo", "{}")
        _wait(client, workers, 60)
        base = _done_count(client)
        ids = [submit.submit(ctx, "echo", '{"i": %d}' % i)["id"] for i in range(tasks)]
        _wait(client, base + tasks, 600)
        times = _times(client, ids)
        span_s = max(t[2] for t in times) - min(t[1] for t in times)
        latency = []
        for _ in range(samples):
            time.sleep(random.uniform(0, poll_s))
            done = _done_count(client)
            tid = submit.submit(ctx, "echo", "{}")["id"]
            _wait(client, done + 1, 60)
            created, _started, finished = _times(client, [tid])[0]
            latency.append(finished - created)
        dead = client.execute("ZCARD", keys.task_index("dead"))
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        ctx.close()
    return {"throughput": tasks / max(1e-6, span_s), "latency_s": latency, "failed": dead}


def run_rq(server, peer_python: str, workers: int, tasks: int, samples: int) -> dict:
    import json
    rq_bin = os.path.join(os.path.dirname(peer_python), "rq")
    proc = subprocess.run([peer_python, os.path.join(benchlib.PEERS, "rq_driver.py"), "--port", str(server.port),
                           "--workers", str(workers), "--tasks", str(tasks), "--latency", str(samples),
                           "--rq-bin", rq_bin], env=benchlib.child_env(), capture_output=True, text=True,
                          timeout=900)
    if proc.returncode != 0:
        raise RuntimeError("rq driver failed: %s" % proc.stderr.strip()[-400:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tasks_bench(server, workdir: str, python: str, peer_python: str, peers: dict, tasks: int, samples: int,
                log) -> dict:
    out = {"tasks": tasks, "latency_samples": samples, "handler": HANDLER, "ours": {}, "rq": {}, "skipped": {}}
    with_rq = bool(peer_python) and "rq" in peers["installed"]
    if not with_rq:
        out["skipped"]["rq"] = peers["skipped"].get("rq", "no peer venv")
    for workers in WORKER_COUNTS:
        res = run_ours(server, workdir, python, workers, tasks, samples)
        out["ours"][str(workers)] = dict(res, latency=benchlib.summary(res["latency_s"]))
        log("tasks: ours, %d worker(s): %.0f tasks/s, latency %s s" % (
            workers, res["throughput"], benchlib.fmt(out["ours"][str(workers)]["latency"], 3)))
        if with_rq:
            try:
                res = run_rq(server, peer_python, workers, tasks, samples)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                out["skipped"]["rq"] = str(exc)[:300]
                with_rq = False
                continue
            out["rq"][str(workers)] = dict(res, latency=benchlib.summary(res["latency_s"]))
            log("tasks: rq, %d worker(s): %.0f jobs/s, latency %s s" % (
                workers, res["throughput"], benchlib.fmt(out["rq"][str(workers)]["latency"], 3)))
    return out


def format_tasks(res: dict) -> str:
    headers = ["workers", "ours tasks/s", "rq jobs/s", "ours / rq", "goal >= %gx rq (issue 15)" % GOAL_X_RQ,
               "ours submit-to-done s", "rq enqueue-to-end s"]
    rows = []
    for workers in WORKER_COUNTS:
        o, r = res["ours"].get(str(workers)), res["rq"].get(str(workers))
        x = o["throughput"] / r["throughput"] if o and r and r["throughput"] else None
        rows.append([workers, "%.0f" % o["throughput"] if o else "-", "%.0f" % r["throughput"] if r else "skipped",
                     "-" if x is None else "%.2fx" % x, benchlib.verdict(None if x is None else x >= GOAL_X_RQ),
                     benchlib.fmt(o["latency"], 3) if o else "-", benchlib.fmt(r["latency"], 3) if r else "skipped"])
    notes = ["", "", "%d tasks per throughput run, %d latency samples (section 6a has the distribution); handler "
             "`cat`; our workers run with the shipped settings (blocking reads on)." % (
                 res["tasks"], res["latency_samples"])]
    for name, why in res["skipped"].items():
        notes.append("- %s skipped: %s" % (name, why))
    return benchlib.table(headers, rows) + "\n".join(notes)
