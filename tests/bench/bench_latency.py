"""Sections 6a and 6b (issue 15): a task's latency on a living worker, blocking reads against polling.

6a, submit-to-done: three idle workers side by side, each on its own Redis
and all with handler ``cat``: ``task_queue.py work --loop`` with
``redis.blocking_reads`` true (the default: it blocks on its task streams),
the same with it false (today's polling, every ``tasks.poll_interval_s``),
and one ``rq worker`` (tests/bench/peers/rq_driver.py ``--serve``). Samples
alternate one by one (rq, blocking, polling, rq, ...; polling only every
``POLLING_EVERY``-th round: each of its samples costs up to a poll interval),
each after a random pause (ours: within one poll interval, so a task lands
at every point of the worker's cycle; rq: within 0.2 s, as section 5b). A
sample is ``finished - created`` from the task's record (Redis's clock); rq's
is ``ended_at - enqueued_at``. Goals: the blocking worker's p50 at most 2x
rq's, its p99 at most 5x rq's.

6b, ``submit --wait``: the real command line (``task_queue.py submit --wait
--json``) against an idle blocking worker, and against a polling one with a
polling submitter (``redis.blocking_reads`` false on both, today's way),
alternating. The handler (``cat``, then ``date`` into a file) writes the time
of its end; a sample is the time the command's output line reached the bench
minus that (one machine, one clock). Goal: p50 within 20 ms.
"""

import json
import os
import random
import signal
import subprocess
import time

import benchlib
import bench_tasks

POLLING_EVERY = 4  # 6a: a polling sample every 4th round (each costs up to one poll interval)
RQ_PAUSE_S = 0.2   # 6a: rq's pause between samples, as in section 5b (rq_driver.py)
GOAL_P50_X_RQ, GOAL_P99_X_RQ = 2.0, 5.0
GOAL_WAIT_P50_S = 0.020


class OurWorker:
    """One ``task_queue.py work --loop`` on its own Redis, with a submitter in this process."""

    def __init__(self, workdir: str, python: str, blocking: bool, handlers: dict):
        from support.redis_server import RedisServer
        self.blocking = blocking
        self.server = RedisServer(name="bench-latency").start()
        extra = {"tasks": {"handlers": handlers}, "redis": {"blocking_reads": blocking}}
        self.node = benchlib.Node(workdir, "lw", self.server.port, extra, python)
        self.cli = benchlib.Node(workdir, "lsubmit", self.server.port, extra, python)
        self.ctx = bench_tasks._context(workdir, self.server.port)
        self.proc = subprocess.Popen(self.node.argv("task_queue.py", "work", "--loop", "--quiet"), env=self.node.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def warm(self, task_type: str) -> None:
        """One task through, so the worker is up and idle (and its code paths warm)."""
        self.sample(task_type, timeout_s=60)

    def sample(self, task_type: str, timeout_s: float = 30) -> float:
        """Submit one task and wait for it: finished - created in seconds (the task's record)."""
        from distnode.tasks import submit
        client = self.ctx.redis
        done = bench_tasks._done_count(client)
        task_id = submit.submit(self.ctx, task_type, "{}")["id"]
        bench_tasks._wait(client, done + 1, timeout_s)
        created, _started, finished = bench_tasks._times(client, [task_id])[0]
        return finished - created

    def finished_s(self, task_id: str):
        return bench_tasks._times(self.ctx.redis, [task_id])[0][2]

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.ctx.close()
        self.server.close()


class RqWorker:
    """rq_driver.py --serve: one rq worker on its own Redis, a sample per request."""

    def __init__(self, peer_python: str):
        from support.redis_server import RedisServer
        self.server = RedisServer(name="bench-latency-rq").start()
        rq_bin = os.path.join(os.path.dirname(peer_python), "rq")
        self.proc = subprocess.Popen([peer_python, os.path.join(benchlib.PEERS, "rq_driver.py"), "--port",
                                      str(self.server.port), "--workers", "1", "--serve", "--rq-bin", rq_bin],
                                     env=benchlib.child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise RuntimeError("rq driver did not start: %s" % (line or self.proc.stderr.read()[-300:]))

    def sample(self) -> float:
        self.proc.stdin.write("sample\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError("rq driver stopped: %s" % self.proc.stderr.read()[-300:])
        return float(line)

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.server.close()


def _paused(pause_s: float, sample):
    """``sample()`` after a random pause, holding benchlib.QUIET (no node restart runs beside it)."""
    time.sleep(random.uniform(0, pause_s))
    with benchlib.QUIET:
        return sample()


def submit_to_done(workdir: str, python: str, peer_python: str, peers: dict, samples: int, log) -> dict:
    """6a: latency samples of a blocking worker, a polling one and rq's, alternating."""
    out = {"samples": samples, "polling_every": POLLING_EVERY, "latency_s": {}, "skipped": {},
           "rq_version": peers["installed"].get("rq", "")}
    workers = {}
    rq = None
    try:
        for name, blocking in (("blocking", True), ("polling", False)):
            workers[name] = OurWorker(os.path.join(workdir, name), python, blocking, {"echo": ["cat"]})
            out["latency_s"][name] = []
        if peer_python and "rq" in peers["installed"]:
            try:
                rq = RqWorker(peer_python)
                out["latency_s"]["rq"] = []
            except (RuntimeError, OSError) as exc:
                out["skipped"]["rq"] = str(exc)[:300]
        else:
            out["skipped"]["rq"] = peers["skipped"].get("rq", "no peer venv")
        for w in workers.values():
            w.warm("echo")
        poll_s = workers["blocking"].ctx.cfg["tasks"]["poll_interval_s"]
        out["pause_s"] = {"ours": poll_s, "rq": RQ_PAUSE_S}
        for i in range(samples):
            order = ["rq", "blocking", "polling"]
            order = order[i % 3:] + order[:i % 3]
            for name in order:
                if name == "rq" and rq is not None:
                    out["latency_s"]["rq"].append(_paused(RQ_PAUSE_S, rq.sample))
                elif name == "blocking" or (name == "polling" and i % POLLING_EVERY == 0):
                    out["latency_s"][name].append(_paused(poll_s, lambda: workers[name].sample("echo")))
            if (i + 1) % 50 == 0:
                log("latency: %d of %d rounds" % (i + 1, samples))
    finally:
        for w in workers.values():
            w.close()
        if rq is not None:
            rq.close()
    out["stats"] = {name: benchlib.percentiles(vals) for name, vals in out["latency_s"].items()}
    b, r = out["stats"]["blocking"], out["stats"].get("rq")
    if r and r["n"]:
        out["p50_x_rq"] = b["p50"] / r["p50"]
        out["p99_x_rq"] = b["p99"] / r["p99"]
        out["met"] = {"p50": out["p50_x_rq"] <= GOAL_P50_X_RQ, "p99": out["p99_x_rq"] <= GOAL_P99_X_RQ}
    log("latency: blocking p50 %s ms, polling p50 %s ms, rq p50 %s ms" % (
        benchlib.ms(b["p50"]), benchlib.ms(out["stats"]["polling"]["p50"]), benchlib.ms(r["p50"] if r else None)))
    return out


def _wait_sample(worker: OurWorker, stamp_path: str) -> dict:
    """Run ``submit --wait`` once: seconds from the handler's end to the command's output line."""
    try:
        os.unlink(stamp_path)
    except FileNotFoundError:
        pass
    cli = worker.cli
    proc = subprocess.Popen(cli.argv("task_queue.py", "submit", "--type", "stamp", "--payload", "{}", "--wait",
                                     "--json", "--quiet"), env=dict(cli.env, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    returned = time.time()
    rest, err = proc.communicate(timeout=60)
    if proc.returncode != 0 or not line.strip():
        raise RuntimeError("submit --wait exited %s: %s" % (proc.returncode, err.strip()[-300:]))
    with open(stamp_path) as fh:
        ended = float(fh.read().strip())
    record = json.loads((line + rest).strip().splitlines()[-1])
    finished = worker.finished_s(record["id"])
    return {"after_end_s": returned - ended, "after_stored_s": None if finished is None else returned - finished}


def submit_wait(workdir: str, python: str, samples: int, log) -> dict:
    """6b: ``submit --wait`` return time after the handler's end, blocking and polling, alternating."""
    out = {"samples": samples, "after_end_s": {}, "after_stored_s": {}}
    workers = {}
    try:
        for name, blocking in (("blocking", True), ("polling", False)):
            stamp = os.path.join(workdir, "wait-" + name, "end.txt")
            os.makedirs(os.path.dirname(stamp), exist_ok=True)
            handlers = {"echo": ["cat"], "stamp": ["sh", "-c", 'cat; date +%s.%N > "$0"', stamp]}
            workers[name] = (OurWorker(os.path.join(workdir, "wait-" + name), python, blocking, handlers), stamp)
            out["after_end_s"][name], out["after_stored_s"][name] = [], []
        for worker, _stamp in workers.values():
            worker.warm("echo")
        for i in range(samples):
            for name in (("blocking", "polling") if i % 2 == 0 else ("polling", "blocking")):
                worker, stamp = workers[name]
                res = _paused(0.2, lambda: _wait_sample(worker, stamp))
                out["after_end_s"][name].append(res["after_end_s"])
                out["after_stored_s"][name].append(res["after_stored_s"])
    finally:
        for worker, _stamp in workers.values():
            worker.close()
    out["stats"] = {name: benchlib.percentiles(vals) for name, vals in out["after_end_s"].items()}
    out["stored_stats"] = {name: benchlib.percentiles(vals) for name, vals in out["after_stored_s"].items()}
    p50 = out["stats"]["blocking"]["p50"]
    out["met"] = p50 is not None and p50 <= GOAL_WAIT_P50_S
    log("submit --wait: p50 after the handler's end: blocking %s ms, polling %s ms" % (
        benchlib.ms(p50), benchlib.ms(out["stats"]["polling"]["p50"])))
    return out


def format_submit_to_done(res: dict) -> str:
    headers = ["worker (idle, handler `cat`)", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 / rq",
               "p99 / rq", "goal p50 <= 2x rq, p99 <= 5x rq"]
    rq = res["stats"].get("rq")
    rows = []
    labels = {"blocking": "ours, blocking reads (default)", "polling": "ours, blocking_reads false (polling)",
              "rq": "rq %s" % res.get("rq_version", "")}
    for name in ("blocking", "polling", "rq"):
        s = res["stats"].get(name)
        if s is None:
            rows.append([labels[name], 0, "skipped", "", "", "", "", "", "-"])
            continue
        x50 = s["p50"] / rq["p50"] if rq and rq["n"] else None
        x99 = s["p99"] / rq["p99"] if rq and rq["n"] else None
        goal = "-" if name == "rq" or x50 is None else "p50 %s, p99 %s" % (
            benchlib.verdict(x50 <= GOAL_P50_X_RQ), benchlib.verdict(x99 <= GOAL_P99_X_RQ))
        rows.append([labels[name], s["n"], benchlib.ms(s["p50"]), benchlib.ms(s["p90"]), benchlib.ms(s["p99"]),
                     benchlib.ms(s["max"]), "-" if x50 is None else "%.2fx" % x50,
                     "-" if x99 is None else "%.2fx" % x99, goal])
    notes = ["", "", "submit-to-done = finished - created of the task's record (Redis's clock; rq: ended_at - "
             "enqueued_at); samples alternate, each after a random pause (ours: within tasks.poll_interval_s, "
             "%gs; rq: within %gs); polling: one sample every %d rounds; nearest-rank percentiles (with fewer "
             "than 100 samples p99 is the max)." % (res.get("pause_s", {}).get("ours", 1), RQ_PAUSE_S,
                                                     res["polling_every"])]
    for name, why in res["skipped"].items():
        notes.append("- %s skipped: %s" % (name, why))
    return benchlib.table(headers, rows) + "\n".join(notes)


def format_submit_wait(res: dict) -> str:
    headers = ["`submit --wait`", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "p50 ms after the outcome is stored", "goal p50 <= 20 ms"]
    rows = []
    for name, label in (("blocking", "blocking reads (default)"), ("polling", "blocking_reads false (polling)")):
        s, st = res["stats"][name], res["stored_stats"][name]
        rows.append([label, s["n"], benchlib.ms(s["p50"]), benchlib.ms(s["p90"]), benchlib.ms(s["p99"]),
                     benchlib.ms(s["max"]), benchlib.ms(st["p50"]),
                     benchlib.verdict(res["met"]) if name == "blocking" else "-"])
    note = ("Time from the handler's end (`cat`, then `date +%s.%N` into a file) to the line `task_queue.py submit "
            "--wait --json` prints reaching the bench (`PYTHONUNBUFFERED=1`); one machine, one clock. It includes "
            "the handler's exit, the worker storing the outcome and the waiter's wake-up and status read.")
    return benchlib.table(headers, rows) + "\n\n" + note
