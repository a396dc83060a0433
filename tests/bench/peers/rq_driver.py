"""The task-queue peer: rq workers on the same Redis, measured the way bench_tasks.py measures ours.

    python rq_driver.py --port P --workers K --tasks M --latency L --rq-bin PATH
    python rq_driver.py --port P --workers K --serve --rq-bin PATH

Starts K ``rq worker`` processes (the default Worker: one forked work horse per
job, as our worker runs one handler process per task), enqueues M echo jobs
at once and waits for all of them, then L single jobs one after another on
idle workers. Prints one JSON line: {"throughput": jobs/s from the first start
to the last end, "latency_s": [enqueue-to-end per job]}.

``--serve``: after the warm-up it prints ``ready`` and then, for each line
``sample`` read from stdin, enqueues one job on the idle workers, waits for
it and prints its enqueue-to-end seconds (so the suite can alternate rq's
samples with ours, one by one); ``quit`` or the end of stdin stops it.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import redis
from rq import Queue

import rq_jobs

QUEUE = "bench"


def wait_done(jobs, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(jobs)
    while pending and time.monotonic() < deadline:
        pending = [j for j in pending if j.get_status(refresh=True) not in ("finished", "failed")]
        if pending:
            time.sleep(0.005)
    if pending:
        raise SystemExit("rq: %d jobs not done within %gs" % (len(pending), timeout_s))


def one_latency(queue) -> float:
    job = queue.enqueue(rq_jobs.echo, "{}")
    wait_done([job], 60)
    job.refresh()
    return (job.ended_at - job.enqueued_at).total_seconds()


def serve(queue) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "sample":
            break
        print("%.6f" % one_latency(queue), flush=True)


def main(argv) -> int:
    serving = "--serve" in argv
    if serving:
        argv = [a for a in argv if a != "--serve"] + ["--tasks", "0", "--latency", "0"]
    args = dict(zip(argv[::2], argv[1::2]))
    port, workers, tasks, samples = (int(args[k]) for k in ("--port", "--workers", "--tasks", "--latency"))
    conn = redis.Redis(port=port)
    conn.flushall()
    queue = Queue(QUEUE, connection=conn)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([args["--rq-bin"], "worker", "-q", "--url", "redis://127.0.0.1:%d" % port, QUEUE],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
             for _ in range(workers)]
    try:
        warm = [queue.enqueue(rq_jobs.echo, "{}") for _ in range(workers)]
        wait_done(warm, 60)  # workers up and each job path warm
        if serving:
            serve(queue)
            return 0
        jobs = [queue.enqueue(rq_jobs.echo, '{"i": %d}' % i) for i in range(tasks)]
        wait_done(jobs, 600)
        for j in jobs:
            j.refresh()
        first = min(j.started_at for j in jobs)
        last = max(j.ended_at for j in jobs)
        latency = []
        for _ in range(samples):
            time.sleep(random.uniform(0, 0.2))
            latency.append(one_latency(queue))
        result = {"throughput": tasks / max(1e-6, (last - first).total_seconds()), "latency_s": latency,
                  "failed": sum(1 for j in jobs if j.get_status() == "failed")}
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
