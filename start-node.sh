#!/usr/bin/env bash
# Start, inspect or remove this machine's distributed-node; or watch a demo cluster.
#
#   ./start-node.sh                 check Python, config and Redis, register, run one heartbeat,
#                                   then install this node's OpenClaw cron jobs (idempotent)
#   ./start-node.sh --foreground    run every job of this node in one process until SIGTERM
#                                   (hosts without OpenClaw), then leave the cluster gracefully
#   ./start-node.sh --status        the cron jobs' last runs and the cluster table
#   ./start-node.sh --uninstall     remove this node's cron jobs and leave the cluster
#   ./start-node.sh demo            three nodes on a private Redis: election, tasks, failover
#
# Options (all modes but demo): --config-dir DIR, --log-dir DIR (or env
# OPENCLAW_DISTRIBUTED_CONFIG_DIR / OPENCLAW_DISTRIBUTED_LOG_DIR). Env DN_PYTHON picks the
# interpreter (default: python3 on PATH).
# Exit codes: 0 ok, 1 Redis / gateway / a job failed, 2 bad config or usage.
set -euo pipefail

SKILL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="start-node.sh"

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

die() {  # die CODE MESSAGE: one line on stderr
  echo "$PROG: $2" >&2
  exit "$1"
}

# The interpreter, as an absolute path, if it is Python 3.9 or newer.
find_python() {
  local candidate="${DN_PYTHON:-python3}" path version
  path="$(command -v "$candidate" 2>/dev/null)" \
    || die 2 "$candidate not found: install Python 3.9 or newer (or set DN_PYTHON to one)"
  version="$("$path" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
    || die 2 "$path does not run: install Python 3.9 or newer (or set DN_PYTHON to one)"
  "$path" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
    || die 2 "$path is Python $version; this skill needs Python 3.9 or newer (set DN_PYTHON to one)"
  echo "$path"
}

mode="install"
args=()
while (($#)); do
  case "$1" in
    --foreground) mode="foreground" ;;
    --uninstall) mode="uninstall" ;;
    --status) mode="status" ;;
    demo) mode="demo"; shift; args+=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    --config-dir|--log-dir)
      (($# >= 2)) || die 2 "$1 needs a value (DIR)"
      args+=("$1" "$2"); shift ;;
    --config-dir=*|--log-dir=*) args+=("$1") ;;
    *) die 2 "unknown argument '$1' (see ./start-node.sh --help)" ;;
  esac
  shift
done

PY="$(find_python)"
scripts="$SKILL_DIR/scripts"
case "$mode" in
  foreground)
    # fail fast on a bad config or an unreachable Redis instead of looping on errors
    "$PY" "$scripts/node_manager.py" check --quiet ${args[@]+"${args[@]}"} || exit $?
    exec "$PY" "$scripts/node_manager.py" run ${args[@]+"${args[@]}"} ;;
  # the demo is built on the test harness (private redis-server, fetched when missing),
  # so it lives beside it, outside the stdlib-only runtime in scripts/
  demo) exec "$PY" "$SKILL_DIR/tests/support/demo.py" ${args[@]+"${args[@]}"} ;;
  *) exec "$PY" "$scripts/node_setup.py" "$mode" ${args[@]+"${args[@]}"} ;;
esac
