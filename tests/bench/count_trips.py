"""Run a project script as ``__main__`` and write how many round trips its client made
and how many commands it sent (``TRIPS COMMANDS`` in the file named by BENCH_TRIPS_FILE).

    python count_trips.py scripts/heartbeat.py --config-dir ... (env BENCH_TRIPS_FILE=path)

The client-side count (every ``Connection._round_trip``: one write, then its
replies, a connection's handshake included) is the cross-check of the
server-side count the suite takes from ``INFO stats``; commands are those
passed to ``Connection.request`` (handshake commands excluded). The script
runs unchanged; only the counters are added.
"""

import os
import runpy
import sys


def main() -> int:
    script = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path.insert(0, os.path.dirname(script))
    from distnode.redis import connection
    trips, sent = [0], [0]
    request, round_trip = connection.Connection.request, connection.Connection._round_trip

    def counted(self, commands, *args, **kwargs):
        commands = list(commands)
        sent[0] += len(commands)
        return request(self, commands, *args, **kwargs)

    def counted_trip(self, commands, *args, **kwargs):
        trips[0] += 1
        return round_trip(self, commands, *args, **kwargs)

    connection.Connection.request = counted
    connection.Connection._round_trip = counted_trip
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        with open(os.environ["BENCH_TRIPS_FILE"], "w") as fh:
            fh.write("%d %d\n" % (trips[0], sent[0]))
    return code


if __name__ == "__main__":
    sys.exit(main())
