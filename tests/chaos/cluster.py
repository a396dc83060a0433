"""The cluster under test: one private Redis, a stall proxy, N nodes as real processes.

Every node runs, from this checkout, ``heartbeat.py``, ``leader_election.py``,
``failover_manager.py`` and ``task_queue.py work``, each with ``--loop`` in
its own process group, with its own config dir and log dir, and reaches Redis
through its own listener on the stall proxy. One node may live in a network
namespace (``ip netns``), reaching the proxy through relay.py and a Unix
socket, so that it can be cut off at the network level.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

CHAOS = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(CHAOS)
REPO = os.path.dirname(TESTS)
SCRIPTS = os.path.join(REPO, "scripts")
for _path in (TESTS, SCRIPTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from support.redis_server import RedisServer, _encode_command, _RespConnection  # noqa: E402

from proxy import StallProxy  # noqa: E402

LOOP_SCRIPTS = (("heartbeat.py",), ("leader_election.py",), ("failover_manager.py",), ("task_queue.py", "work"))
TASK_TYPE = "chaos"
# The task handler: one line per execution start into the shared ledger, then a short "job".
HANDLER_SH = 'printf "%s %s %s\\n" "$TASK_ID" "$NODE_ID" "$TASK_ATTEMPT" >> "$CHAOS_LEDGER"; sleep 0.2'
NETNS_RELAY_PORT = 16379


class Timing:
    """Every interval the harness uses, derived from one heartbeat interval (the config the nodes get)."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.ttl_s = 3 * interval_s            # heartbeat_ttl
        self.lease_s = self.ttl_s               # election.lease_ttl (= heartbeat_ttl)
        self.socket_timeout_s = interval_s      # below lease / 2, as config.py requires
        self.connect_timeout_s = interval_s / 2
        self.retry_delay_s = interval_s / 5
        self.task_timeout_s = 4 * interval_s
        self.reclaim_grace_s = interval_s

    def node_config(self, port: int) -> dict:
        i = self.interval_s
        return {
            "node": {"heartbeat_interval": i, "heartbeat_ttl": self.ttl_s, "retry_count": 1,
                     "retry_delay": self.retry_delay_s},
            "redis": {"host": "127.0.0.1", "port": port, "connect_timeout": self.connect_timeout_s,
                      "socket_timeout": self.socket_timeout_s},
            "election": {"lease_ttl": self.lease_s, "renew_interval": i},
            "tasks": {"handlers": {TASK_TYPE: ["/bin/sh", "-c", HANDLER_SH]}, "poll_interval_s": i / 2,
                      "default_timeout_s": self.task_timeout_s, "reclaim_grace_s": self.reclaim_grace_s,
                      "backoff_base_s": i / 2, "backoff_max_s": 2 * i, "default_max_attempts": 5,
                      "tick_budget_s": 4 * i},
            "logging": {"syslog": False, "level": "INFO"},
        }


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENCLAW_"))}
    env.update(PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def write_config(config_dir: str, config: dict) -> None:
    os.makedirs(config_dir, exist_ok=True)
    with open(os.path.join(config_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)


class ChaosNode:
    """One simulated machine: a config dir, a log dir, and its four --loop processes."""

    def __init__(self, base_dir: str, node_id: str, timing: Timing, port: int, ledger_path: str,
                 netns: str = ""):
        self.node_id, self.netns = node_id, netns
        self.config_dir = os.path.join(base_dir, node_id, "config")
        self.log_dir = os.path.join(base_dir, node_id, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        write_config(self.config_dir, timing.node_config(port))
        self.env = clean_env(OPENCLAW_NODE_ID=node_id, CHAOS_LEDGER=ledger_path)
        self.procs = []          # [(script, Popen)] of the current incarnation
        self.finished = []       # [(script, exit code, expected)] of every process that ended
        self.state = "down"      # up | down | stopped

    def argv(self, script_and_args) -> list:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + [sys.executable, os.path.join(SCRIPTS, script_and_args[0]), *script_and_args[1:],
                         "--loop", "--quiet", "--config-dir", self.config_dir, "--log-dir", self.log_dir]

    def start(self) -> None:
        self._reap(expected=False)
        for script in LOOP_SCRIPTS:
            out = open(os.path.join(self.log_dir, "%s.console" % script[0][:-3]), "ab")
            proc = subprocess.Popen(self.argv(script), env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            out.close()
            self.procs.append((script[0], proc))
        self.state = "up"

    def signal(self, sig: int) -> None:
        for _script, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

    def kill(self) -> None:
        """kill -9 of every process of the node (nothing released, nothing flushed)."""
        self.signal(signal.SIGKILL)
        self.signal(signal.SIGCONT)
        self._wait(5)
        self._reap(expected=True)
        self.state = "down"

    def terminate(self, timeout_s: float) -> None:
        """SIGTERM (a graceful stop: a leader releases its lease); SIGKILL what outlives ``timeout_s``."""
        if self.state == "stopped":
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if not self._wait(timeout_s):
            self.signal(signal.SIGKILL)
            self._wait(5)
        self._reap(expected=True)
        self.state = "down"

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.state = "stopped"

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.state = "up"

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        for _script, proc in self.procs:
            try:
                proc.wait(max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def _reap(self, expected: bool) -> None:
        """Move ended processes to ``finished``; ``expected``: we ended them."""
        keep = []
        for script, proc in self.procs:
            code = proc.poll()
            if code is None:
                keep.append((script, proc))
            else:
                self.finished.append((script, code, expected))
        self.procs = keep

    def unexpected_exits(self) -> list:
        """(script, exit code) of processes that ended while nobody stopped them."""
        self._reap(expected=False)
        return [(s, c) for s, c, expected in self.finished if not expected]

    def memory(self) -> dict:
        """The elector's memory file of this node ({} if missing or unreadable)."""
        try:
            with open(os.path.join(self.log_dir, "run", "election.%s.json" % self.node_id)) as fh:
                value = json.load(fh)
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def log_lines(self, script: str) -> list:
        try:
            with open(os.path.join(self.log_dir, script + ".log"), errors="replace") as fh:
                return fh.read().splitlines()
        except OSError:
            return []

    def console_text(self) -> str:
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            if name.endswith(".console"):
                with open(os.path.join(self.log_dir, name), errors="replace") as fh:
                    out.append(fh.read())
        return "\n".join(out)


class Probe:
    """A persistent raw RESP connection for the harness's own observations; reconnects on failure."""

    def __init__(self, host: str, port: int, timeout_s: float = 0.5):
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self.conn = None

    def request(self, commands: list) -> list:
        """Send the commands in one write and read every reply; OSError/ConnectionError when Redis is away."""
        if self.conn is None:
            self.conn = _RespConnection(self.host, self.port, self.timeout_s)
        try:
            self.conn.sock.sendall(b"".join(_encode_command(c) for c in commands))
            return [self.conn.read() for _ in commands]
        except (OSError, ConnectionError, ValueError):
            self.close()
            raise ConnectionError("redis %s:%d unreachable" % (self.host, self.port))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def netns_unavailable_reason() -> str:
    """Why a network partition cannot be simulated here ('' when it can)."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "ip netns needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = "dnchaos-probe-%d" % os.getpid()
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return "ip netns add failed: %s" % (made.stderr.strip() or "exit %d" % made.returncode)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ""


class Cluster:
    """Redis (AOF on, so it can restart with or without its data), the proxy, the nodes."""

    def __init__(self, base_dir: str, node_count: int, timing: Timing, use_netns: bool):
        self.base_dir, self.timing = base_dir, timing
        self.ledger_path = os.path.join(base_dir, "executions.log")
        open(self.ledger_path, "a").close()
        self.redis = RedisServer(appendonly=True, name="chaos").start()
        self.proxy = StallProxy(self.redis.host, self.redis.port)
        self.netns, self.relay = "", None
        self.partition_node = ""
        self.nodes = {}
        ids = ["n%d" % i for i in range(1, node_count + 1)]
        if use_netns:
            self.partition_node = ids[-1]
            self._make_netns()
        for node_id in ids:
            if node_id == self.partition_node:
                self.proxy.add(node_id, unix_path=os.path.join(base_dir, "proxy-%s.sock" % node_id))
                port, netns = NETNS_RELAY_PORT, self.netns
            else:
                port, netns = self.proxy.add(node_id), ""
            self.nodes[node_id] = ChaosNode(base_dir, node_id, timing, port, self.ledger_path, netns)
        self.client_dir = os.path.join(base_dir, "client")
        write_config(os.path.join(self.client_dir, "config"), timing.node_config(self.redis.port))
        self.probe = Probe(self.redis.host, self.redis.port)

    def _make_netns(self) -> None:
        self.netns = "dnchaos-%d" % os.getpid()
        subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
        self.set_partition(False)
        sock = os.path.join(self.base_dir, "proxy-%s.sock" % self.partition_node)
        self.relay = subprocess.Popen(["ip", "netns", "exec", self.netns, sys.executable,
                                       os.path.join(CHAOS, "relay.py"), str(NETNS_RELAY_PORT), sock],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        self.relay.stdout.readline()  # "ready"

    def set_partition(self, cut: bool) -> None:
        """Take the namespace's loopback down (partition) or up (heal)."""
        subprocess.run(["ip", "netns", "exec", self.netns, "ip", "link", "set", "lo", "down" if cut else "up"],
                       check=True, capture_output=True)

    def probe_factory(self) -> Probe:
        """A new connection of the harness's own (one per thread that observes)."""
        return Probe(self.redis.host, self.redis.port)

    def start_nodes(self) -> None:
        for node in self.nodes.values():
            node.start()

    def close(self) -> None:
        for node in self.nodes.values():
            if node.procs:
                node.terminate(5)
        self.probe.close()
        self.proxy.close()
        if self.relay is not None:
            try:
                os.killpg(self.relay.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.relay.wait(5)
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        self.redis.close()
