"""What ``./start-node.sh`` runs (through ``node_setup.py``): install, uninstall, status of this node.

``main(description, argv)`` is the whole ``main()`` of node_setup.py. Guarantees:
- a failed preflight changes nothing: config, the log dir, Redis and the gateway are
  checked before the node registers, and the cron jobs (``run/cron.py``) are added
  only after its first heartbeat;
- a password set only in this shell's REDIS_PASSWORD stops the install with exit 2
  when cron jobs would run: they run in the gateway's environment and never see it;
- every expected fault is one line on stderr and an exit code from ``core/exits.py``
  (0 ok, 1 Redis, the gateway or a job's first run failed, 2 bad config or usage,
  3 unexpected: its traceback goes to ``node_setup.log`` in the log dir, 130 Ctrl-C);
  output cut short by its reader (``--status | head``) costs the output only.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import traceback

from distnode.core import config as config_mod
from distnode.core import defaults
from distnode.core import exits
from distnode.core.errors import ConfigError, SetupError, UsageError
from distnode.run import cli
from distnode.run import commands
from distnode.run import cron
from distnode.run import jobs

PROG = "start-node.sh"
TOTAL_STEPS = 7  # of install
FLAGS = cli.without("--print-config", "--loop", "--json", "--quiet")

NO_OPENCLAW_HELP = """\
          Without OpenClaw, run every job of this node in one process (until Ctrl-C or SIGTERM,
          then it leaves the cluster gracefully):
              {cmd}
          To keep it running, start that from systemd or tmux, or:
              nohup {cmd} >/dev/null 2>&1 &
          Install OpenClaw and run ./start-node.sh again to use cron jobs instead."""


def run_script(flags: dict, script: str, *args, wait_s: float = 0) -> dict:
    """Run ``scripts/<script> args --json --quiet``; its JSON result, or SetupError with its one line.
    ``wait_s``: how long the script may wait besides its own work (deregister, for a running tick)."""
    argv = [sys.executable, os.path.join(cron.SCRIPTS_DIR, script), *args, "--json", "--quiet"]
    proc = subprocess.run(argv + cron.dir_flags(flags), capture_output=True, text=True,
                          timeout=defaults.SCRIPT_RUN_TIMEOUT_S + wait_s)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or ["%s exited %d" % (script, proc.returncode)]
        line = lines[-1]
        for prefix in (script + ": ", "error: "):  # "node_manager.py: error: Redis unreachable: ..."
            if line.startswith(prefix):
                line = line[len(prefix):]
        passed = (exits.FAILED, exits.BAD_CONFIG, exits.INTERNAL)  # the step's own verdict; any other: FAILED
        raise SetupError(line, proc.returncode if proc.returncode in passed else exits.FAILED)
    out = proc.stdout.strip().splitlines()
    return json.loads(out[-1]) if out else {}


def step(number: int, name: str, text: str) -> None:
    print("[%d/%d] %-9s %s" % (number, TOTAL_STEPS, name, text), flush=True)


# -- install ---------------------------------------------------------------------

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
                         "run chmod 600 %s, then run ./start-node.sh again" % (path, path), exits.BAD_CONFIG)
    if in_file != os.environ["REDIS_PASSWORD"]:
        print("          warning: REDIS_PASSWORD differs from the password in %s; the cron jobs will use "
              "the file's" % path)
    else:
        print("          note: the cron jobs read the password from %s, not from REDIS_PASSWORD" % path)


def install(cfg, flags: dict) -> int:
    """Preflight, register, one heartbeat, then this node's cron jobs (or how to run without them)."""
    cli = cron.find_openclaw()
    jobs = preflight(cfg, flags, cli)
    join(cfg, flags)
    if not cli:
        step(7, "cron", "skipped: `openclaw` is not on PATH")
        words = ["./start-node.sh", "--foreground"] + cron.dir_flags(flags)
        print(NO_OPENCLAW_HELP.format(cmd=" ".join(shlex.quote(w) for w in words)))
        return exits.OK
    step(7, "cron", "installing %d jobs" % len(jobs))
    ids = cron.install_jobs(cli, cfg.node_id, jobs)
    cron.first_run(cli, ids["heartbeat"])
    print("done: node %s runs under OpenClaw cron. See ./start-node.sh --status; "
          "remove with ./start-node.sh --uninstall" % cfg.node_id)
    return exits.OK


def preflight(cfg, flags: dict, cli) -> list:
    """Steps 1-4, which change nothing: interpreter, config, Redis, gateway. Returns the planned jobs."""
    step(1, "python", "%s (%s)" % (sys.executable, sys.version.split()[0]))
    step(2, "config", "node %s, config %s, logs %s" % (cfg.node_id, os.path.abspath(cfg.config_dir),
                                                       os.path.abspath(cfg.log_dir)))
    for warning in cfg.warnings:
        print("          warning: %s" % warning)
    check_password_source(cfg, cli)
    jobs = cron.plan(cfg, flags)
    info = run_script(flags, "node_manager.py", "check")
    step(3, "redis", "%s answers, credentials accepted, version %s" % (info["redis"], info["redis_version"]))
    step(4, "openclaw", cron.check_gateway(cli) if cli else "not on PATH: the node will run without cron jobs")
    return jobs


def join(cfg, flags: dict) -> None:
    """Steps 5-6: register the node, then one heartbeat with the script the heartbeat job runs."""
    run_script(flags, "node_manager.py", "register")
    step(5, "register", "node %s is a member (status online)" % cfg.node_id)
    beat = run_script(flags, "heartbeat.py")
    step(6, "heartbeat", "%s: hb:%s set for %ss (Redis time %.3f)" % (
        "ok" if beat.get("ok") else "?", cfg.node_id, cron.seconds_text(cfg.heartbeat_ttl_s),
        beat.get("time", 0)))


# -- uninstall and status ----------------------------------------------------------

def uninstall(cfg, flags: dict) -> int:
    """Remove this node's cron jobs, then leave the cluster gracefully."""
    cli = cron.find_openclaw()
    if cli:
        print("%d cron job(s) of node %s removed" % (cron.remove_jobs(cli, cfg.node_id), cfg.node_id))
    else:
        print("`openclaw` is not on PATH: no cron jobs to remove")
    # a cron tick of this node still running (the worker's finishing its task) is waited for
    wait_s = max(job.run_max_s(cfg) for job in jobs.JOBS)
    print("node %s leaves the cluster once no tick of it runs (a task running now is finished first: up to %.0fs)"
          % (cfg.node_id, wait_s), flush=True)
    left = run_script(flags, "node_manager.py", "deregister", wait_s=wait_s)
    print("node %s left the cluster (lease released: %s, tasks handed back: %s)" % (
        cfg.node_id, "yes" if left.get("released_lease") else "no", left.get("tasks_handed_back", 0)))
    return exits.OK


def status(cfg, flags: dict) -> int:
    """The cron jobs' last runs, then ``node_manager.py status``; the first failure's exit code."""
    cli, code = cron.find_openclaw(), exits.OK
    if not cli:
        print("cron jobs: `openclaw` is not on PATH (a foreground node shows up in the table below)")
    else:
        try:
            cron.print_jobs(cli, cron.our_jobs(cli, cfg.node_id), cfg.node_id)
        except SetupError as exc:
            sys.stderr.write("%s: %s\n" % (PROG, exc.line()))
            code = exc.exit_code
    print()
    argv = [sys.executable, os.path.join(cron.SCRIPTS_DIR, "node_manager.py"), "status", "--quiet"]
    result = subprocess.run(argv + cron.dir_flags(flags), timeout=defaults.SCRIPT_RUN_TIMEOUT_S)
    return code or result.returncode


COMMANDS = {"install": install, "uninstall": uninstall, "status": status}


# -- main ----------------------------------------------------------------------------

def main(description: str, argv=None) -> int:
    """The ``main()`` of node_setup.py: ``description`` is its --help text. stdout and stderr are
    guarded as every script's are (``cli.guarded``): `--status | head` costs the output only."""
    return cli.guarded(_main, description, sys.argv[1:] if argv is None else argv)


def _main(description: str, args: list) -> int:
    try:
        flags = cli.parse_flags(args, FLAGS)
        if flags.get("--help"):
            print(cli.format_help("node_setup.py", description, FLAGS, "{%s} [options]" % ",".join(COMMANDS)))
            return exits.OK
        name, words = commands.command_line(flags["args"], COMMANDS)
        if words:
            raise UsageError("unexpected word %s after %s (usage: %s [options])" % (
                cli.shown(words[0]), name, name))
        cfg = config_mod.load(flags.get("--config-dir", ""), flags.get("--log-dir", ""))
        cfg.check_log_dir(probe=True)  # before any step: every job would fail on it after the node registered
    except (UsageError, ConfigError) as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc.line()))
        return exc.exit_code
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    try:
        return COMMANDS[name](cfg, flags)
    except SetupError as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc.line()))
        return exc.exit_code
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except Exception as exc:  # the top of main(): the traceback goes to the log file, one line to stderr
        return _unexpected(cfg, exc)


def _unexpected(cfg, exc: Exception) -> int:
    path = os.path.join(cfg.log_dir, "node_setup.log")
    try:
        os.makedirs(cfg.log_dir, exist_ok=True)
        with open(path, "a") as fh:
            fh.write("%s unexpected error:\n%s" % (time.strftime("%Y-%m-%dT%H:%M:%S"), traceback.format_exc()))
    except OSError:
        path = "not written: %s is not writable" % cfg.log_dir
    sys.stderr.write("%s: unexpected error: %s: %s (traceback in %s)\n" % (PROG, type(exc).__name__, exc, path))
    return exits.INTERNAL
