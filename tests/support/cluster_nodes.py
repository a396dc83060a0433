"""Cluster nodes as real processes, for tests: each with its own config dir and log dir.

    node = ClusterNode(tmp, "n1", redis={"host": "127.0.0.1", "port": 1234})
    node.start()                      # heartbeat, leader_election, failover_manager --loop
    node.run("node_manager.py", "status", "--json")   # one-shot, returns CompletedProcess
    node.memory()                     # the elector's memory file (dict)
    node.stop()

The environment of the children drops every REDIS_* / OPENCLAW_* variable of
the test process, so a developer's own settings never leak into a test.
Intervals are small: heartbeat every 1 s, ttl 3 s (so the lease is 3 s).
"""

import json
import os
import signal
import subprocess
import sys
import time

try:
    from .redis_server import wait_until
except ImportError:  # loaded as a top-level module
    from redis_server import wait_until  # type: ignore[no-redef]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")
LOOP_SCRIPTS = ("heartbeat.py", "leader_election.py", "failover_manager.py")
INTERVAL_S = 1.0
TTL_S = 3.0


def base_config(redis: dict, election: dict = None, node: dict = None) -> dict:
    return {
        "node": dict({"heartbeat_interval": INTERVAL_S, "heartbeat_ttl": TTL_S, "retry_count": 3,
                      "retry_delay": 0.2}, **(node or {})),
        "redis": dict({"connect_timeout": 0.5, "socket_timeout": 1}, **redis),
        "election": dict(election or {}),
        "logging": {"syslog": False, "level": "DEBUG"},
    }


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "OPENCLAW_"))}
    env.update(extra)
    return env


class ClusterNode:
    """One node: a config dir, a log dir and the --loop processes it runs."""

    def __init__(self, base_dir: str, node_id: str, redis: dict, election: dict = None, secrets: dict = None,
                 node: dict = None):
        self.node_id = node_id
        self.config_dir = os.path.join(base_dir, node_id, "config")
        self.log_dir = os.path.join(base_dir, node_id, "logs")
        os.makedirs(self.config_dir, exist_ok=True)
        self.procs = []
        self.write_config(redis, election, secrets, node)

    def write_config(self, redis: dict, election: dict = None, secrets: dict = None, node: dict = None) -> None:
        with open(os.path.join(self.config_dir, "config.json"), "w") as fh:
            json.dump(base_config(redis, election, node), fh)
        path = os.path.join(self.config_dir, "secrets.json")
        if secrets:
            with open(path, "w") as fh:
                json.dump(secrets, fh)
            os.chmod(path, 0o600)
        elif os.path.exists(path):
            os.unlink(path)

    @property
    def env(self) -> dict:
        return clean_env(OPENCLAW_NODE_ID=self.node_id)

    def argv(self, script: str, *args) -> list:
        return [sys.executable, os.path.join(SCRIPTS, script), *args,
                "--config-dir", self.config_dir, "--log-dir", self.log_dir]

    def run(self, script: str, *args, timeout_s: float = 20) -> subprocess.CompletedProcess:
        """Run one one-shot tick of ``script``; returns the finished process (text output)."""
        return subprocess.run(self.argv(script, *args), env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)

    def run_json(self, script: str, *args) -> dict:
        proc = self.run(script, *args, "--json", "--quiet")
        if proc.returncode != 0:
            raise AssertionError("%s %s on %s exited %d: %s" % (script, " ".join(args), self.node_id,
                                                                proc.returncode, proc.stderr.strip()))
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def start(self, scripts=LOOP_SCRIPTS) -> "ClusterNode":
        for script in scripts:
            self.procs.append(subprocess.Popen(self.argv(script, "--loop", "--quiet"), env=self.env,
                                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, start_new_session=True))
        return self

    def stop(self, timeout_s: float = 5) -> None:
        """SIGTERM every loop (a leader releases its lease), SIGKILL what outlives ``timeout_s``."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []

    def memory_path(self) -> str:
        sys.path.insert(0, SCRIPTS)
        try:
            import local_state
        finally:
            sys.path.remove(SCRIPTS)
        finder = getattr(local_state, "epoch_memory_path", None)
        run_dir = os.path.join(self.log_dir, "run")
        if finder is not None:
            return finder(run_dir, self.node_id)
        return os.path.join(run_dir, "election.%s.json" % self.node_id)

    def memory(self) -> dict:
        """The elector's memory of this node ({} before its first election step)."""
        try:
            with open(self.memory_path()) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}

    def log_text(self) -> str:
        """Every log file of this node, concatenated (for failure messages)."""
        out = []
        for root, _dirs, files in os.walk(self.log_dir):
            for name in sorted(files):
                if name.endswith(".log"):
                    with open(os.path.join(root, name), errors="replace") as fh:
                        out.append("== %s\n%s" % (name, fh.read()[-4000:]))
        return "\n".join(out)


def _json_field(raw, key):
    try:
        return json.loads(raw).get(key)
    except (ValueError, AttributeError):
        return None


class ClusterView:
    """The cluster as one Redis server holds it, and as the nodes' memories see it."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    @staticmethod
    def epoch(server) -> int:
        return int(server.command("GET", "openclaw:cluster:epoch") or 0)

    @staticmethod
    def members(server) -> dict:
        """node id -> (status, last_heartbeat by Redis's clock, heartbeat key present)."""
        raw = server.command("HGETALL", "openclaw:cluster:nodes") or []
        return {node_id: (_json_field(record, "status"), _json_field(record, "last_heartbeat") or 0,
                          server.command("EXISTS", "hb:" + node_id) == 1)
                for node_id, record in zip(raw[::2], raw[1::2])}

    def believers(self) -> list:
        """Nodes whose memory says they lead."""
        return [n.node_id for n in self.nodes if n.memory().get("is_leader")]

    def epochs_seen(self, server) -> int:
        """The highest epoch in ``server`` or in any node's memory."""
        return max([self.epoch(server)] + [n.memory().get("max_epoch", 0) for n in self.nodes])

    def steady(self, server):
        """(leader, epoch) when one leader holds the lease, only it believes so, at Redis's epoch,
        and every node is online; else None."""
        leader = server.command("GET", "openclaw:cluster:leader")
        epoch = self.epoch(server)
        members = self.members(server)
        online = all(members.get(n.node_id, (None, 0, False))[0] == "online" and members[n.node_id][2]
                     for n in self.nodes)
        if not (leader and online and self.believers() == [leader]):
            return None
        leader_node = [n for n in self.nodes if n.node_id == leader][0]
        return (leader, epoch) if leader_node.memory().get("epoch") == epoch else None

    def wait_steady(self, server, timeout_s: float = 20):
        try:
            return wait_until(lambda: self.steady(server), timeout_s, interval=0.1,
                              message="one leader and every node online")
        except TimeoutError:
            raise AssertionError("cluster never settled on port %d: leader %r, believers %r, members %r\n%s" % (
                server.port, server.command("GET", "openclaw:cluster:leader"), self.believers(),
                self.members(server), self.nodes[0].log_text())) from None

    @staticmethod
    def elected_epochs(server) -> list:
        """Epochs of the ``leader_elected`` events in the server's event stream, oldest first."""
        epochs = []
        for _id, fields in server.command("XRANGE", "openclaw:cluster:events", "-", "+") or []:
            record = dict(zip(fields[::2], fields[1::2]))
            if record.get("type") == "leader_elected":
                epochs.append(int(record["epoch"]))
        return epochs
