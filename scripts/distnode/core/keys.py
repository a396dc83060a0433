"""Every Redis key and channel name the project uses, in one place.

The first three are the seed's schema, which other tools may already read,
and must not change. Everything else lives under ``openclaw:cluster:`` or
``openclaw:tasks:``. Node ids are validated by the config loader
(``[A-Za-z0-9._-]{1,64}``), so they can never break a key apart.
"""

CLUSTER = "openclaw:cluster:"
TASKS = "openclaw:tasks:"


# -- the seed's schema (kept exactly) --
def nodes() -> str:
    """Hash: node id -> JSON record of the node."""
    return CLUSTER + "nodes"


def heartbeat(node_id: str) -> str:
    """String with TTL = heartbeat_ttl; present while the node is alive."""
    return "hb:" + node_id


def leader() -> str:
    """String: the leader's node id, with TTL = lease_ttl (the lease)."""
    return CLUSTER + "leader"


# -- added by this project --
def epoch() -> str:
    """Integer: the fencing epoch; INCR'd on every acquisition, never lowered."""
    return CLUSTER + "epoch"


def term() -> str:
    """Hash {node, instance, epoch, confirmed}: the leader's running term, written with the leader key,
    with the same TTL, and deleted with it. ``instance`` is the leading process's instance token (a
    second process with the same node id cannot renew, release or write through it); ``confirmed``
    is "1" once the term may act (at once, or after WAIT with ``election.min_replicas_acked``)."""
    return CLUSTER + "term"


def redlock_claim() -> str:
    """Hash {instance, epoch} on each Redlock instance (``redis.instances``), beside its leader key
    and with the same TTL: which process of the node holds the claim, and for which term (``epoch``
    is absent until the attempt that took the claim won its quorum). Releases match both."""
    return CLUSTER + "redlock-claim"


def server() -> str:
    """String: the run_id of the Redis server the last election step ran on. Replicated like any
    key, so on a promoted replica, or a server restarted from its files, it names another server:
    the master changed, and the election holds a bootstrap round (see lua/elect.lua)."""
    return CLUSTER + "server"


def bootstrap() -> str:
    """String with TTL: while it exists, nobody is elected (Redis had no epoch: new or wiped)."""
    return CLUSTER + "bootstrap"


def released(node_id: str) -> str:
    """String with TTL = lease: a node that just released the lease does not retake it at once."""
    return CLUSTER + "released:" + node_id


def events() -> str:
    """Capped stream of cluster events; also the pub/sub channel name."""
    return CLUSTER + "events"


def state() -> str:
    """Hash: the cluster snapshot the leader publishes (fenced): ``doc`` (the JSON document
    nodes mirror), ``content`` (it without version and time), ``epoch``, ``version``, ``updated``."""
    return CLUSTER + "state"


def kv(name: str) -> str:
    """Hash {value, version, updated}: one entry of the shared key-value store."""
    return CLUSTER + "kv:" + name


def kv_index() -> str:
    """Sorted set of kv entry names, all with score 0 so ``list --prefix`` is a ZRANGEBYLEX."""
    return CLUSTER + "kv-index"


def kv_version() -> str:
    """Integer: the last version handed out by the kv store (each write takes the next one)."""
    return CLUSTER + "kv-version"


def kv_channel() -> str:
    """Pub/sub channel announcing kv changes (message: the entry name)."""
    return CLUSTER + "kv-changes"


def kv_op(token: str) -> str:
    """String with a PX TTL: what one kv write (set, cas, delete) did, under the writer's operation
    token, so that the write sent again after a lost reply returns that instead of running twice."""
    return CLUSTER + "kv-op:" + token


def task_stream(node_id: str = "") -> str:
    """Stream of tasks: the shared one, or one node's own."""
    return TASKS + ("stream" if not node_id else "node:" + node_id)


def task(task_id: str) -> str:
    """Hash: one task's state, attempts, result or error, times."""
    return TASKS + "task:" + task_id


def task_dead() -> str:
    """Stream of dead-lettered tasks."""
    return TASKS + "dead"


def task_idempotency(key: str) -> str:
    """String: the task id already submitted under an idempotency key."""
    return TASKS + "idem:" + key


def task_index(state: str) -> str:
    """Sorted set of task ids in one state (pending, running, done, dead), scores in ms by Redis's clock.

    The score is the time of the last change, except for ``running``, where it
    is the attempt's deadline (start + timeout), so overdue attempts are a range.
    """
    return TASKS + "state:" + state


def task_delayed() -> str:
    """Sorted set of task ids waiting for a retry (score = due time, ms)."""
    return TASKS + "delayed"


def task_streams() -> str:
    """Set of every task stream that has a consumer group (the shared one, each node's, each route's)."""
    return TASKS + "streams"


def task_route(requirement: str) -> str:
    """Stream of tasks only nodes with every label of ``requirement`` may run ("gpu", "agent,gpu":
    sorted labels joined by ','; labels are [A-Za-z0-9._-], so the name cannot be ambiguous)."""
    return TASKS + "route:" + requirement


def task_ended(task_id: str) -> str:
    """List with a PX TTL (``defaults.TASK_END_LATCH_TTL_MS``, at most the record's): the task's final
    state (``done`` or ``dead``), pushed when it ends, deleted when it goes back to pending or is purged.
    ``submit --wait`` blocks on it (BRPOPLPUSH onto itself: every waiter wakes, the element stays)."""
    return TASKS + "ended:" + task_id


def task_lease(task_id: str) -> str:
    """String with a PX TTL: the running attempt's lease, ``<token> <instance token>``. Set at the claim,
    renewed by the worker while the handler runs; a running attempt is moved only once it lapsed."""
    return TASKS + "lease:" + task_id


def task_sweep() -> str:
    """Integer: where the leader's repair sweep of the pending index goes on (a rank; 0 = from the oldest)."""
    return TASKS + "sweep"


def task_routes() -> str:
    """Set of the requirements (as in ``task_route``) that have a stream: workers look here for
    the routes their labels qualify them for."""
    return TASKS + "routes"


def task_op(token: str) -> str:
    """String with a PX TTL: the task id one ``task_queue.py retry`` put back in the queue, under its
    operation token, so that the retry sent again after a lost reply reports that instead of refusing."""
    return TASKS + "op:" + token


TASK_GROUP = "workers"
