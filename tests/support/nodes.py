"""Run the project's scripts as a user would: subprocesses with their own config and log dirs.

    from support.nodes import NodeEnv

    node = NodeEnv(tmpdir, "n1", server, heartbeat_interval=1, heartbeat_ttl=3)
    result = node.run("heartbeat.py", "--json")        # CompletedProcess
    proc = node.spawn("leader_election.py", "--loop")  # Popen, stopped by node.stop_all()
"""

import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.join(REPO, "scripts")

FAST = {"node": {"heartbeat_interval": 1, "heartbeat_ttl": 3, "retry_count": 0, "retry_delay": 0.1},
        "redis": {"connect_timeout": 1, "socket_timeout": 1},
        "election": {"lease_ttl": 3, "renew_interval": 1},
        "logging": {"syslog": False}}


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


class NodeEnv:
    """One simulated machine: a node id, a config dir and a log dir, pointed at a test Redis."""

    def __init__(self, base_dir: str, node_id: str, server=None, config: dict = None, python: str = None,
                 env: dict = None):
        self.node_id = node_id
        self.config_dir = os.path.join(base_dir, node_id, "config")
        self.log_dir = os.path.join(base_dir, node_id, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.config = merge(FAST, config or {})
        write_config(self.config_dir, self.config)
        self.python = python or sys.executable
        self.env = dict(os.environ, OPENCLAW_NODE_ID=node_id, PYTHONDONTWRITEBYTECODE="1")
        for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD", "REDIS_DB", "REDIS_USERNAME", "LOG_LEVEL"):
            self.env.pop(name, None)
        # Without a test server, point at a port nothing listens on: never at a Redis
        # that happens to run on this machine (6379).
        self.env.update(REDIS_HOST="127.0.0.1", REDIS_PORT="1")
        if server is not None:
            self.env.update(REDIS_HOST=server.host, REDIS_PORT=str(server.port))
            if getattr(server, "password", None):
                self.env["REDIS_PASSWORD"] = server.password
        self.env.update(env or {})
        self.procs = []

    def update_config(self, extra: dict) -> None:
        self.config = merge(self.config, extra)
        write_config(self.config_dir, self.config)

    def argv(self, script: str, *args) -> list:
        return [self.python, os.path.join(SCRIPTS, script), *args,
                "--config-dir", self.config_dir, "--log-dir", self.log_dir]

    def run(self, script: str, *args, timeout: float = 30, input: str = None, env: dict = None):
        """Run a script to completion; returns the CompletedProcess (text mode)."""
        return subprocess.run(self.argv(script, *args), env=dict(self.env, **(env or {})), input=input,
                              capture_output=True, text=True, timeout=timeout)

    def run_json(self, script: str, *args, **kw) -> dict:
        result = self.run(script, *args, "--json", "--quiet", **kw)
        if result.returncode != 0:
            raise AssertionError("%s %s exited %d: %s" % (script, args, result.returncode, result.stderr))
        return json.loads(result.stdout.strip().splitlines()[-1])

    def spawn(self, script: str, *args, env: dict = None) -> subprocess.Popen:
        """Start a script (usually with --loop) in the background, in its own process group."""
        proc = subprocess.Popen(self.argv(script, *args), env=dict(self.env, **(env or {})),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def spawn_all(self, scripts=("heartbeat.py", "leader_election.py", "failover_manager.py")) -> list:
        return [self.spawn(s, "--loop", "--quiet") for s in scripts]

    def signal_all(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass

    def stop_all(self, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
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
        self.signal_all(signal.SIGCONT)
        self.stop_all(signal.SIGKILL)

    def log_text(self, script: str) -> str:
        try:
            with open(os.path.join(self.log_dir, script + ".log")) as fh:
                return fh.read()
        except OSError:
            return ""


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
