"""This node's OpenClaw cron jobs: the plan, the ``openclaw`` CLI, installing and showing them.

One cron job per row of ``run/jobs.py``, at the row's period. Guarantees:
- every job carries the declaration key ``distributed-node:<node id>:<job>``, so
  installing twice changes nothing, a changed period updates the job in place
  (same id), and a job this version no longer plans is removed;
- a job runs one tick script as an argv (no shell, no model turn) with an absolute
  interpreter path (the gateway rewrites PATH), cwd = the skill folder, ``--no-deliver``;
- a job's environment holds only the non-secret settings in ``PASSED_ENV``
  (``openclaw cron list`` shows them); credentials stay in ``secrets.json``;
- every fault of the gateway or its CLI is a ``SetupError`` with one line that says
  what to do, never a traceback.
"""

import json
import os
import shutil
import subprocess
import sys
import time

from distnode.core import defaults
from distnode.core.errors import SetupError
from distnode.run import jobs as jobs_mod

SCRIPTS_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKILL_DIR = os.path.dirname(SCRIPTS_DIR)
KEY_PREFIX = "distributed-node:"
# settings a job may receive through --command-env; REDIS_PASSWORD is deliberately absent
PASSED_ENV = ("OPENCLAW_NODE_ID", "REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_USERNAME", "LOG_LEVEL")
DIR_FLAGS = (("--config-dir", "OPENCLAW_DISTRIBUTED_CONFIG_DIR"), ("--log-dir", "OPENCLAW_DISTRIBUTED_LOG_DIR"))


class CronJob:
    """One planned cron job: name, what it does, declaration key, period, argv and --command-env pairs."""

    def __init__(self, name: str, text: str, node_id: str, every_s: float, argv: list, env: dict):
        self.name, self.text, self.every_s, self.argv, self.env = name, text, every_s, argv, env
        self.key = "%s%s:%s" % (KEY_PREFIX, node_id, name)
        self.title = "distributed-node %s (%s)" % (name, node_id)

    def add_args(self) -> list:
        """The ``openclaw`` words that add this job, or update the one with its declaration key."""
        args = ["cron", "add", "--name", self.title, "--description", self.text,
                "--every", seconds_text(self.every_s) + "s", "--command-argv", json.dumps(self.argv),
                "--command-cwd", SKILL_DIR, "--no-deliver", "--declaration-key", self.key]
        for name, value in sorted(self.env.items()):
            args += ["--command-env", "%s=%s" % (name, value)]
        return args


def seconds_text(value_s: float) -> str:
    """``10`` -> "10", ``1.5`` -> "1.5": a duration without exponent notation."""
    return ("%.3f" % value_s).rstrip("0").rstrip(".")


def dir_flags(flags: dict) -> list:
    """--config-dir / --log-dir as absolute paths, when the user chose them (flag or env)."""
    out = []
    for flag, env in DIR_FLAGS:
        value = flags.get(flag) or os.environ.get(env)
        if value:
            out += [flag, os.path.abspath(value)]
    return out


def plan(cfg, flags: dict) -> list:
    """This node's cron jobs: one per row of ``run/jobs.py``, at its period (as the foreground runner)."""
    env = {name: os.environ[name] for name in PASSED_ENV if os.environ.get(name)}
    planned = []
    for job in jobs_mod.JOBS:
        argv = [sys.executable, os.path.join(SCRIPTS_DIR, job.argv[0])] + list(job.argv[1:])
        planned.append(CronJob(job.name, job.text, cfg.node_id, job.period_s(cfg),
                               argv + ["--quiet"] + dir_flags(flags), env))
    return planned


# -- the openclaw CLI ---------------------------------------------------------------

def find_openclaw():
    """The openclaw executable on PATH, or None."""
    return shutil.which("openclaw")


def openclaw(cli: str, *args, check: bool = True) -> dict:
    """Run ``openclaw args``; parsed JSON stdout ({} if none). A gateway fault raises SetupError (one line)."""
    env = dict(os.environ, NO_COLOR="1")
    try:
        proc = subprocess.run([cli, *args], capture_output=True, text=True, env=env,
                              timeout=defaults.OPENCLAW_CLI_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SetupError("openclaw %s gave no answer in %ds (is the gateway busy or stuck?)"
                         % (args[1] if len(args) > 1 else args[0], defaults.OPENCLAW_CLI_TIMEOUT_S)) from None
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    if proc.returncode != 0 and check:
        raise SetupError(gateway_hint(error_text(data, proc.stderr, proc.returncode)))
    return data if isinstance(data, dict) else {}


def error_text(data, stderr: str, returncode: int) -> str:
    """The cause of a failed CLI call: its JSON error message, else its first stderr line."""
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


def check_gateway(cli: str) -> str:
    """One line about the gateway that will run the jobs; SetupError if it does not answer."""
    reply = openclaw(cli, "cron", "status")
    text = "%s; the gateway answers (%s jobs stored)" % (cli, reply.get("jobs", "?"))
    if reply.get("enabled") is False:
        text += "; WARNING: its cron scheduler is disabled, so the jobs will not run until it is enabled"
    return text


def our_jobs(cli: str, node_id: str) -> list:
    """This node's jobs on the gateway (disabled ones too), sorted by declaration key."""
    jobs = openclaw(cli, "cron", "list", "--json", "--all").get("jobs") or []
    prefix = "%s%s:" % (KEY_PREFIX, node_id)
    return sorted((j for j in jobs if str(j.get("declarationKey") or "").startswith(prefix)),
                  key=lambda j: j.get("declarationKey"))


def _job_name(job: dict) -> str:
    """The job-table name of a gateway job (the last word of its declaration key)."""
    return job.get("declarationKey", "").rsplit(":", 1)[-1]


# -- installing and removing ----------------------------------------------------------

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
    detail = run.get("error") or error_text(reply, "", 1)
    output = last_output(run.get("summary", ""))
    raise SetupError("the heartbeat job failed when OpenClaw ran it: %s%s (the jobs are installed; fix this "
                     "and run ./start-node.sh again)" % (detail, "; output: " + output if output else ""))


def remove_jobs(cli: str, node_id: str) -> int:
    """Remove every job of this node from the gateway, one line each; how many went."""
    jobs = our_jobs(cli, node_id)
    for job in jobs:
        openclaw(cli, "cron", "rm", job["id"])
        print("removed cron job %-17s id %s" % (_job_name(job), job["id"]))
    return len(jobs)


def last_output(summary: str) -> str:
    """The last line a run printed, preferring stderr: OpenClaw's summary is "stdout:\\n..\\n\\nstderr:\\n.."
    when the command wrote to both streams, and just the text when it wrote to one."""
    if summary.startswith("stdout:") or "\nstderr:" in summary or summary.startswith("stderr:"):
        head, sep, err = summary.partition("stderr:")
        summary = err if sep else head[len("stdout:"):]
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- showing them ---------------------------------------------------------------------

def print_jobs(cli: str, jobs: list, node_id: str) -> None:
    """A table of ``jobs`` (their last runs), then the last failure of each that failed."""
    if not jobs:
        print("cron jobs: none for node %s (install them with ./start-node.sh)" % node_id)
        return
    now_ms = time.time() * 1000  # the gateway's run times are wall-clock ms
    rows = [("JOB", "EVERY", "ENABLED", "LAST RUN", "RESULT", "TOOK", "ERRORS IN A ROW")]
    rows += [_job_row(job, now_ms) for job in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("cron jobs of node %s:" % node_id)
    for row in rows:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for job in jobs:
        if (job.get("state") or {}).get("lastRunStatus") == "error":
            print_last_failure(cli, job)
    print("  (history of one job: openclaw cron runs <id>; ids: openclaw cron list)")


def _job_row(job: dict, now_ms: float) -> tuple:
    st = job.get("state") or {}
    last_ms = st.get("lastRunAtMs")
    every_ms = (job.get("schedule") or {}).get("everyMs")
    return (_job_name(job),
            seconds_text(every_ms / 1000) + "s" if every_ms else "?",
            "yes" if job.get("enabled") else "NO",
            "%.0fs ago" % ((now_ms - last_ms) / 1000) if last_ms else "never",
            st.get("lastRunStatus") or "-",
            "%sms" % st["lastDurationMs"] if st.get("lastDurationMs") is not None else "-",
            str(st.get("consecutiveErrors") or 0))


def print_last_failure(cli: str, job: dict) -> None:
    """The error and last output line of ``job``'s latest run, as the gateway recorded it."""
    runs = openclaw(cli, "cron", "runs", job["id"], "--limit", "1", check=False).get("entries") or []
    if runs:
        output = last_output(runs[0].get("summary") or "")
        print("  last failure of %s: %s%s" % (_job_name(job), runs[0].get("error") or runs[0].get("status"),
                                              "; output: " + output if output else ""))
