#!/usr/bin/env python3
"""The benchmark suite: every hot path against its floor, its peer and its limit, from one command.

    python3 tests/bench/run.py            # full run, about 15 minutes; saves results/*.json and failover.svg
    python3 tests/bench/run.py --quick    # about 6 minutes, fewer rounds and trials
    python3 tests/bench/run.py --smoke    # every section once, quickly (checks the suite itself; about 50 s)

Sections: 1 tick cost, 2 round trips per tick, 3 client throughput, 4 failover
times, 5 scale (failover tick and status with 100 to 10,000 members; task
throughput and latency beside rq), 6 living processes (issue 15; each figure
with ``redis.blocking_reads`` on, the default, beside it off, today's polling,
in the same run): ``latency`` (6a submit-to-done distribution beside rq, 6b
``submit --wait``), ``handover`` (6c graceful handover, 6d crash failover at
the shipped intervals, loop and foreground) and ``idle`` (6e CPU and round
trips of an idle foreground node). Prints Markdown tables (kept under "Latest
results" in docs/en/performance.md and docs/zh/performance.md, pasted by hand) and
writes the raw runs as JSON under tests/bench/results/.

Peers (redis-py, hiredis, rq) are installed by the suite into a throwaway
venv of the same interpreter, never into the project; a peer that cannot be
installed is reported as skipped. Needs a redis-server (found or fetched by
tests/support/redis_bin.py) and, for the limit, redis-benchmark beside it.
The measured commands all run on one interpreter binary (the venv's python is
a link to it) with bytecode caching on, as on a user's machine. Env
DN_BENCH_KEEP=1 keeps the temporary work dir (configs, logs) for a look.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402  (puts tests/ and scripts/ on sys.path)

SECTIONS = ("ticks", "trips", "client", "scale", "tasks", "failover", "latency", "handover", "idle")
PEER_PACKAGES = ("redis", "hiredis", "rq")

# The smoke run's intervals for section 6 (heartbeat 1 s, lease 3 s): it checks the suite, not the figures.
SHORT = {"node": {"heartbeat_interval": 1, "heartbeat_ttl": 3}, "redis": {"connect_timeout": 1, "socket_timeout": 1}}

MODES = {
    "full": {"tick_rounds": 30, "tick_warmup": 3, "importtime_repeats": 7, "client_rounds": 5, "client_seconds": 1.0,
             "bench_requests": 200000, "scale_sizes": (100, 1000, 10000), "scale_rounds": 5, "tasks": 200,
             "latency_samples": 10, "failover_fg": [(1, 3, 20), (2, 6, 5)], "failover_bg": [(10, 30, 3)],
             "dist_samples": 200, "wait_samples": 100, "idle_s": 60, "idle_settings": {},
             "handover": {"interval_s": 10, "ttl_s": 30, "cases": [("loop", True, 7, 3), ("loop", False, 3, 2),
                                                                    ("foreground", True, 7, 2),
                                                                    ("foreground", False, 3, 0)]}},
    "quick": {"tick_rounds": 10, "tick_warmup": 2, "importtime_repeats": 3, "client_rounds": 2,
              "client_seconds": 0.4, "bench_requests": 100000, "scale_sizes": (100, 1000, 10000), "scale_rounds": 3,
              "tasks": 60, "latency_samples": 4, "failover_fg": [(1, 3, 5), (2, 6, 2)], "failover_bg": [(10, 30, 1)],
              "dist_samples": 50, "wait_samples": 30, "idle_s": 20, "idle_settings": {},
              "handover": {"interval_s": 10, "ttl_s": 30, "cases": [("loop", True, 2, 1), ("loop", False, 1, 0),
                                                                     ("foreground", True, 2, 0),
                                                                     ("foreground", False, 1, 0)]}},
    "smoke": {"tick_rounds": 2, "tick_warmup": 1, "importtime_repeats": 1, "client_rounds": 1,
              "client_seconds": 0.1, "bench_requests": 20000, "scale_sizes": (100, 1000), "scale_rounds": 1,
              "tasks": 10, "latency_samples": 1, "failover_fg": [(1, 3, 1)], "failover_bg": [],
              "dist_samples": 4, "wait_samples": 2, "idle_s": 4, "idle_settings": SHORT,
              "handover": {"interval_s": 1, "ttl_s": 3, "cases": [("loop", True, 1, 1), ("foreground", True, 1, 0),
                                                                   ("loop", False, 1, 0)]}},
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="tests/bench/run.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer rounds and trials (about 6 minutes)")
    mode.add_argument("--smoke", action="store_true", help="each section once, quickly; saves nothing")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help="comma-separated subset of: %s (default: all)" % ", ".join(SECTIONS))
    parser.add_argument("--no-peers", action="store_true", help="do not install redis-py, hiredis and rq")
    parser.add_argument("--no-save", action="store_true", help="do not write results/*.json or failover.svg")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error("unknown section(s) %s; choose from %s" % (", ".join(unknown), ", ".join(SECTIONS)))
    return args


class Background(threading.Thread):
    """A section running beside the others (the slow failover cases, idle most of the time)."""

    def __init__(self, name: str, fn):
        super().__init__(name=name, daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self):
        try:
            self.result = self.fn()
        except Exception as exc:  # reported with the results; the other sections go on
            self.error = "%s: %s" % (type(exc).__name__, exc)


def failover_job(case, workdir: str, python: str, log):
    import bench_failover
    from support.redis_server import RedisServer
    interval_s, ttl_s, trials = case

    def go():
        with RedisServer(name="bench-failover") as server:
            return bench_failover.run_case(server, workdir, interval_s, ttl_s, trials, python, log)
    return go


def run_failover(jobs: list) -> list:
    out = []
    for (interval_s, ttl_s, trials), job in jobs:
        job.join()
        if job.error:
            out.append({"interval_s": interval_s, "ttl_s": ttl_s, "skipped": "failed: " + job.error})
        else:
            out.append(job.result)
    return sorted(out, key=lambda c: c["ttl_s"])


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = MODES[args.mode]
    log = benchlib.Log(args.quiet)
    started = time.monotonic()
    from support.redis_bin import find_redis_server, redis_version
    binary = find_redis_server()
    redis_ver = ".".join(map(str, redis_version(binary)))
    workdir = tempfile.mkdtemp(prefix="dn-bench-")
    python = benchlib.real_python()
    log("mode %s, redis-server %s (%s), python %s, work dir %s" % (args.mode, redis_ver, binary, python, workdir))

    background = []

    def start_background():
        """The slow failover cases start once the tick costs, the most noise-sensitive figures, are measured."""
        if "failover" in args.sections:
            for case in cfg["failover_bg"]:
                job = Background("failover-bg", failover_job(case, workdir, run_python, log))
                job.start()
                background.append((case, job))

    peers = {"python": None, "installed": {}, "skipped": {}}
    want = [] if args.no_peers else list(PEER_PACKAGES)
    venv = benchlib.make_peer_venv(python, os.path.join(workdir, "venv"), want, log)
    peers.update(venv)
    if args.no_peers:
        peers["skipped"] = {p: "--no-peers" for p in PEER_PACKAGES}
    # The measured commands run on the venv's python, a link to the same binary: the host's
    # site-packages (and any .pth start-up hooks there) then weigh on no command.
    run_python = venv["python"] or python
    peer_python = venv["python"] if "redis" in venv["installed"] else None
    results = {"mode": args.mode, "settings": {k: v for k, v in cfg.items()},
               "machine": benchlib.machine(run_python, redis_ver), "peers": peers, "sections": {}}
    tables = []
    try:
        run_sections(args, cfg, results, tables, workdir, run_python, peer_python, peers, log, start_background)
        living = start_living(args, cfg, workdir, run_python, log)  # side by side with section 4's cases
        if "failover" in args.sections:
            fg = []
            for case in cfg["failover_fg"]:
                job = Background("failover-fg", failover_job(case, workdir, run_python, log))
                job.start()
                fg.append((case, job))
            cases = run_failover(fg + background)
            results["sections"]["failover"] = cases
            import bench_failover
            tables.append(("4. Failover", bench_failover.format_failover(cases)))
        finish_living(living, results, tables)
    finally:
        if "bench_failover" in sys.modules:
            sys.modules["bench_failover"].stop_everything()
        if not os.environ.get("DN_BENCH_KEEP"):
            benchlib.remove_tree(workdir)
    results["duration_s"] = round(time.monotonic() - started, 1)
    text = render(results, tables)
    results["table_markdown"] = text
    print(text)
    if args.mode != "smoke" and not args.no_save:
        save(results, args.mode, log)
    return 0


def start_living(args, cfg, workdir: str, python: str, log) -> dict:
    """Section 6's slow parts as background jobs: each handover case on a cluster of its own, and the
    idle nodes (they only wait, so they run beside one another; see benchlib.QUIET)."""
    import bench_handover
    import bench_idle
    jobs = {"handover": [], "idle": None}
    if "handover" in args.sections:
        for case in bench_handover.cases_for(cfg["handover"]):
            job = Background("handover", lambda c=case: bench_handover.run_case(
                os.path.join(workdir, "handover"), python, c, log))
            job.start()
            jobs["handover"].append((case, job))
    if "idle" in args.sections:
        jobs["idle"] = Background("idle", lambda: bench_idle.idle_cost(os.path.join(workdir, "idle"), python,
                                                                        cfg["idle_s"], cfg["idle_settings"], log))
        jobs["idle"].start()
    return jobs


def finish_living(jobs: dict, results: dict, tables: list) -> None:
    import bench_handover
    import bench_idle
    if jobs["handover"]:
        cases = []
        for case, job in jobs["handover"]:
            job.join()
            cases.append(job.result if not job.error else dict(case, skipped="failed: " + job.error))
        results["sections"]["handover"] = cases
        tables.append(("6c. Living processes: graceful handover", bench_handover.format_graceful(cases)))
        tables.append(("6d. Living processes: crash failover", bench_handover.format_crash(cases)))
    if jobs["idle"] is not None:
        job = jobs["idle"]
        job.join()
        res = job.result if not job.error else {"seconds": 0, "settings": {}, "variants": [],
                                                "skipped": {"idle": "failed: " + job.error}}
        results["sections"]["idle"] = res
        tables.append(("6e. Living processes: an idle foreground node", bench_idle.format_idle(res)))


def run_sections(args, cfg, results, tables, workdir, python, peer_python, peers, log, after_ticks) -> None:
    from support.redis_server import RedisServer
    with RedisServer(name="bench") as server:
        if "ticks" in args.sections:
            import bench_ticks
            cost = bench_ticks.tick_cost(server, os.path.join(workdir, "ticks"), python, peer_python,
                                         cfg["tick_rounds"], cfg["tick_warmup"], log)
            imports = bench_ticks.import_breakdown(server, os.path.join(workdir, "ticks"), python, peer_python,
                                                   cfg["importtime_repeats"])
            results["sections"]["tick_cost"] = dict(cost, imports=imports)
            tables.append(("1. Tick cost", bench_ticks.format_tick_cost(cost, imports)))
            hs = bench_ticks.handshake_cost(os.path.join(workdir, "ticks"), python, cfg["tick_rounds"],
                                            cfg["tick_warmup"], log)
            results["sections"]["handshake_cost"] = hs
            tables.append(("1b. The handshake's round trip", bench_ticks.format_handshake_cost(hs)))
        after_ticks()
        if "trips" in args.sections:
            import bench_ticks
            trips = bench_ticks.round_trips(server, os.path.join(workdir, "trips"), python, log)
            results["sections"]["round_trips"] = trips
            tables.append(("2. Round trips per tick", bench_ticks.format_round_trips(trips)))
        if "client" in args.sections:
            import bench_client
            server.flushall()
            tp = bench_client.throughput(server, python, peer_python, peers, cfg["client_rounds"],
                                         cfg["client_seconds"], cfg["bench_requests"], log)
            results["sections"]["client_throughput"] = tp
            tables.append(("3. Client throughput", bench_client.format_throughput(tp)))
        if "scale" in args.sections:
            import bench_scale
            sc = bench_scale.scale(server, os.path.join(workdir, "scale"), python, cfg["scale_sizes"],
                                   cfg["scale_rounds"], log)
            results["sections"]["scale"] = sc
            tables.append(("5a. Scale: members", bench_scale.format_scale(sc)))
        if "tasks" in args.sections:
            import bench_tasks
            tk = bench_tasks.tasks_bench(server, os.path.join(workdir, "tasks"), python, peer_python, peers,
                                         cfg["tasks"], cfg["latency_samples"], log)
            results["sections"]["tasks"] = tk
            tables.append(("5b. Scale: tasks", bench_tasks.format_tasks(tk)))
    if "latency" in args.sections:
        import bench_latency
        lat = bench_latency.submit_to_done(os.path.join(workdir, "latency"), python, peer_python, peers,
                                           cfg["dist_samples"], log)
        results["sections"]["submit_to_done"] = lat
        tables.append(("6a. Living processes: submit-to-done", bench_latency.format_submit_to_done(lat)))
        wait = bench_latency.submit_wait(os.path.join(workdir, "latency"), python, cfg["wait_samples"], log)
        results["sections"]["submit_wait"] = wait
        tables.append(("6b. Living processes: submit --wait", bench_latency.format_submit_wait(wait)))


def render(results: dict, tables: list) -> str:
    m = results["machine"]
    peers = results["peers"]
    installed = ", ".join("%s %s" % kv for kv in sorted(peers["installed"].items())) or "none"
    head = ["Measured %s on %s (%s), %d cores; Python %s, Redis %s; `tests/bench/run.py` %s mode, %.0f s." % (
        m["date"], m["platform"], m["machine"], m["cores"], m["python"], m["redis"],
        results["mode"], results["duration_s"]),
        "Peers: %s." % installed]
    for pkg, why in sorted(peers["skipped"].items()):
        head.append("Skipped peer %s: %s." % (pkg, why))
    parts = ["\n".join(head)]
    for title, body in sorted(tables):  # "1. ..." to "5b. ...", the order
        parts.append("#### %s\n\n%s" % (title, body))
    return "\n\n".join(parts) + "\n"


def save(results: dict, mode: str, log) -> None:
    os.makedirs(benchlib.RESULTS, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = os.path.join(benchlib.RESULTS, "%s-%s.json" % (stamp, mode))
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=True, default=str)
        fh.write("\n")
    log("raw results: %s" % os.path.relpath(path, benchlib.REPO))
    if mode == "full":
        write_plot(results, log)


def write_plot(results: dict, log) -> None:
    """failover.svg: section 4's cases (this run's, else the last full run's) and section 6's points."""
    cases = results["sections"].get("failover")
    living = results["sections"].get("handover")
    if not (cases or living):
        return
    import bench_handover
    import plot_svg
    title = "Failover time against lease TTL (%s, %s)" % (results["machine"]["date"][:10],
                                                          "Redis " + results["machine"]["redis"])
    subtitle = "filled: section 4, this run" if cases else ""
    if not cases:  # section 4 not run this time: its last full run's cases, under the new points
        cases, when = last_failover_cases()
        subtitle = "filled: section 4, full run of %s" % when
    if living:
        subtitle += "; hollow: section 6c/6d, this run"
    svg = plot_svg.failover_svg(cases or [], title, bench_handover.plot_points(living or []), subtitle)
    if svg:
        with open(os.path.join(benchlib.BENCH_DIR, "failover.svg"), "w") as fh:
            fh.write(svg)
        log("plot: tests/bench/failover.svg")


def last_failover_cases():
    """(section 4's cases, their date) from the newest saved full run that has them; ([], None) if none."""
    names = sorted((n for n in os.listdir(benchlib.RESULTS) if n.endswith("-full.json")), reverse=True) \
        if os.path.isdir(benchlib.RESULTS) else []
    for name in names:
        with open(os.path.join(benchlib.RESULTS, name)) as fh:
            saved = json.load(fh)
        if saved.get("sections", {}).get("failover"):
            return saved["sections"]["failover"], saved.get("machine", {}).get("date", name)[:10]
    return [], None


if __name__ == "__main__":
    sys.exit(main())
