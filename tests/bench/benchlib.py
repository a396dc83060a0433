"""What every benchmark section shares: paths, the interpreter, the peer venv, timing, counting, tables.

Rules the helpers enforce, so each section does not have to:
- every child runs with the *same interpreter binary* (the real one behind
  ``sys.executable``, or a venv's symlink to it) and with bytecode caching
  on, as on a user's machine (``PYTHONDONTWRITEBYTECODE`` is removed);
- figures that compare commands come from one run where the commands
  alternate (A B C A B C ...), after warm-up rounds; a figure is the median
  of the per-round values with the min and max beside it;
- round trips are counted by Redis: ``total_writes_processed`` in ``INFO
  stats`` goes up once per reply the server writes to a client, which is
  once per request-and-reply exchange as long as the reply fits in one write
  (Redis writes at most 64 KiB per event, so a larger reply counts more).
"""

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(BENCH_DIR)
REPO = os.path.dirname(TESTS_DIR)
SCRIPTS = os.path.join(REPO, "scripts")
PEERS = os.path.join(BENCH_DIR, "peers")
RESULTS = os.path.join(BENCH_DIR, "results")

for _path in (TESTS_DIR, SCRIPTS):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from distnode.redis import client as redis_client  # noqa: E402  (the project's client: the bench's own probes use it too)


def is_project_module(name: str) -> bool:
    """Whether module ``name`` (as ``-X importtime`` names it) is the project's own: an entry script
    in scripts/ (``heartbeat``) or a module or package of the library beneath it (``distnode.core.config``)."""
    path = os.path.join(SCRIPTS, *name.split("."))
    return os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__init__.py"))


def real_python() -> str:
    """The interpreter binary running this suite, with symlinks and shims resolved."""
    return os.path.realpath(sys.executable)


def child_env(**extra) -> dict:
    """Environment for measured children: bytecode caching on, no stray Redis/node settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("REDIS_", "OPENCLAW_")) and k not in ("PYTHONDONTWRITEBYTECODE", "LOG_LEVEL",
                                                                       "PYTHONPATH", "PYTHONSTARTUP")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


# -- statistics ----------------------------------------------------------------

def summary(values) -> dict:
    """{"median", "min", "max", "n"} of a list of numbers (None values dropped)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    mid = len(vals) // 2
    median = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    return {"median": median, "min": vals[0], "max": vals[-1], "n": len(vals)}


def percentiles(values) -> dict:
    """{"p50", "p90", "p99", "max", "min", "n"} of a list of numbers (None dropped), by nearest rank:
    the p-th percentile is the smallest value at least p% of the samples do not exceed (with fewer
    than 100 samples the p99 is the max)."""
    vals = sorted(v for v in values if v is not None)
    out = {"n": len(vals), "min": vals[0] if vals else None, "max": vals[-1] if vals else None}
    for p in (50, 90, 99):
        out["p%d" % p] = vals[max(0, math.ceil(p / 100.0 * len(vals)) - 1)] if vals else None
    return out


def ms(value, digits: int = 1) -> str:
    """Seconds as milliseconds (``12.3``), or ``-`` for None."""
    return "-" if value is None else ("%%.%df" % digits) % (value * 1000.0)


def verdict(ok) -> str:
    """A goal column: "met", "missed", or "-" when nothing was measured."""
    return "-" if ok is None else "met" if ok else "missed"


# Trials whose figures are milliseconds (a handover, a task's latency) and the bursts of process
# starts that would spoil them (restarting a node) hold this lock, so the sections that run side by
# side (the clusters of bench_handover, bench_failover's cases) never overlap one another's.
QUIET = threading.Lock()


def fmt(stat: dict, digits: int = 1, unit: str = "") -> str:
    """``median [min-max]`` with ``digits`` decimals, or ``-``."""
    if not stat or stat.get("median") is None:
        return "-"
    f = "%%.%df" % digits
    if stat["n"] == 1 or stat["min"] == stat["max"]:
        return (f % stat["median"]) + unit
    return "%s [%s-%s]%s" % (f % stat["median"], f % stat["min"], f % stat["max"], unit)


def ratios(a: list, b: list) -> list:
    """Per-round ratios a[i] / b[i] of two series measured in the same rounds."""
    return [x / y for x, y in zip(a, b) if x is not None and y]


def table(headers: list, rows: list) -> str:
    """A Markdown table (what docs/*/performance.md keeps), columns padded for the terminal."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


# -- running children ----------------------------------------------------------

def run_alternating(python: str, commands: dict, rounds: int, warmup: int, env: dict) -> dict:
    """Run each command ``rounds`` times (after ``warmup`` rounds), alternating.

    ``commands``: name -> argv. Returns {"runs": {name: [{"wall_ms", "maxrss_kb", "rc"}, ...]},
    "spawner_hwm_kb": N}; list index = round. The spawner is a minimal Python
    (``-S -E``) so that children's peak memory is their own (see spawner.py).
    """
    with tempfile.NamedTemporaryFile("wb", suffix=".plan", delete=False) as fh:
        fh.write(("%d %d\n" % (rounds, warmup)).encode())
        for name, argv in commands.items():
            fh.write(("\0".join([name] + [str(a) for a in argv]) + "\x1e").encode())
        plan = fh.name
    try:
        proc = subprocess.run([python, "-S", "-E", os.path.join(BENCH_DIR, "spawner.py"), plan], env=env,
                              capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(plan)
    if proc.returncode != 0:
        raise RuntimeError("spawner failed: %s" % proc.stderr.strip()[-500:])
    runs = {name: [None] * rounds for name in commands}
    hwm = 0
    for line in proc.stdout.splitlines():
        words = line.split()
        if words[0] == "spawner_hwm_kb":
            hwm = int(words[1])
            continue
        rnd, name, wall_ms, rss_kb, code = int(words[0]), words[1], float(words[2]), int(words[3]), int(words[4])
        runs[name][rnd] = {"wall_ms": wall_ms, "maxrss_kb": rss_kb, "rc": code}
    return {"runs": runs, "spawner_hwm_kb": hwm}


def run_counted(python: str, argv: list, env: dict, timeout_s: float = 120) -> dict:
    """Run a project script once through count_trips.py: exit code, wall ms, client-side round trips
    and commands sent (handshake commands excluded)."""
    fd, path = tempfile.mkstemp(suffix=".trips")
    os.close(fd)
    try:
        started = time.perf_counter()
        proc = subprocess.run([python, os.path.join(BENCH_DIR, "count_trips.py")] + list(argv),
                              env=dict(env, BENCH_TRIPS_FILE=path), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=timeout_s)
        wall_ms = (time.perf_counter() - started) * 1000
        with open(path) as fh:
            text = fh.read().strip()
    finally:
        os.unlink(path)
    words = text.split()
    return {"rc": proc.returncode, "wall_ms": wall_ms, "client_trips": int(words[0]) if words else None,
            "client_commands": int(words[1]) if len(words) > 1 else None, "stderr": proc.stderr.strip()[-300:]}


# -- counting on the server ----------------------------------------------------

class Probe:
    """Counters of one Redis read before and after an action, on one kept connection."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.client = redis_client.Redis(host, port)
        self._baseline = None

    def close(self) -> None:
        self.client.close()

    def counters(self) -> dict:
        text = self.client.execute("INFO", "all").decode("utf-8", "replace")
        out = {"commands": {}}
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in ("total_writes_processed", "total_reads_processed", "total_commands_processed"):
                out[key] = int(value)
            elif key.startswith("cmdstat_"):
                fields = dict(kv.split("=", 1) for kv in value.split(",") if "=" in kv)
                out["commands"][key[8:]] = int(fields.get("calls", 0))
        return out

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        cmds = {name: calls - before["commands"].get(name, 0) for name, calls in after["commands"].items()}
        return {"writes": after.get("total_writes_processed", 0) - before.get("total_writes_processed", 0),
                "reads": after.get("total_reads_processed", 0) - before.get("total_reads_processed", 0),
                "commands": {k: v for k, v in cmds.items() if v}}

    def calibrate(self) -> dict:
        """What reading the counters itself adds (two reads, nothing between), kept to subtract."""
        self._baseline = self.delta(self.counters(), self.counters())
        return self._baseline

    def measure(self, action) -> dict:
        """Run ``action()``; return its result and the server-side deltas it caused.

        ``round_trips`` is the number of replies the server wrote (see the module doc);
        ``commands`` counts every command Redis ran, including those inside Lua scripts.
        """
        if self._baseline is None:
            self.calibrate()
        before = self.counters()
        result = action()
        d = self.delta(before, self.counters())
        base = self._baseline
        cmds = {k: v - base["commands"].get(k, 0) for k, v in d["commands"].items()}
        return {"result": result, "round_trips": d["writes"] - base["writes"],
                "reads": d["reads"] - base["reads"],
                "commands": {k: v for k, v in sorted(cmds.items()) if v}}

    def supported(self) -> bool:
        """Redis 6.0+ reports total_writes_processed; 5.x does not (round trips are then the client's)."""
        return "total_writes_processed" in self.counters()


# -- peers: a throwaway venv --------------------------------------------------

def make_peer_venv(base_python: str, folder: str, packages: list, log) -> dict:
    """Create a venv of ``base_python`` in ``folder`` and pip install each package there.

    Returns {"python": venv python or None, "installed": {pkg: version}, "skipped": {pkg: reason}}.
    A package pip cannot install (no network, no wheel) is skipped with the reason; the
    project itself never depends on any of them.
    """
    out = {"python": None, "installed": {}, "skipped": {}}
    argv = [base_python, "-m", "venv"] + ([] if packages else ["--without-pip"]) + [folder]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        reason = "python -m venv failed: %s" % (proc.stderr.strip().splitlines() or ["?"])[-1]
        out["skipped"] = {p: reason for p in packages}
        return out
    py = os.path.join(folder, "bin", "python")
    out["python"] = py
    for pkg in packages:
        log("installing peer %s into the throwaway venv" % pkg)
        proc = subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q", pkg],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if "ERROR" in l] or proc.stderr.strip().splitlines()
            out["skipped"][pkg] = "pip install %s failed: %s" % (pkg, (lines or ["?"])[-1][:200])
            continue
        ver = subprocess.run([py, "-c", "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))", pkg],
                             capture_output=True, text=True)
        out["installed"][pkg] = ver.stdout.strip() or "?"
    return out


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- describing the run ----------------------------------------------------------

def machine(python: str, redis_version: str) -> dict:
    import platform
    ver = subprocess.run([python, "-c", "import sys, platform; print(platform.python_version(), "
                                        "platform.python_implementation())"],
                         capture_output=True, text=True).stdout.split()
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "python": ver[0] if ver else "?",
            "python_impl": ver[1] if len(ver) > 1 else "?", "python_binary": os.path.basename(real_python()),
            "redis": redis_version, "cores": os.cpu_count(), "platform": platform.platform(),
            "machine": platform.machine()}


class Log:
    """Progress lines on stderr with the time since the start (stdout keeps the tables)."""

    def __init__(self, quiet: bool = False):
        self.started = time.monotonic()
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write("[%6.1fs] %s\n" % (time.monotonic() - self.started, text))
            sys.stderr.flush()


# -- simulated nodes ---------------------------------------------------------------

class Node:
    """One node's config dir and log dir (a simulated machine) and how to run its scripts."""

    def __init__(self, base_dir: str, node_id: str, port: int, config: dict = None, python: str = None):
        import json
        self.node_id, self.port = node_id, port
        self.config_dir = os.path.join(base_dir, node_id, "config")
        self.log_dir = os.path.join(base_dir, node_id, "logs")
        os.makedirs(self.config_dir, exist_ok=True)
        os.makedirs(self.log_dir, exist_ok=True)
        with open(os.path.join(self.config_dir, "config.json"), "w") as fh:
            json.dump(config or {}, fh)
        self.python = python or real_python()
        self.env = child_env(REDIS_HOST="127.0.0.1", REDIS_PORT=port, OPENCLAW_NODE_ID=node_id)

    def argv(self, script: str, *args, python: bool = True) -> list:
        path = script if os.path.isabs(script) else os.path.join(SCRIPTS, script)
        return ([self.python] if python else []) + [path, *args, "--config-dir", self.config_dir,
                                                   "--log-dir", self.log_dir]

    def run(self, script: str, *args, check: bool = True, timeout_s: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(script, *args), env=self.env, capture_output=True, text=True,
                              timeout=timeout_s)
        if check and proc.returncode != 0:
            raise RuntimeError("%s %s on %s exited %d: %s" % (script, " ".join(args), self.node_id, proc.returncode,
                                                              proc.stderr.strip()[-400:]))
        return proc

    def counted(self, script: str, *args) -> dict:
        return run_counted(self.python, self.argv(script, *args, python=False), self.env)
