"""Run the project's scripts as a user would: subprocesses with their own config and log dirs.

    from support.nodes import NodeEnv

    node = NodeEnv(tmpdir, "n1", server, config={"node": {"heartbeat_ttl": 5}})
    result = node.run("heartbeat.py", "--json")        # CompletedProcess
    proc = node.spawn("leader_election.py", "--loop")  # Popen, stopped by node.stop_all()
    node.spawn_all()                                   # heartbeat, leader_election, failover_manager --loop
    node.memory()                                      # the elector's memory file (dict)

A node finds Redis either through ``server`` (a test RedisServer, passed as
REDIS_HOST/REDIS_PORT/REDIS_PASSWORD in the environment) or through
``redis=`` (the config file's ``redis`` section, e.g. Sentinel addresses).
The children's environment drops every REDIS_* and OPENCLAW_* variable and
LOG_LEVEL of the test process, so a developer's own settings never leak
into a test. Intervals are small (FAST): heartbeat every 1 s, ttl and lease 3 s.
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

FAST = {"node": {"heartbeat_interval": 1, "heartbeat_ttl": 3, "retry_count": 0, "retry_delay": 0.1},
        "redis": {"connect_timeout": 1, "socket_timeout": 1},
        "election": {"lease_ttl": 3, "renew_interval": 1},
        "logging": {"syslog": False}}
# On top of FAST: Redis calls retried as deployed (3 times, 0.2 s apart), a 0.5 s connect
# timeout, lease and renewal following the heartbeat settings (0), and DEBUG logs.
RETRYING = {"node": {"retry_count": 3, "retry_delay": 0.2},
            "redis": {"connect_timeout": 0.5},
            "election": {"lease_ttl": 0, "renew_interval": 0},
            "logging": {"level": "DEBUG"}}


def merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, body in extra.items():
        if isinstance(body, dict):
            out.setdefault(section, {}).update(body)
        else:
            out[section] = body
    return out


def write_config(config_dir: str, config: dict) -> str:
    os.makedirs(config_dir, exist_ok=True)
    path = os.path.join(config_dir, "config.json")
    with open(path, "w") as fh:
        json.dump(config, fh, indent=2)
    return path


def process_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or gone between open and read
        return False


def processes_using(path: str) -> list:
    """Pids of live processes other than this one whose argv names ``path`` or a file under it, or
    whose working dir is there (Linux /proc; [] elsewhere): e.g. a hook's detached supervisor
    that still has to append to ``logs/hooks.log``."""
    paths = {p.rstrip(os.sep) for p in (os.path.abspath(path), os.path.realpath(path))}
    found = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            if pid == os.getpid() or not process_alive(pid):
                continue
            with open("/proc/%d/cmdline" % pid, "rb") as fh:
                args = fh.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue  # gone meanwhile
        try:
            args.append(os.readlink("/proc/%d/cwd" % pid))
        except OSError:
            pass  # gone meanwhile, or not ours to read
        if any(a == p or p + os.sep in a for a in args for p in paths):
            found.append(pid)
    return found


def wait_processes_gone(path: str, timeout_s: float = 30, kill: bool = False) -> None:
    """Before a test removes ``path``: wait until no process uses it (see processes_using), with
    SIGKILL first when ``kill``. A detached child (a hook supervisor, in a session of its own, so
    no process-group kill reaches it) that writes into ``path`` while shutil.rmtree runs makes the
    removal fail ("Directory not empty") or leaves files behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        pids = processes_using(path)
        if not pids:
            return
        if kill:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if time.monotonic() > deadline:
            raise AssertionError("processes still using %s after %gs: %s" % (path, timeout_s, pids))
        time.sleep(0.05)


class NodeEnv:
    """One simulated machine: a node id, a config dir and a log dir, pointed at a test Redis."""

    def __init__(self, base_dir: str, node_id: str, server=None, config: dict = None, python: str = None,
                 env: dict = None, redis: dict = None, secrets: dict = None, timeout_s: float = 30):
        """``redis``: settings for the config file's redis section, used instead of ``server``.
        ``secrets``: written to secrets.json (mode 0600). ``timeout_s``: run()'s default timeout."""
        if server is not None and redis is not None:
            raise ValueError("give server or redis, not both")
        self.node_id = node_id
        self.config_dir = os.path.join(base_dir, node_id, "config")
        self.log_dir = os.path.join(base_dir, node_id, "logs")
        self.run_dir = os.path.join(self.log_dir, "run")
        os.makedirs(self.log_dir, exist_ok=True)
        self.config = merge(FAST, config or {})
        if redis is not None:
            self.config = merge(self.config, {"redis": redis})
        write_config(self.config_dir, self.config)
        self.write_secrets(secrets)
        self.python = python or sys.executable
        self.timeout_s = timeout_s
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("REDIS_", "OPENCLAW_")) and k != "LOG_LEVEL"}
        self.env.update(OPENCLAW_NODE_ID=node_id, PYTHONDONTWRITEBYTECODE="1")
        if server is not None:
            self.env.update(REDIS_HOST=server.host, REDIS_PORT=str(server.port))
            if getattr(server, "password", None):
                self.env["REDIS_PASSWORD"] = server.password
        elif redis is None:
            # Without a test server, point at a port nothing listens on: never at a Redis
            # that happens to run on this machine (6379).
            self.env.update(REDIS_HOST="127.0.0.1", REDIS_PORT="1")
        self.env.update(env or {})
        self.procs = []

    def update_config(self, extra: dict) -> None:
        self.config = merge(self.config, extra)
        write_config(self.config_dir, self.config)

    def write_secrets(self, secrets: dict = None) -> None:
        """Write config/secrets.json (mode 0600), or remove it when ``secrets`` is empty."""
        path = os.path.join(self.config_dir, "secrets.json")
        if secrets:
            with open(path, "w") as fh:
                json.dump(secrets, fh)
            os.chmod(path, 0o600)
        elif os.path.exists(path):
            os.unlink(path)

    def argv(self, script: str, *args) -> list:
        return [self.python, os.path.join(SCRIPTS, script), *args,
                "--config-dir", self.config_dir, "--log-dir", self.log_dir]

    def run(self, script: str, *args, timeout: float = None, input: str = None, env: dict = None):
        """Run a script to completion; returns the CompletedProcess (text mode)."""
        return subprocess.run(self.argv(script, *args), env=dict(self.env, **(env or {})), input=input,
                              capture_output=True, text=True,
                              timeout=self.timeout_s if timeout is None else timeout)

    def run_json(self, script: str, *args, **kw) -> dict:
        result = self.run(script, *args, "--json", "--quiet", **kw)
        if result.returncode != 0:
            raise AssertionError("%s %s on %s exited %d: %s" % (script, args, self.node_id, result.returncode,
                                                                result.stderr))
        return json.loads(result.stdout.strip().splitlines()[-1])

    def spawn(self, script: str, *args, env: dict = None) -> subprocess.Popen:
        """Start a script (usually with --loop) in the background, in its own process group."""
        proc = subprocess.Popen(self.argv(script, *args), env=dict(self.env, **(env or {})),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def spawn_all(self, scripts=LOOP_SCRIPTS) -> list:
        return [self.spawn(s, "--loop", "--quiet") for s in scripts]

    def signal_all(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

    def stop_all(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Signal every process group (SIGTERM: a leader releases its lease); SIGKILL what outlives ``timeout``."""
        self.signal_all(sig)
        if sig == signal.SIGSTOP:
            return
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs = [p for p in self.procs if p.poll() is None]

    def kill_all(self) -> None:
        """SIGKILL every process this node started, and any detached child still writing into its
        dirs (a hook supervisor), waiting until they are gone: the dirs can be removed after this.
        A test that checks what outlives a crash of the node's processes (an orphaned handler or hook)
        kills with ``stop_all(signal.SIGKILL)`` instead, which reaches only their process groups."""
        self.signal_all(signal.SIGCONT)
        self.stop_all(signal.SIGKILL)
        wait_processes_gone(os.path.dirname(self.config_dir), kill=True)

    def log_text(self, script: str = None, tail_chars: int = None) -> str:
        """The log of ``script`` ("" before it wrote one). Without ``script``: every log file of this
        node, each headed by its name (and cut to its last ``tail_chars`` characters when given)."""
        if script is not None:
            try:
                with open(os.path.join(self.log_dir, script + ".log")) as fh:
                    return fh.read()
            except OSError:
                return ""
        out = []
        for root, _dirs, files in os.walk(self.log_dir):
            for name in sorted(files):
                if name.endswith(".log"):
                    with open(os.path.join(root, name), errors="replace") as fh:
                        text = fh.read()
                    out.append("== %s\n%s" % (name, text[-tail_chars:] if tail_chars else text))
        return "\n".join(out)

    def memory_path(self) -> str:
        """The elector's memory file of this node (local_state.epoch_memory_path)."""
        sys.path.insert(0, SCRIPTS)
        try:
            from distnode.core import local_state
        finally:
            sys.path.remove(SCRIPTS)
        return local_state.epoch_memory_path(self.run_dir, self.node_id)

    def memory(self) -> dict:
        """The elector's memory of this node ({} before its first election step)."""
        try:
            with open(self.memory_path()) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {}


def wait_for(predicate, timeout_s: float = 10, interval_s: float = 0.05, message: str = "condition"):
    """Poll until predicate() is truthy; return its value or raise AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %gs waiting for %s" % (timeout_s, message))
        time.sleep(interval_s)


def _json_field(raw, key):
    try:
        return json.loads(raw).get(key)
    except (ValueError, AttributeError):
        return None


class ClusterView:
    """The cluster as one Redis server (a test RedisServer) holds it, and as the nodes' memories see it."""

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
        """(leader, epoch) when one leader holds the lease in a term that can act (the term hash is
        at Redis's epoch: not a lease kept through a bootstrap round), only it believes so, at
        Redis's epoch, and every node is online; else None."""
        leader = server.command("GET", "openclaw:cluster:leader")
        epoch = self.epoch(server)
        members = self.members(server)
        online = all(members.get(n.node_id, (None, 0, False))[0] == "online" and members[n.node_id][2]
                     for n in self.nodes)
        if not (leader and online and self.believers() == [leader]):
            return None
        term_epoch = server.command("HGET", "openclaw:cluster:term", "epoch")
        if term_epoch is None or int(term_epoch) != epoch:
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
                self.members(server), self.nodes[0].log_text(tail_chars=4000))) from None

    @staticmethod
    def elected_epochs(server) -> list:
        """Epochs of the ``leader_elected`` events in the server's event stream, oldest first."""
        epochs = []
        for _id, fields in server.command("XRANGE", "openclaw:cluster:events", "-", "+") or []:
            record = dict(zip(fields[::2], fields[1::2]))
            if record.get("type") == "leader_elected":
                epochs.append(int(record["epoch"]))
        return epochs
