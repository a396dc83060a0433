"""What the task queue tests share: the in-process ones (test_submit.py, test_worker.py,
test_reclaim.py, test_admin.py, ...) and test_task_queue.py (processes).

    SERVER = start_server("tasks")                    # in setUpModule
    ctx = local_context(base_dir, "a", SERVER, tasks) # a Context for node "a"
    close_contexts(ctxs)                              # in tearDown

    SERVER = RedisServer(name="worker")               # or: one server per module, started by TaskCase
    class Work(TaskCase):
        shared_server = SERVER
        def test_x(self):
            a = self.ctx("a")                         # a Context per simulated node, closed after the test
"""

import os
import sys

try:
    from .base import RedisCase
    from .nodes import FAST, SCRIPTS, merge, write_config
    from .redis_server import RedisServer
except ImportError:  # loaded as a top-level module
    from base import RedisCase  # type: ignore[no-redef]
    from nodes import FAST, SCRIPTS, merge, write_config  # type: ignore[no-redef]
    from redis_server import RedisServer  # type: ignore[no-redef]

if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from distnode.core import config  # noqa: E402
from distnode.core import log as log_mod  # noqa: E402
from distnode.core import keys  # noqa: E402
from distnode.core import local_state  # noqa: E402
from distnode.run.context import Context  # noqa: E402
from distnode.tasks import admin  # noqa: E402
from distnode.tasks import routes  # noqa: E402
from distnode.tasks import worker  # noqa: E402

# Handlers both suites use: payload echoed back, success, failure with "boom" on stderr and exit 3.
HANDLERS = {
    "echo": [sys.executable, "-c", "import sys; sys.stdout.write(sys.stdin.read())"],
    "true": ["true"],
    "fail": ["sh", "-c", "echo boom >&2; exit 3"],
}
# ... and those the in-process tests add: fails its first attempt; prints its environment's task fields.
TASK_HANDLERS = dict(
    HANDLERS,
    flaky=["sh", "-c", 'if [ "$TASK_ATTEMPT" = 1 ]; then echo not yet >&2; exit 1; fi; echo "ok $TASK_ATTEMPT"'],
    env=["sh", "-c", 'echo "$TASK_ID $TASK_TYPE $TASK_ATTEMPT $TASK_MAX_ATTEMPTS $NODE_ID"'],
)


def drop_env_overrides() -> None:
    """Drop the REDIS_*/OPENCLAW_NODE_ID overrides from this process's environment, so that the
    in-process Contexts read only their config files."""
    for env_name in config.ENV_OVERRIDES:
        os.environ.pop(env_name, None)


def start_server(name: str) -> RedisServer:
    """A fresh redis-server, the environment's overrides dropped first (drop_env_overrides)."""
    drop_env_overrides()
    return RedisServer(name=name).start()


def local_context(base_dir: str, node_id: str, server, tasks: dict) -> Context:
    """An in-process task_queue Context for ``node_id`` on ``server``, config and logs under ``base_dir``."""
    write_config(os.path.join(base_dir, "config"), merge(FAST, {
        "node": {"id": node_id}, "redis": {"host": server.host, "port": server.port}, "tasks": tasks}))
    cfg = config.load(os.path.join(base_dir, "config"), os.path.join(base_dir, "logs"))
    return Context("task_queue", cfg, log_mod.for_config("task_queue", cfg, console=None), {"args": []})


def close_contexts(ctxs) -> None:
    """Close each Context's Redis connection and its log file."""
    for ctx in ctxs:
        ctx.close()
        ctx.log.close()


class TaskCase(RedisCase):
    """A RedisCase whose tests drive the task queue in-process, one Context per simulated node,
    so they can stop a worker between two steps (claimed, not finished) the way a crash would."""

    @classmethod
    def setUpClass(cls) -> None:
        drop_env_overrides()
        super().setUpClass()

    def setUp(self) -> None:
        super().setUp()
        self.ctxs = []
        self.addCleanup(close_contexts, self.ctxs)  # runs before self.tmp is removed

    def ctx(self, node_id: str, **overrides) -> Context:
        """A Context for node ``node_id`` with TASK_HANDLERS and no retry backoff unless given."""
        base = os.path.join(self.tmp, "%s-%d" % (node_id, len(self.ctxs)))
        settings = dict({"handlers": TASK_HANDLERS, "backoff_base_s": 0, "reclaim_grace_s": 0}, **overrides)
        ctx = local_context(base, node_id, self.server, settings)
        self.ctxs.append(ctx)
        return ctx

    def claim(self, ctx) -> worker.Task:
        task, _, _ = worker.claim(ctx, routes.worker_streams(ctx), read_new=True)
        self.assertIsNotNone(task, "nothing to claim")
        return task

    def make_leader(self, node_id: str = "leader", epoch: int = 7) -> Context:
        """A Context for ``node_id`` holding the lease of ``epoch`` with a confirmed term."""
        ctx = self.ctx(node_id)
        self.server.command("SET", keys.leader(), node_id, "PX", 60000)
        self.server.command("SET", keys.epoch(), epoch)
        self.server.command("SET", keys.heartbeat(node_id), "1", "PX", 60000)
        self.server.command("HSET", keys.term(), "node", node_id, "epoch", epoch, "confirmed", "1",
                            "instance", local_state.instance_token(ctx.cfg.run_dir, node_id))
        return ctx

    def state(self, task_id: str) -> dict:
        return admin.status(self.ctxs[0], task_id)

    def zcard(self, state: str) -> int:
        return self.server.command("ZCARD", keys.task_index(state))

    def lapse(self, task_id: str) -> None:
        """The attempt lease lapses, as Redis lets it when its worker stopped renewing for
        node.heartbeat_ttl (a claim in these tests runs no handler, so nothing renews it)."""
        self.server.command("DEL", keys.task_lease(task_id))
        self.server.command("HSET", keys.task(task_id), "lease_until_ms", 0)
