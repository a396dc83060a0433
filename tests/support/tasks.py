"""What the task queue tests share: test_taskq.py (in-process) and test_task_queue.py (processes).

    SERVER = start_server("taskq")                    # in setUpModule
    ctx = local_context(base_dir, "a", SERVER, tasks) # a runner.Context for node "a"
    close_contexts(ctxs)                              # in tearDown
"""

import os
import sys

try:
    from .nodes import FAST, SCRIPTS, merge, write_config
    from .redis_server import RedisServer
except ImportError:  # loaded as a top-level module
    from nodes import FAST, SCRIPTS, merge, write_config  # type: ignore[no-redef]
    from redis_server import RedisServer  # type: ignore[no-redef]

if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from distnode.core import config  # noqa: E402
from distnode.core import log as log_mod  # noqa: E402
from distnode.run import runner  # noqa: E402

# Handlers both suites use: payload echoed back, success, failure with "boom" on stderr and exit 3.
HANDLERS = {
    "echo": [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
    "true": ["true"],
    "fail": ["sh", "-c", "echo boom >&2; exit 3"],
}


def start_server(name: str) -> RedisServer:
    """A fresh redis-server; first drops the REDIS_*/OPENCLAW_NODE_ID overrides from this process's
    environment, so that the in-process Contexts read only their config files."""
    for env_name in config.ENV_OVERRIDES:
        os.environ.pop(env_name, None)
    return RedisServer(name=name).start()


def local_context(base_dir: str, node_id: str, server, tasks: dict) -> runner.Context:
    """An in-process task_queue Context for ``node_id`` on ``server``, config and logs under ``base_dir``."""
    write_config(os.path.join(base_dir, "config"), merge(FAST, {
        "node": {"id": node_id}, "redis": {"host": server.host, "port": server.port}, "tasks": tasks}))
    cfg = config.load(os.path.join(base_dir, "config"), os.path.join(base_dir, "logs"))
    return runner.Context("task_queue", cfg, log_mod.for_config("task_queue", cfg, console=None), {"args": []})


def close_contexts(ctxs) -> None:
    """Close each Context's Redis connection and its log file."""
    for ctx in ctxs:
        ctx.close()
        ctx.log.close()
