"""The cluster under test: one private Redis, a stall proxy, N nodes as real processes.

Every node runs, from this checkout, ``heartbeat.py``, ``leader_election.py``,
``failover_manager.py`` and ``task_queue.py work``, each with ``--loop`` in
its own process group, with its own config dir and log dir, and reaches Redis
through its own listener on the stall proxy. One node may live in a network
namespace (``ip netns``), reaching the proxy through relay.py and a Unix
socket, so that it can be cut off at the network level. With ``--redlock``
three more private Redis servers are the lease instances (``redis.instances``),
each behind a proxy listener of its own that every node shares.
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
FOREGROUND_SCRIPT = ("node_manager.py", "run")   # every job in one process (start-node.sh --foreground)
TASK_TYPE = "chaos"
LONG_TASK_TYPE = "chaos_long"
# The task handler: one line per execution start into the shared ledger (task, node, attempt, which
# process of that node id ran it, wall time), then a short "job".
HANDLER_SH = ('printf "%s %s %s %s %s\\n" "$TASK_ID" "$NODE_ID" "$TASK_ATTEMPT" "$CHAOS_WHO" "$(date +%s.%N)" '
              '>> "$CHAOS_LEDGER"; sleep 0.2')
# The long handler (worker_kill): a start line and an end line with its pid, so overlapping copies show.
LONG_HANDLER_SH = ('echo "start $TASK_ID $$ $NODE_ID $CHAOS_WHO $(date +%s.%N)" >> "$CHAOS_RUNS"; '
                   'sleep "$CHAOS_LONG_S"; echo "end $TASK_ID $$ $NODE_ID $CHAOS_WHO $(date +%s.%N)" >> "$CHAOS_RUNS"')
# The hooks: one line per run (hook, node, epoch, wall time) into a shared file.
HOOK_SH = 'echo "$HOOK $NODE_ID $EPOCH $CHAOS_WHO $(date +%s.%N)" >> "$CHAOS_HOOKS"'
HOOKED = ("on_become_leader", "on_lose_leadership")
NETNS_RELAY_PORT = 16379
TMPFS_KIB = 16384   # the log dirs' file system when the disk_full fault runs (16 MiB each)


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
        self.instances = []                     # Redlock lease instances ({host, port}), --redlock only

    def node_config(self, port: int) -> dict:
        i = self.interval_s
        return {
            "node": {"heartbeat_interval": i, "heartbeat_ttl": self.ttl_s, "retry_count": 1,
                     "retry_delay": self.retry_delay_s},
            "redis": {"host": "127.0.0.1", "port": port, "connect_timeout": self.connect_timeout_s,
                      "socket_timeout": self.socket_timeout_s, "instances": list(self.instances)},
            "election": {"lease_ttl": self.lease_s, "renew_interval": i},
            "hooks": {name: ["/bin/sh", "-c", HOOK_SH] for name in HOOKED},
            "tasks": {"handlers": {TASK_TYPE: ["/bin/sh", "-c", HANDLER_SH],
                                   LONG_TASK_TYPE: ["/bin/sh", "-c", LONG_HANDLER_SH]}, "poll_interval_s": i / 2,
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
                 netns: str = "", foreground: bool = False, who: str = "", dir_name: str = "", env=None,
                 config=None):
        self.node_id, self.netns, self.foreground = node_id, netns, foreground
        self.who = who or node_id    # tells a duplicate (same node id, own run dir) apart in the ledgers
        home = os.path.join(base_dir, dir_name or node_id)
        self.config_dir = os.path.join(home, "config")
        self.log_dir = os.path.join(home, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        write_config(self.config_dir, config if config is not None else timing.node_config(port))
        files = os.path.dirname(ledger_path)
        self.env = clean_env(OPENCLAW_NODE_ID=node_id, CHAOS_LEDGER=ledger_path, CHAOS_WHO=self.who,
                             CHAOS_HOOKS=os.path.join(files, "hooks.log"), CHAOS_RUNS=os.path.join(files, "runs.log"),
                             CHAOS_LONG_S="%g" % (4 * timing.interval_s), **(env or {}))
        self.procs = []          # [(script, Popen)] of the current incarnation
        self.finished = []       # [(script, exit code, expected)] of every process that ended
        self.state = "down"      # up | down | stopped

    def argv(self, script_and_args) -> list:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        loop = [] if script_and_args == FOREGROUND_SCRIPT else ["--loop"]
        return prefix + [sys.executable, os.path.join(SCRIPTS, script_and_args[0]), *script_and_args[1:],
                         *loop, "--quiet", "--config-dir", self.config_dir, "--log-dir", self.log_dir]

    @property
    def scripts(self) -> tuple:
        return (FOREGROUND_SCRIPT,) if self.foreground else LOOP_SCRIPTS

    def pid_of(self, script: str):
        """The pid of the running process of ``script`` ("heartbeat.py", "task_queue.py"...); a foreground
        node runs every job in its one process."""
        for name, proc in self.procs:
            if name == script or name == FOREGROUND_SCRIPT[0]:
                return proc.pid
        return None

    def start(self, only=None) -> None:
        """Start every process of the node (``only``: just that script, e.g. a worker killed alone)."""
        self._reap(expected=False)
        for script in self.scripts:
            if only and script[0] != only and not self.foreground:
                continue
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

    def kill_process(self, script: str):
        """SIGKILL of one process of the node, by pid, not its group (the OOM killer's way); returns the pid.
        On a foreground node that process is the whole node."""
        pid = self.pid_of(script)
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for name, proc in self.procs:
            if proc.pid == pid:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self._reap(expected=True)
        if not self.procs:
            self.state = "down"
        return pid

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


def tmpfs_unavailable_reason() -> str:
    """Why a full disk under a log dir cannot be simulated here ('' when it can): a small tmpfs needs root."""
    if not sys.platform.startswith("linux"):
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    import tempfile
    probe = tempfile.mkdtemp(prefix="dn-chaos-tmpfs-")
    try:
        made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True,
                              text=True)
        if made.returncode != 0:
            return "mount -t tmpfs failed: %s" % (made.stderr.strip() or "exit %d" % made.returncode)
        subprocess.run(["umount", probe], capture_output=True)
        return ""
    except OSError as exc:
        return "mount could not run: %s" % exc
    finally:
        os.rmdir(probe)


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

    def __init__(self, base_dir: str, node_count: int, timing: Timing, use_netns: bool, foreground_nodes: int = 0,
                 tmpfs_logs: bool = False, lease_instances: int = 0):
        self.base_dir, self.timing = base_dir, timing
        # --redlock: independent lease instances (no persistence: a kill loses their data), each behind a
        # proxy listener every node shares, so one can be made slow for all
        self.leases = [RedisServer(name="chaos-lease%d" % (i + 1)).start() for i in range(lease_instances)]
        self.lease_proxies = [StallProxy(s.host, s.port) for s in self.leases]
        timing.instances = [{"host": "127.0.0.1", "port": p.add("lease")} for p in self.lease_proxies]
        self.ledger_path = os.path.join(base_dir, "executions.log")
        self.hooks_path = os.path.join(base_dir, "hooks.log")
        self.runs_path = os.path.join(base_dir, "runs.log")
        for path in (self.ledger_path, self.hooks_path, self.runs_path):
            open(path, "a").close()
        self.redis = RedisServer(appendonly=True, name="chaos").start()
        self.acl_user = self._make_acl_user()
        self.proxy = StallProxy(self.redis.host, self.redis.port)
        self.netns, self.relay = "", None
        self.partition_node = ""
        self.mounts = []
        self.nodes = {}
        ids = ["n%d" % i for i in range(1, node_count + 1)]
        if use_netns:
            self.partition_node = ids[-1]
            self._make_netns()
        if tmpfs_logs:  # the disk_full fault fills a small file system under each node's log dir
            for node_id in ids:
                self._mount_tmpfs(os.path.join(base_dir, node_id, "logs"))
        for n, node_id in enumerate(ids):
            if node_id == self.partition_node:
                self.proxy.add(node_id, unix_path=os.path.join(base_dir, "proxy-%s.sock" % node_id))
                port, netns = NETNS_RELAY_PORT, self.netns
            else:
                port, netns = self.proxy.add(node_id), ""
            self.nodes[node_id] = ChaosNode(base_dir, node_id, timing, port, self.ledger_path, netns,
                                            foreground=n < foreground_nodes and node_id != self.partition_node)
        self.client_dir = os.path.join(base_dir, "client")
        write_config(os.path.join(self.client_dir, "config"), timing.node_config(self.redis.port))
        self.probe = Probe(self.redis.host, self.redis.port)

    def _make_acl_user(self) -> str:
        """An ACL user (Redis 6+) whose password the handshake fault gets wrong; '' where ACLs do not exist."""
        try:
            self.redis.command("ACL", "SETUSER", "chaos-acl", "on", ">chaos-acl-right", "~*", "+@all")
        except Exception:  # Redis 5: no ACL
            return ""
        return "chaos-acl"

    def _mount_tmpfs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dk,mode=0755" % TMPFS_KIB, "tmpfs", path],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError("mount -t tmpfs %s: %s" % (path, done.stderr.strip() or "exit %d" % done.returncode))
        self.mounts.append(path)

    def extra_node(self, node_id: str, dir_name: str, who: str, env=None, config=None, foreground=False):
        """A process set outside the cluster proper (a duplicate, an impostor), on its own proxy listener."""
        port = self.proxy.add(dir_name)
        return ChaosNode(self.base_dir, node_id, self.timing, port, self.ledger_path, foreground=foreground,
                         who=who, dir_name=dir_name, env=env, config=config)

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

    def lease_probe(self, index: int) -> Probe:
        """A connection of the harness's own to lease instance ``index``, not through its proxy."""
        return Probe(self.leases[index].host, self.leases[index].port)

    def start_nodes(self) -> None:
        for node in self.nodes.values():
            node.start()

    def close(self) -> None:
        for node in self.nodes.values():
            if node.procs:
                node.terminate(5)
        self.probe.close()
        self.proxy.close()
        for proxy in self.lease_proxies:
            proxy.close()
        for server in self.leases:
            server.close()
        if self.relay is not None:
            try:
                os.killpg(self.relay.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.relay.wait(5)
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        for path in self.mounts:
            subprocess.run(["umount", "-l", path], capture_output=True)
        self.redis.close()
