"""Section 3: client throughput, pipelined SET/GET in batches of 1, 16 and 100.

Our client against redis-py (pure-Python parser, and hiredis when it
installs), all on the same interpreter binary and the same server, one
process per measurement, alternating clients within each round; and
``redis-benchmark -P 16`` on the same server as the limit (50 connections,
its default, and 1 connection, which is what one Python client has).
"""

import json
import os
import subprocess

import benchlib
from support.redis_bin import find_companion

BATCHES = (1, 16, 100)
CLIENTS = ("ours", "redispy", "hiredis")


def _worker(python: str, client: str, batch: int, seconds: float, port: int, env: dict) -> dict:
    proc = subprocess.run([python, os.path.join(benchlib.BENCH_DIR, "client_worker.py"), "--client", client,
                           "--batch", str(batch), "--seconds", str(seconds), "--port", str(port)],
                          env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError("client_worker %s batch %d failed: %s" % (client, batch, proc.stderr.strip()[-300:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _redis_benchmark(binary: str, port: int, requests: int, conns: int) -> dict:
    proc = subprocess.run([binary, "-h", "127.0.0.1", "-p", str(port), "-t", "set,get", "-n", str(requests),
                           "-P", "16", "-c", str(conns), "-q", "--csv"], capture_output=True, text=True, timeout=300)
    out = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] in ("SET", "GET"):
            out[cells[0].lower()] = float(cells[1])
    if not out:
        raise RuntimeError("redis-benchmark printed no result: %s" % (proc.stderr or proc.stdout)[-300:])
    return out


def throughput(server, python: str, peer_python: str, peers: dict, rounds: int, seconds: float, bench_requests: int,
               log) -> dict:
    """ops/s per client and batch size; per-round ratios ours / redis-py."""
    env = benchlib.child_env()
    clients = [("ours", python)]
    skipped = {}
    if peer_python and "redis" in peers["installed"]:
        clients.append(("redispy", peer_python))
        if "hiredis" in peers["installed"]:
            clients.append(("hiredis", peer_python))
        else:
            skipped["hiredis"] = peers["skipped"].get("hiredis", "not installed")
    else:
        skipped["redispy"] = skipped["hiredis"] = peers["skipped"].get("redis", "no peer venv")
    binary = find_companion("redis-benchmark", server.binary)
    if binary is None:
        skipped["redis-benchmark"] = "redis-benchmark not found next to %s or on PATH" % server.binary
    samples = {(c, b): [] for c, _ in clients for b in BATCHES}
    limit = {"50 conns": [], "1 conn": []}
    for rnd in range(rounds):
        order = clients[rnd % len(clients):] + clients[:rnd % len(clients)]
        for batch in BATCHES:
            for name, py in order:
                samples[(name, batch)].append(_worker(py, name, batch, seconds, server.port, env))
        if binary:
            limit["50 conns"].append(_redis_benchmark(binary, server.port, bench_requests, 50))
            limit["1 conn"].append(_redis_benchmark(binary, server.port, bench_requests, 1))
        log("throughput: round %d/%d done" % (rnd + 1, rounds))
    out = {"rounds": rounds, "seconds": seconds, "skipped": skipped, "clients": {}, "limit": {}, "ratios": {}}
    for (name, batch), runs in samples.items():
        for op in ("set", "get"):
            out["clients"].setdefault(name, {}).setdefault(str(batch), {})[op] = benchlib.summary(
                [r[op] for r in runs])
    for label, runs in limit.items():
        if runs:
            out["limit"][label] = {op: benchlib.summary([r[op] for r in runs]) for op in ("set", "get")}
    for peer in ("redispy", "hiredis"):
        if ("ours", 1) in samples and (peer, 1) in samples:
            for batch in BATCHES:
                for op in ("set", "get"):
                    ours = [r[op] for r in samples[("ours", batch)]]
                    theirs = [r[op] for r in samples[(peer, batch)]]
                    out["ratios"].setdefault(peer, {}).setdefault(str(batch), {})[op] = benchlib.summary(
                        benchlib.ratios(ours, theirs))
    out["raw"] = {"%s/%d" % k: v for k, v in samples.items()}
    out["raw_limit"] = limit
    return out


def _kops(stat: dict) -> str:
    if not stat or stat.get("median") is None:
        return "-"
    return "%.0f [%.0f-%.0f]" % (stat["median"] / 1000, stat["min"] / 1000, stat["max"] / 1000)


def format_throughput(res: dict) -> str:
    headers = ["batch", "op", "ours kops/s", "redis-py (Python parser)", "redis-py + hiredis", "ours / redis-py",
               "ours / hiredis", "goal >= redis-py"]
    rows = []
    clients, ratios = res["clients"], res["ratios"]
    for batch in BATCHES:
        for op in ("set", "get"):
            b = str(batch)
            cell = lambda c: _kops(clients.get(c, {}).get(b, {}).get(op))  # noqa: E731
            rp = ratios.get("redispy", {}).get(b, {}).get(op)
            hr = ratios.get("hiredis", {}).get(b, {}).get(op)
            goal = "-" if not rp else ("met" if rp["median"] >= 1.0 else "missed")
            rows.append([batch, op.upper(), cell("ours"), cell("redispy") if "redispy" in clients else "skipped",
                         cell("hiredis") if "hiredis" in clients else "skipped",
                         benchlib.fmt(rp, 2) if rp else "-", benchlib.fmt(hr, 2) if hr else "-", goal])
    text = benchlib.table(headers, rows)
    lines = []
    for label, ops in res["limit"].items():
        lines.append("- limit: redis-benchmark -P 16, %s: SET %s, GET %s kops/s" % (label, _kops(ops["set"]),
                                                                                  _kops(ops["get"])))
    for name, why in res["skipped"].items():
        lines.append("- %s skipped: %s" % (name, why))
    return text + ("\n\n" + "\n".join(lines) if lines else "")
