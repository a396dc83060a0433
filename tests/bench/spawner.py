"""Run commands as child processes, alternating, and time each one: wall time and peak memory.

Run as ``python -S -E spawner.py PLAN_FILE`` by the suite, never imported. It
imports nothing beyond ``os`` and ``sys`` (no json, no site) so that its own
resident set stays below any Python child's: Linux reports a child's peak
memory as at least its parent's size at the fork, so a large parent would
hide the difference between small children.

Plan file: first line ``ROUNDS WARMUP``, then the commands separated by
``\x1e`` bytes, each the name and the argv words separated by NUL bytes. Round r runs every command once,
the order rotated by r, so no command always runs first or after a given one.
Output, one line per run after the warm-up rounds:
``ROUND NAME WALL_MS MAXRSS_KB EXIT_CODE``, and last ``spawner_hwm_kb N``.
"""

import os
import sys
import time


def main() -> int:
    with open(sys.argv[1], "rb") as fh:
        head, _, body = fh.read().decode("utf-8").partition("\n")
    rounds, warmup = (int(word) for word in head.split())
    commands = [record.split("\0") for record in body.split("\x1e") if record]
    env = dict(os.environ)
    quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]  # our stdout carries the results
    out = []
    clock = time.perf_counter
    for rnd in range(warmup + rounds):
        shift = rnd % len(commands)
        for name, *argv in commands[shift:] + commands[:shift]:
            started = clock()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
            _pid, status, usage = os.wait4(pid, 0)
            wall_ms = (clock() - started) * 1000
            if rnd >= warmup:
                code = os.waitstatus_to_exitcode(status)
                out.append("%d %s %.3f %d %d" % (rnd - warmup, name, wall_ms, usage.ru_maxrss, code))
    out.append("spawner_hwm_kb %s" % _own_peak_kb())
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _own_peak_kb() -> str:
    try:
        with open("/proc/self/status") as fh:
            return ([line.split()[1] for line in fh if line.startswith("VmHWM:")] or ["0"])[0]
    except OSError:  # not Linux
        return "0"


if __name__ == "__main__":
    sys.exit(main())
