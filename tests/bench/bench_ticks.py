"""Sections 1 and 2: what one tick costs as a whole process, and how many round trips it makes.

1. Tick cost: heartbeat.py, leader_election.py and failover_manager.py, each
   one process from start to exit, against the floor (``import socket, json``
   plus one PING on a raw socket) and against the same tick written with
   redis-py (tests/bench/peers/). Wall time and peak RSS; every command runs
   once per round, alternating. ``-X importtime`` shows where the time beyond
   the floor goes.
2. Round trips per tick, counted by Redis, in the states that matter (nothing
   changes, a lease to take, members that died, a vacant lease).
"""

import collections
import os
import subprocess

import benchlib
from distnode.core import keys

SCRIPTS = ("heartbeat", "leader_election", "failover_manager")
FLOOR = ("import socket, json\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
         "s.connect(('127.0.0.1', %d))\n"
         "s.sendall(b'*1\\r\\n$4\\r\\nPING\\r\\n')\n"
         "s.recv(64)\n")
GOAL_FLOOR_RATIO = 1.2
GOAL_PEER_RATIO = 1 / 3.0


# -- 1. tick cost ---------------------------------------------------------------

def prepare_steady_state(node: benchlib.Node, probe: benchlib.Probe, peer_python: str) -> None:
    """Registered, leading, swept once: every later tick is the one that runs every interval forever."""
    probe.client.execute("SET", keys.epoch(), "1")  # an existing cluster: no bootstrap wait
    for script in SCRIPTS:
        node.run(script + ".py", "--quiet")
    if peer_python:
        for script in SCRIPTS:
            subprocess.run([peer_python] + node.argv(os.path.join(benchlib.PEERS, script + "_redispy.py"),
                                                     python=False),
                           env=node.env, check=True, capture_output=True, timeout=60)


def tick_commands(node: benchlib.Node, python: str, peer_python: str, port: int) -> dict:
    cmds = {"floor": [python, "-c", FLOOR % port]}
    for script in SCRIPTS:
        cmds[script] = [python] + node.argv(script + ".py", "--quiet", python=False)
        if peer_python:
            cmds[script + "_redispy"] = [peer_python] + node.argv(
                os.path.join(benchlib.PEERS, script + "_redispy.py"), python=False)
    return cmds


def tick_cost(server, workdir: str, python: str, peer_python: str, rounds: int, warmup: int, log) -> dict:
    """Alternate floor / ours / redis-py for each script; per-round ratios."""
    node = benchlib.Node(workdir, "bench-n1", server.port, {}, python)
    probe = benchlib.Probe(server.port)
    try:
        prepare_steady_state(node, probe, peer_python)
    finally:
        probe.close()
    cmds = tick_commands(node, python, peer_python, server.port)
    log("tick cost: %d commands x %d rounds (+%d warm-up), alternating" % (len(cmds), rounds, warmup))
    env = dict(node.env)
    run = benchlib.run_alternating(python, cmds, rounds, warmup, env)
    failed = {n: r["rc"] for n, rs in run["runs"].items() for r in rs if r and r["rc"] != 0}
    if failed:
        raise RuntimeError("tick commands failed during the benchmark: %s" % failed)
    wall = {n: [r["wall_ms"] for r in rs] for n, rs in run["runs"].items()}
    rss = {n: [r["maxrss_kb"] for r in rs] for n, rs in run["runs"].items()}
    out = {"rounds": rounds, "warmup": warmup, "spawner_hwm_kb": run["spawner_hwm_kb"],
           "floor": {"wall_ms": benchlib.summary(wall["floor"]), "maxrss_kb": benchlib.summary(rss["floor"])},
           "scripts": {}, "raw": run["runs"]}
    for script in SCRIPTS:
        row = {"wall_ms": benchlib.summary(wall[script]), "maxrss_kb": benchlib.summary(rss[script]),
               "vs_floor": benchlib.summary(benchlib.ratios(wall[script], wall["floor"]))}
        peer = script + "_redispy"
        if peer in wall:
            row["redispy_wall_ms"] = benchlib.summary(wall[peer])
            row["redispy_maxrss_kb"] = benchlib.summary(rss[peer])
            row["vs_redispy"] = benchlib.summary(benchlib.ratios(wall[script], wall[peer]))
        out["scripts"][script] = row
    return out


def importtime(node_argv: dict, python: str, env: dict, repeats: int) -> dict:
    """Median self time (us) of every module each command imports, from ``-X importtime``."""
    out = {}
    for name, argv in node_argv.items():
        acc = collections.defaultdict(list)
        for _ in range(repeats):
            proc = subprocess.run([python, "-X", "importtime"] + argv, env=env, capture_output=True, text=True,
                                  timeout=60)
            for line in proc.stderr.splitlines():
                if line.startswith("import time:") and "self [us]" not in line:
                    self_us, _cum, module = line[len("import time:"):].split("|")
                    acc[module.strip()].append(int(self_us))
        out[name] = {m: benchlib.summary(v)["median"] for m, v in acc.items()}
    return out


def import_breakdown(server, workdir: str, python: str, peer_python: str, repeats: int) -> dict:
    """Per script: import time in total, beyond the floor's modules, and the biggest extras."""
    node = benchlib.Node(workdir, "bench-n1", server.port, {}, python)
    argvs = {"floor": ["-c", FLOOR % server.port]}
    for script in SCRIPTS:
        argvs[script] = node.argv(script + ".py", "--quiet", python=False)
    times = importtime(argvs, python, node.env, repeats)
    if peer_python:
        peer = {s + "_redispy": node.argv(os.path.join(benchlib.PEERS, s + "_redispy.py"), python=False)
                for s in SCRIPTS}
        times.update(importtime(peer, peer_python, node.env, repeats))
    floor = times["floor"]
    out = {"floor_total_us": sum(floor.values())}
    for name, mods in times.items():
        if name == "floor":
            continue
        extra = {m: us for m, us in mods.items() if m not in floor}
        ours = {m: us for m, us in extra.items() if benchlib.is_project_module(m)}
        out[name] = {"total_us": sum(mods.values()), "extra_us": sum(extra.values()),
                     "project_us": sum(ours.values()),
                     "top_extra": sorted(extra.items(), key=lambda kv: -kv[1])[:6]}
    return out


# -- 2. round trips -----------------------------------------------------------------

def _scenarios(nodes: dict, client) -> list:
    """(name, node, script + args, prepare(), expected max round trips, what the issue asks)."""
    n1, n2 = nodes["n1"], nodes["n2"]

    def kill_hb(*ids):
        return lambda: client.execute("DEL", *[keys.heartbeat(nodes[i].node_id) for i in ids])

    def register(*ids):
        def go():
            for i in ids:
                nodes[i].run("heartbeat.py", "--quiet")
        return go

    nothing = lambda: None  # noqa: E731
    return [
        ("heartbeat: first registration", n1, ("heartbeat.py",), nothing, 1, "1"),
        ("heartbeat: steady", n1, ("heartbeat.py",), nothing, 1, "1"),
        ("election: vacant lease, acquire", n1, ("leader_election.py",),
         lambda: client.execute("SET", keys.epoch(), "1"), 1, "1"),
        ("election: leader renews (nothing changes)", n1, ("leader_election.py",), nothing, 1, "1"),
        ("election: follower (nothing changes)", n2, ("leader_election.py",), register("n2"), 1, "1"),
        ("failover: follower", n2, ("failover_manager.py",), nothing, 2, "1-2"),
        ("failover: leader, nothing changes", n1, ("failover_manager.py",), nothing, 2, "1-2"),
        ("failover: leader, 1 member died", n1, ("failover_manager.py",), kill_hb("n2"), 3, "1-2 + 1"),
        ("failover: leader, 3 members died", n1, ("failover_manager.py",),
         lambda: (register("n3", "n4", "n5")(), kill_hb("n3", "n4", "n5")()), 5, "1-2 + 3"),
        ("failover: lease vacant, elects at once", n1, ("failover_manager.py",),
         lambda: client.execute("DEL", keys.leader()), 4, "1-2 + 1 (election) + 1 (sweep as leader)"),
        ("node_manager status (5 members)", n1, ("node_manager.py", "status"), nothing, None, "-"),
    ]


def round_trips(server, workdir: str, python: str, log) -> dict:
    """Each scenario once, counted by the server (replies written) and by the client."""
    server.flushall()
    probe = benchlib.Probe(server.port)
    rows = []
    try:
        counted_by_redis = probe.supported()
        if not counted_by_redis:
            log("round trips: this Redis has no total_writes_processed (< 6.0): client counts only")
        base = probe.calibrate()
        nodes = {i: benchlib.Node(workdir, "rt-" + i, server.port, {}, python) for i in ("n1", "n2", "n3", "n4", "n5")}
        for name, node, argv, prepare, limit, asked in _scenarios(nodes, probe.client):
            prepare()
            m = probe.measure(lambda: node.counted(argv[0], *argv[1:], "--quiet"))
            res = m["result"]
            if res["rc"] != 0:
                raise RuntimeError("%s exited %d: %s" % (name, res["rc"], res["stderr"]))
            total_cmds = sum(m["commands"].values())
            server = m["round_trips"] if counted_by_redis else None
            trips = server if counted_by_redis else res["client_trips"]
            rows.append({"scenario": name, "server_round_trips": server,
                         "client_round_trips": res["client_trips"], "commands_sent": res["client_commands"],
                         "commands_run": total_cmds, "commands": m["commands"], "asked": asked, "limit": limit,
                         "met": None if limit is None else trips <= limit})
            log("round trips: %-44s server %s, client %s" % (name, server, res["client_trips"]))
    finally:
        probe.close()
    return {"calibration": base, "rows": rows}


# -- the table -------------------------------------------------------------------

def _mb(stat: dict) -> str:
    return "%.1f" % (stat["median"] / 1024.0) if stat and stat.get("median") else "-"


def format_tick_cost(res: dict, imports: dict) -> str:
    headers = ["tick (one process)", "ours ms", "floor ms", "redis-py ms", "ours / floor", "ours / redis-py",
               "peak RSS MB ours / floor / redis-py", "goal <=1.2x floor, <=1/3 redis-py"]
    rows = []
    floor = res["floor"]
    for script in SCRIPTS:
        r = res["scripts"][script]
        peer = r.get("vs_redispy")
        goal_floor = r["vs_floor"]["median"] <= GOAL_FLOOR_RATIO
        goal_peer = None if not peer else peer["median"] <= GOAL_PEER_RATIO
        verdict = "floor %s, redis-py %s" % ("met" if goal_floor else "missed",
                                             "-" if goal_peer is None else ("met" if goal_peer else "missed"))
        rows.append([script + ".py", benchlib.fmt(r["wall_ms"]), benchlib.fmt(floor["wall_ms"]),
                     benchlib.fmt(r.get("redispy_wall_ms")), benchlib.fmt(r["vs_floor"], 2),
                     benchlib.fmt(peer, 2) if peer else "skipped",
                     "%s / %s / %s" % (_mb(r["maxrss_kb"]), _mb(floor["maxrss_kb"]), _mb(r.get("redispy_maxrss_kb"))),
                     verdict])
    text = benchlib.table(headers, rows)
    if imports:
        lines = ["", "", "Where the time beyond the floor goes (`-X importtime`, median self time of each module; "
                 "the floor's own imports take %.1f ms):" % (imports["floor_total_us"] / 1000.0)]
        for name in [s for s in SCRIPTS] + [s + "_redispy" for s in SCRIPTS]:
            if name not in imports:
                continue
            imp = imports[name]
            top = ", ".join("%s %.1f" % (m, us / 1000.0) for m, us in imp["top_extra"][:5])
            lines.append("- %s: imports %.1f ms; modules the floor does not import %.1f ms (the project's own "
                         "%.1f ms); largest: %s" % (name, imp["total_us"] / 1000.0, imp["extra_us"] / 1000.0,
                                                    imp["project_us"] / 1000.0, top))
        text += "\n".join(lines)
    return text


def format_round_trips(res: dict) -> str:
    headers = ["tick, state", "round trips (Redis)", "client count", "commands sent / run in Redis", "asked",
               "met"]
    rows = []
    for r in res["rows"]:
        rows.append([r["scenario"], "n/a" if r["server_round_trips"] is None else r["server_round_trips"],
                     r["client_round_trips"],
                     "%s / %s" % (r["commands_sent"], r["commands_run"]), r["asked"],
                     "-" if r["met"] is None else ("yes" if r["met"] else "NO")])
    return benchlib.table(headers, rows)


# -- 1b. the handshake's cost ------------------------------------------------------------

HANDSHAKE_PASSWORD = "bench-handshake-pw-0417"


def handshake_cost(workdir: str, python: str, rounds: int, warmup: int, log) -> dict:
    """A steady heartbeat tick with a handshake (a password: AUTH is its own round trip, checked
    before any command is sent) against the same tick without one, each on its own Redis,
    alternating; wall time per round and the client's round trips."""
    import json
    from support.redis_server import RedisServer
    with RedisServer(name="bench-plain") as plain, \
            RedisServer(password=HANDSHAKE_PASSWORD, name="bench-auth") as auth:
        nodes = {}
        for name, server in (("no_handshake", plain), ("password", auth)):
            cfg = {"node": {"id": "bench-hs"}, "redis": {"host": server.host, "port": server.port}}
            node = benchlib.Node(os.path.join(workdir, "handshake-" + name), "bench-hs",
                                 server.port, cfg, python)
            if server.password:
                path = os.path.join(node.config_dir, "secrets.json")
                with open(path, "w") as fh:
                    json.dump({"redis": {"password": server.password}}, fh)
                os.chmod(path, 0o600)
            nodes[name] = node
        env = benchlib.child_env()  # host, port and password come from each node's own config dir
        argvs = {name: node.argv("heartbeat.py", "--quiet", python=False) for name, node in nodes.items()}
        for name, argv in argvs.items():  # registered once: every later tick is the steady one
            subprocess.run([python] + argv, env=env, check=True, capture_output=True, timeout=60)
        trips = {name: benchlib.run_counted(python, argv, env)["client_trips"] for name, argv in argvs.items()}
        log("handshake cost: heartbeat x %d rounds (+%d warm-up), with and without a password" % (rounds, warmup))
        run = benchlib.run_alternating(python, {n: [python] + a for n, a in argvs.items()}, rounds, warmup, env)
    failed = {n: r["rc"] for n, rs in run["runs"].items() for r in rs if r and r["rc"] != 0}
    if failed:
        raise RuntimeError("heartbeat failed during the handshake benchmark: %s" % failed)
    wall = {n: [r["wall_ms"] for r in rs] for n, rs in run["runs"].items()}
    extra = [a - b for a, b in zip(wall["password"], wall["no_handshake"])]
    return {"rounds": rounds, "warmup": warmup, "extra_ms": benchlib.summary(extra),
            "rows": {n: {"wall_ms": benchlib.summary(wall[n]), "client_round_trips": trips[n]} for n in wall}}


def format_handshake_cost(res: dict) -> str:
    headers = ["heartbeat.py tick (steady)", "round trips (client)", "wall ms", "extra ms vs no handshake"]
    rows = []
    for name in ("no_handshake", "password"):
        r = res["rows"][name]
        rows.append([name, r["client_round_trips"], benchlib.fmt(r["wall_ms"]),
                     "-" if name == "no_handshake" else benchlib.fmt(res["extra_ms"], 2)])
    return benchlib.table(headers, rows)
