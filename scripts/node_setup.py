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

import sys

from distnode.run import installer


def main(argv=None) -> int:
    return installer.main(__doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
