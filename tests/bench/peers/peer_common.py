"""What the redis-py peers share: the same inputs as the project's scripts, read the same cheap way.

The peers are the project's tick scripts written the way a redis-py user
would write them, with the same care for start-up cost (no argparse, no
logging package), so that the comparison is about the client library. They
read ``--config-dir``/``--log-dir``, ``config.json``, REDIS_HOST/REDIS_PORT
and OPENCLAW_NODE_ID, and keep their keys under ``bench:peer:`` so they never
touch the project's own keys.
"""

import json
import os
import sys
import time

PREFIX = "bench:peer:"


def settings(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    flags = {}
    for i, word in enumerate(argv):
        if word in ("--config-dir", "--log-dir") and i + 1 < len(argv):
            flags[word] = argv[i + 1]
    with open(os.path.join(flags.get("--config-dir", "."), "config.json")) as fh:
        cfg = json.load(fh)
    node = cfg.get("node", {})
    return {"node_id": os.environ["OPENCLAW_NODE_ID"], "host": os.environ.get("REDIS_HOST", "127.0.0.1"),
            "port": int(os.environ.get("REDIS_PORT", "6379")),
            "interval_s": node.get("heartbeat_interval", 10), "ttl_s": node.get("heartbeat_ttl", 30),
            "log_dir": flags.get("--log-dir", ".")}


def log(settings: dict, script: str, text: str) -> None:
    os.makedirs(settings["log_dir"], exist_ok=True)
    line = "%s INFO node=%s %s: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), settings["node_id"],
                                         script, text)
    fd = os.open(os.path.join(settings["log_dir"], script + ".log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
