#!/usr/bin/env python3
"""What ``./start-node.sh`` does: preflight, registration, and this node's OpenClaw cron jobs.

Commands (start-node.sh maps its flags to them):
  install     check config and Redis, register, run one heartbeat, then install or
              update this node's cron jobs when ``openclaw`` is on PATH (else say how
              to run the node in the foreground)
  uninstall   remove this node's cron jobs, then leave the cluster gracefully
  status      the cron jobs' last runs, then ``node_manager.py status``

Guarantees of ``install``:
- idempotent: every job has the declaration key ``distributed-node:<node id>:<job>``,
  so a second run changes nothing and a changed interval updates the job in place
  (same id); a job this version no longer plans is removed;
- each job runs one tick script as an argv (no shell, no model turn) with an absolute
  interpreter path (the gateway rewrites PATH), cwd = the skill folder, ``--no-deliver``;
- credentials never go on a command line: the jobs read ``secrets.json``; only the
  non-secret settings taken from this shell's environment are passed as
  ``--command-env K=V`` (``cron list`` shows those values). A password set only in
  REDIS_PASSWORD stops the install with exit 2, because the jobs would not see it;
- a failed preflight changes nothing: config, Redis and the gateway are checked
  before the node registers, and the jobs are added only after its first heartbeat.

Exit codes: 0 ok, 1 Redis, the gateway or a job's first run failed, 2 bad config or
usage.
"""

import json
import os
import subprocess
import sys
import time

from distnode.core import config as config_mod
from distnode.run import runner

PROG = "start-node.sh"
SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
KEY_PREFIX = "distributed-node:"
# job name (as in foreground.jobs) -> the argv that runs one tick of it
JOB_ARGV = {
    "heartbeat": ["heartbeat.py"],
    "leader_election": ["leader_election.py"],
    "failover_manager": ["failover_manager.py"],
    "state_sync": ["state_sync.py", "tick"],
    "task_queue": ["task_queue.py", "work"],
}
JOB_TEXT = {
    "heartbeat": "tell the cluster this node is alive",
    "leader_election": "renew or take the leader lease",
    "failover_manager": "leader: mark dead nodes offline, reclaim their tasks",
    "state_sync": "publish / mirror the cluster snapshot",
    "task_queue": "run queued tasks on this node",
}
# settings a job may receive through --command-env; REDIS_PASSWORD is deliberately absent
PASSED_ENV = ("OPENCLAW_NODE_ID", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_USERNAME", "LOG_LEVEL")
OPENCLAW_TIMEOUT_S = 90
TOTAL_STEPS = 7  # of install
FLAGS = [f for f in runner.COMMON_FLAGS if f[0] in ("--config-dir", "--log-dir", "--help")]


class SetupError(Exception):
    """A step failed; the message is one line saying what to check. ``code`` is the exit code."""

    def __init__(self, message: str, code: int = runner.EXIT_REDIS):
        super().__init__(message)
        self.code = code


class Job:
    """One planned cron job: name, declaration key, period, argv and --command-env pairs."""

    def __init__(self, name: str, node_id: str, every_s: float, argv: list, env: dict):
        self.name, self.every_s, self.argv, self.env = name, every_s, argv, env
        self.key = "%s%s:%s" % (KEY_PREFIX, node_id, name)
        self.title = "distributed-node %s (%s)" % (name, node_id)

    def add_args(self) -> list:
        args = ["cron", "add", "--name", self.title, "--description", JOB_TEXT.get(self.name, self.name),
                "--every", seconds_text(self.every_s) + "s", "--command-argv", json.dumps(self.argv),
                "--command-cwd", os.path.dirname(SCRIPTS_DIR), "--no-deliver", "--declaration-key", self.key]
        for name, value in sorted(self.env.items()):
            args += ["--command-env", "%s=%s" % (name, value)]
        return args


def seconds_text(value: float) -> str:
    """``10`` -> "10", ``1.5`` -> "1.5": a duration without exponent notation."""
    return ("%.3f" % value).rstrip("0").rstrip(".")


def dir_flags(flags: dict) -> list:
    """--config-dir / --log-dir as absolute paths, when the user chose them (flag or env)."""
    out = []
    for flag, env in (("--config-dir", "OPENCLAW_DISTRIBUTED_CONFIG_DIR"), ("--log-dir", "OPENCLAW_DISTRIBUTED_LOG_DIR")):
        value = flags.get(flag) or os.environ.get(env)
        if value:
            out += [flag, os.path.abspath(value)]
    return out


def plan(cfg, flags: dict) -> list:
    """This node's cron jobs: the same jobs and periods as the foreground runner."""
    from distnode.run import foreground
    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    jobs = []
    for name, _tick, period_s in foreground.jobs(cfg):
        if name not in JOB_ARGV:
            raise SetupError("no cron command known for job %r (update JOB_ARGV in %s)" % (name, __file__),
                             runner.EXIT_INTERNAL)
        argv = [sys.executable] + [os.path.join(SCRIPTS_DIR, JOB_ARGV[name][0])] + JOB_ARGV[name][1:]
        jobs.append(Job(name, cfg.node_id, period_s, argv + ["--quiet"] + dir_flags(flags), env))
    return jobs


# -- running the project's own commands and the openclaw CLI --------------------

def run_script(flags: dict, script: str, *args) -> dict:
    """Run ``scripts/<script> args --json --quiet``; its JSON result, or SetupError with its one line."""
    argv = [sys.executable, os.path.join(SCRIPTS_DIR, script), *args, "--json", "--quiet"] + dir_flags(flags)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["%s exited %d" % (script, proc.returncode)]
        line = lines[-1]
        for prefix in (script + ": ", "error: "):  # "node_manager.py: error: Redis unreachable: ..."
            if line.startswith(prefix):
                line = line[len(prefix):]
        raise SetupError(line, proc.returncode if proc.returncode in (1, 2, 3) else runner.EXIT_REDIS)
    out = proc.stdout.strip().splitlines()
    return json.loads(out[-1]) if out else {}


def find_openclaw():
    """The openclaw executable on PATH, or None."""
    import shutil
    return shutil.which("openclaw")


def openclaw(cli: str, *args, check: bool = True):
    """Run ``openclaw args``; parsed JSON stdout. A gateway fault raises SetupError (one line)."""
    env = dict(os.environ, NO_COLOR="1")
    try:
        proc = subprocess.run([cli, *args], capture_output=True, text=True, env=env, timeout=OPENCLAW_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SetupError("openclaw %s gave no answer in %ds (is the gateway busy or stuck?)"
                         % (args[1] if len(args) > 1 else args[0], OPENCLAW_TIMEOUT_S)) from None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    if proc.returncode != 0 and check:
        raise SetupError(gateway_hint(_error_text(data, proc.stderr, proc.returncode)))
    return data if isinstance(data, dict) else {}


def _error_text(data, stderr: str, returncode: int) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", "")).strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[0].strip() if lines else "openclaw exited %d" % returncode  # the cause; hints follow it


def gateway_hint(message: str) -> str:
    """The CLI's error, plus what to do about the usual causes."""
    first = message.splitlines()[0] if message else "no answer"
    if "not reachable" in first or "ECONNREFUSED" in first or "credentials" in first:
        return ("OpenClaw gateway: %s (start it: `openclaw gateway run`, or your gateway service; "
                "without a gateway use ./start-node.sh --foreground)" % first)
    if first.startswith("openclaw: Node ") or "node:sqlite" in first:
        return ("%s (the openclaw CLI needs Node 24.16+ or 26.1+; without it use ./start-node.sh --foreground)"
                % first)
    if "unauthorized" in first or "token" in first:
        return "OpenClaw gateway refused the CLI: %s (check OPENCLAW_GATEWAY_TOKEN or gateway.auth)" % first
    return "openclaw: %s" % first


def our_jobs(cli: str, node_id: str) -> list:
    """This node's jobs on the gateway (disabled ones too), sorted by name."""
    jobs = openclaw(cli, "cron", "list", "--json", "--all").get("jobs") or []
    prefix = "%s%s:" % (KEY_PREFIX, node_id)
    return sorted((j for j in jobs if str(j.get("declarationKey") or "").startswith(prefix)),
                  key=lambda j: j.get("declarationKey"))


# -- install ---------------------------------------------------------------------

def step(number: int, name: str, text: str) -> None:
    print("[%d/%d] %-9s %s" % (number, TOTAL_STEPS, name, text), flush=True)


def secrets_password(cfg) -> str:
    """redis.password as written in secrets.json ("" when the file or the key is missing)."""
    try:
        with open(os.path.join(cfg.config_dir, "secrets.json"), "rb") as fh:
            data = json.loads(fh.read().decode("utf-8"))
    except (OSError, ValueError):
        return ""
    redis = data.get("redis") if isinstance(data, dict) else None
    password = redis.get("password") if isinstance(redis, dict) else ""
    return password if isinstance(password, str) else ""


def check_password_source(cfg, cli) -> None:
    """Cron jobs do not see this shell's REDIS_PASSWORD: refuse a password that lives only there."""
    if not cli or not os.environ.get("REDIS_PASSWORD"):
        return
    path = os.path.abspath(os.path.join(cfg.config_dir, "secrets.json"))
    in_file = secrets_password(cfg)
    if not in_file:
        raise SetupError("REDIS_PASSWORD is set in this shell, but cron jobs run in the gateway's environment "
                         "and never get it (and a password passed on their command line would show in "
                         "`openclaw cron list`): put it in %s as {\"redis\": {\"password\": \"...\"}}, "
                         "run chmod 600 %s, then run ./start-node.sh again" % (path, path), runner.EXIT_CONFIG)
    if in_file != os.environ["REDIS_PASSWORD"]:
        print("          warning: REDIS_PASSWORD differs from the password in %s; the cron jobs will use "
              "the file's" % path)
    else:
        print("          note: the cron jobs read the password from %s, not from REDIS_PASSWORD" % path)


def install(cfg, flags: dict) -> int:
    cli = find_openclaw()
    jobs = preflight(cfg, flags, cli)
    join(cfg, flags)
    if not cli:
        step(7, "cron", "skipped: `openclaw` is not on PATH")
        import shlex
        print(NO_OPENCLAW_HELP.format(cmd=" ".join(shlex.quote(w) for w in
                                                   ["./start-node.sh", "--foreground"] + dir_flags(flags))))
        return runner.EXIT_OK
    step(7, "cron", "installing %d jobs" % len(jobs))
    ids = install_jobs(cli, cfg.node_id, jobs)
    first_run(cli, ids["heartbeat"])
    print("done: node %s runs under OpenClaw cron. See ./start-node.sh --status; "
          "remove with ./start-node.sh --uninstall" % cfg.node_id)
    return runner.EXIT_OK


def preflight(cfg, flags: dict, cli) -> list:
    """Steps 1-4, which change nothing: interpreter, config, Redis, gateway. Returns the planned jobs."""
    step(1, "python", "%s (%s)" % (sys.executable, sys.version.split()[0]))
    step(2, "config", "node %s, config %s, logs %s" % (cfg.node_id, os.path.abspath(cfg.config_dir),
                                                         os.path.abspath(cfg.log_dir)))
    for warning in cfg.warnings:
        print("          warning: %s" % warning)
    check_password_source(cfg, cli)
    jobs = plan(cfg, flags)
    info = run_script(flags, "node_manager.py", "check")
    step(3, "redis", "%s answers, credentials accepted, version %s" % (info["redis"], info["redis_version"]))
    step(4, "openclaw", check_gateway(cli) if cli else "not on PATH: the node will run without cron jobs")
    return jobs


def join(cfg, flags: dict) -> None:
    """Steps 5-6: register the node, then one heartbeat with the script the heartbeat job runs."""
    run_script(flags, "node_manager.py", "register")
    step(5, "register", "node %s is a member (status online)" % cfg.node_id)
    beat = run_script(flags, "heartbeat.py")
    step(6, "heartbeat", "%s: hb:%s set for %ss (Redis time %.3f)" % (
        "ok" if beat.get("ok") else "?", cfg.node_id, seconds_text(cfg["node"]["heartbeat_ttl"]),
        beat.get("time", 0)))


def check_gateway(cli: str) -> str:
    """One line about the gateway that will run the jobs; SetupError if it does not answer."""
    reply = openclaw(cli, "cron", "status")
    text = "%s; the gateway answers (%s jobs stored)" % (cli, reply.get("jobs", "?"))
    if reply.get("enabled") is False:
        text += "; WARNING: its cron scheduler is disabled, so the jobs will not run until it is enabled"
    return text


NO_OPENCLAW_HELP = """\
          Without OpenClaw, run every job of this node in one process (until Ctrl-C or SIGTERM,
          then it leaves the cluster gracefully):
              {cmd}
          To keep it running, start that from systemd or tmux, or:
              nohup {cmd} >/dev/null 2>&1 &
          Install OpenClaw and run ./start-node.sh again to use cron jobs instead."""


def install_jobs(cli: str, node_id: str, jobs: list) -> dict:
    """Add or update every planned job, re-enable disabled ones, drop obsolete ones; name -> id."""
    ids = {}
    for job in jobs:
        reply = openclaw(cli, *job.add_args())
        added = reply.get("job") or {}
        ids[job.name] = added.get("id", "")
        state = "created" if reply.get("created") else ("updated" if reply.get("updated") else "unchanged")
        if added.get("enabled") is False:
            openclaw(cli, "cron", "enable", ids[job.name])
            state += ", re-enabled"
        print("          %-17s every %-6s %-19s id %s" % (job.name, seconds_text(job.every_s) + "s", state,
                                                         ids[job.name]))
    planned = {job.key for job in jobs}
    for old in our_jobs(cli, node_id):
        if old.get("declarationKey") not in planned:
            openclaw(cli, "cron", "rm", old["id"])
            print("          removed obsolete job %s (%s)" % (old.get("name"), old["id"]))
    return ids


def first_run(cli: str, job_id: str) -> None:
    """Run the heartbeat job once through the gateway: proves interpreter, cwd and credentials."""
    reply = openclaw(cli, "cron", "run", job_id, "--wait", "--poll-interval", "300ms", "--wait-timeout", "60s",
                     check=False)
    if reply.get("reason") == "already-running":
        print("          first run: a scheduled run of the heartbeat job is in progress (fine)")
        return
    run = reply.get("run") or {}
    if reply.get("status") == "ok" or run.get("status") == "ok":
        print("          first run of the heartbeat job through OpenClaw: ok (%s ms)" % run.get("durationMs", "?"))
        return
    detail = run.get("error") or _error_text(reply, "", 1)
    output = _last_output(run.get("summary", ""))
    raise SetupError("the heartbeat job failed when OpenClaw ran it: %s%s (the jobs are installed; fix this "
                     "and run ./start-node.sh again)" % (detail, "; output: " + output if output else ""))


def _last_output(summary: str) -> str:
    """The last line a run printed, preferring stderr: OpenClaw's summary is "stdout:\n..\n\nstderr:\n.."
    when the command wrote to both streams, and just the text when it wrote to one."""
    if summary.startswith("stdout:") or "\nstderr:" in summary or summary.startswith("stderr:"):
        head, sep, err = summary.partition("stderr:")
        summary = err if sep else head[len("stdout:"):]
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- uninstall and status ----------------------------------------------------------

def uninstall(cfg, flags: dict) -> int:
    cli = find_openclaw()
    if cli:
        jobs = our_jobs(cli, cfg.node_id)
        for job in jobs:
            openclaw(cli, "cron", "rm", job["id"])
            print("removed cron job %-17s id %s" % (job.get("declarationKey", "").rsplit(":", 1)[-1], job["id"]))
        print("%d cron job(s) of node %s removed" % (len(jobs), cfg.node_id))
    else:
        print("`openclaw` is not on PATH: no cron jobs to remove")
    left = run_script(flags, "node_manager.py", "deregister")
    print("node %s left the cluster (lease released: %s, tasks handed back: %s)" % (
        cfg.node_id, "yes" if left.get("released_lease") else "no", left.get("tasks_handed_back", 0)))
    return runner.EXIT_OK


def status(cfg, flags: dict) -> int:
    cli, code = find_openclaw(), runner.EXIT_OK
    if not cli:
        print("cron jobs: `openclaw` is not on PATH (a foreground node shows up in the table below)")
    else:
        try:
            print_jobs(cli, our_jobs(cli, cfg.node_id), cfg.node_id)
        except SetupError as exc:
            sys.stderr.write("%s: %s\n" % (PROG, exc))
            code = exc.code
    print()
    argv = [sys.executable, os.path.join(SCRIPTS_DIR, "node_manager.py"), "status", "--quiet"] + dir_flags(flags)
    result = subprocess.run(argv, timeout=120)
    return code or result.returncode


def print_jobs(cli: str, jobs: list, node_id: str) -> None:
    if not jobs:
        print("cron jobs: none for node %s (install them with ./start-node.sh)" % node_id)
        return
    now_ms = time.time() * 1000
    rows = [("JOB", "EVERY", "ENABLED", "LAST RUN", "RESULT", "TOOK", "ERRORS IN A ROW")]
    for job in jobs:
        st = job.get("state") or {}
        last = st.get("lastRunAtMs")
        every = (job.get("schedule") or {}).get("everyMs")
        rows.append((job.get("declarationKey", "").rsplit(":", 1)[-1],
                     seconds_text(every / 1000) + "s" if every else "?",
                     "yes" if job.get("enabled") else "NO",
                     "%.0fs ago" % ((now_ms - last) / 1000) if last else "never",
                     st.get("lastRunStatus") or "-",
                     "%sms" % st["lastDurationMs"] if st.get("lastDurationMs") is not None else "-",
                     str(st.get("consecutiveErrors") or 0)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("cron jobs of node %s:" % node_id)
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for job in jobs:
        if (job.get("state") or {}).get("lastRunStatus") == "error":
            print_last_failure(cli, job)
    print("  (history of one job: openclaw cron runs <id>; ids: openclaw cron list)")


def print_last_failure(cli: str, job: dict) -> None:
    runs = openclaw(cli, "cron", "runs", job["id"], "--limit", "1", check=False).get("entries") or []
    if runs:
        output = _last_output(runs[0].get("summary") or "")
        print("  last failure of %s: %s%s" % (job.get("declarationKey", "").rsplit(":", 1)[-1],
                                              runs[0].get("error") or runs[0].get("status"),
                                              "; output: " + output if output else ""))


COMMANDS = {"install": install, "uninstall": uninstall, "status": status}


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        flags = runner.parse_flags(args, FLAGS)
    except runner.UsageError as exc:
        sys.stderr.write("%s: error: %s\n" % (PROG, exc))
        return runner.EXIT_CONFIG
    if flags.get("--help") or len(flags["args"]) != 1 or flags["args"][0] not in COMMANDS:
        print(runner.format_help("node_setup.py", __doc__, FLAGS, "{%s} [options]" % ",".join(COMMANDS)))
        return runner.EXIT_OK if flags.get("--help") else runner.EXIT_CONFIG
    try:
        cfg = config_mod.load(flags.get("--config-dir", ""), flags.get("--log-dir", ""))
        cfg.check_log_dir(probe=True)  # before any step: every job would fail on it after the node registered
    except config_mod.ConfigError as exc:
        sys.stderr.write("%s: config error: %s\n" % (PROG, exc))
        return runner.EXIT_CONFIG
    try:
        return COMMANDS[flags["args"][0]](cfg, flags)
    except SetupError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the top of main(): the traceback goes to the log file, one line to stderr
        return _unexpected(cfg, exc)


def _unexpected(cfg, exc: Exception) -> int:
    import traceback
    path = os.path.join(cfg.log_dir, "node_setup.log")
    try:
        os.makedirs(cfg.log_dir, exist_ok=True)
        with open(path, "a") as fh:
            fh.write("%s unexpected error:\n%s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), traceback.format_exc()))
    except OSError:
        path = "not written: %s is not writable" % cfg.log_dir
    sys.stderr.write("%s: unexpected error: %s: %s (traceback in %s)\n" % (PROG, type(exc).__name__, exc, path))
    return runner.EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
