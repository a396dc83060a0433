"""Internal tuning values: each one's single home, its unit in its name.

These are not settings a user writes in ``config.json`` (those are records in
``core/settings.py``); they are the numbers the code would otherwise repeat or
leave bare. This module imports nothing and holds only constants, so any
module may import it at no cost beyond the first (a tick already loads it
through the settings).
"""

# -- Redis client --
REDIS_TIMEOUT_S = 5  # connect and socket timeout when nobody names one (also the settings' default)
REDIS_MAX_REPLY_BYTES = 64 * 1024 * 1024  # what one reply may cost (also redis.max_reply_bytes' default)
# a task record's fields besides its payload and result (error text, ids, times: ~16 KiB at most):
# redis.max_reply_bytes keeps this much room above tasks.max_payload_bytes + tasks.result_max_bytes
TASK_RECORD_OTHER_BYTES = 64 * 1024

# -- reading config.json and secrets.json (hostile files are refused, never crash) --
CONFIG_MAX_BYTES = 1 << 20  # larger files are refused unread (no real one is 20 KB)
JSON_MAX_DEPTH = 32  # objects/arrays nested deeper are refused (no setting needs 4)
JSON_DATA_MAX_DEPTH = 100  # the same for data a user hands over: a task payload, a kv value
JSON_MAX_INT_DIGITS = 20  # longer JSON integers are refused before Python converts them
SECRET_MIN_CHARS = 4  # a secret string at least this long is also cut out of any message text

# -- reading a socket or a pipe --
READ_CHUNK_BYTES = 65536  # one recv()/read() (procs/supervisor.py keeps its own copy: it imports nothing)

# -- membership --
SUSPECT_AFTER_INTERVALS = 1.5  # a beat older than this many heartbeat intervals: the node is suspect

# -- failover (cluster/failover.py) --
FAILOVER_PAGE_MEMBERS = 2000  # members per sweep page (one script run each): bounds Redis's time in one script

# -- the Redlock store (cluster/redlock_store.py) --
REDLOCK_ATTEMPTS = 3  # per step; a step that wins no quorum in these says no_quorum and the next tick tries again
REDLOCK_RETRY_DELAY_S = (0.05, 0.2)  # random delay between attempts (low, high): desynchronises candidates
REDLOCK_ATTEMPT_LOCK_POLL_S = 0.01  # how often a step waiting for its node's other attempt looks again
REDLOCK_DRIFT_EXTRA_MS = 2  # added to lease_ms * election.clock_drift_factor, as the Redlock spec does

# -- the task queue (tasks/) --
TASK_CLAIM_SCAN_ENTRIES = 16  # PEL entries a claim examines per stream
TASK_PROMOTE_MAX_TASKS = 100  # due retries one fetch promotes
TASK_RECLAIM_BATCH_ITEMS = 500  # stream entries or tasks one reclaim call examines
TASK_RECLAIM_MAX_CALLS = 5  # reclaim calls per leader tick while batches come back full
TASK_PURGE_BATCH_TASKS = 500  # tasks one purge call examines
TASK_LEASE_RENEW_FRACTION = 1 / 3.0  # of a task lease's ttl: a renewal every third of it
TASK_LEASE_MARGIN_FRACTION = 0.2  # of the ttl: the handler is killed this much before Redis lets the lease go
# how long a task's end latch (keys.task_ended) stays after the end (never past the record's tasks.done_ttl_s):
# a waiter needs it only between reading the state and blocking; a later one reads the state
TASK_END_LATCH_TTL_MS = 60 * 1000

# -- child processes (procs/spawn.py) --
CHILD_STOP_POLL_S = 0.1  # how often an owner checks its stop request (the supervisor waits on events)
CHILD_SUPERVISOR_SLACK_S = 10.0  # the owner's backstop past deadline + grace, should the supervisor hang
CHILD_RENEW_RETRY_FRACTION = 1 / 4.0  # of a lease's renewal period: a failed renewal is tried again this much later

# -- polling a key until it changes or a deadline (state_sync.py watch) --
WAIT_POLL_FIRST_S = 0.05  # the first pause; it doubles up to WAIT_POLL_MAX_S
WAIT_POLL_MAX_S = 1.0

# -- shared state (state_sync.py) --
STATE_KEY_MAX_CHARS = 200
STATE_VALUE_MAX_BYTES = 1024 * 1024
STATE_LIST_LIMIT = 1000  # names `state_sync.py list` shows unless --limit says otherwise
STATE_WATCH_TIMEOUT_S = 60.0  # `state_sync.py watch` gives up after this unless --timeout says otherwise

# -- runners --
RETRY_JITTER_FRACTION = 0.5  # a retry waits node.retry_delay plus up to this fraction of it again
REQUESTS_PER_ATTEMPT = 2  # a script call's attempt may send two requests: EVALSHA, then EVAL on NOSCRIPT
TICK_MAX_REQUESTS = 8  # requests one attempt of a Redis-only tick sends (failover's sweep and reclaims: most)
OP_RECORD_SLACK_S = 60.0  # a write's record (keys.kv_op, keys.task_op) outlives its command's retries by this
JOB_STOP_SLACK_S = 5.0  # a stopping job may take tick_budget_s + socket_timeout + this to end
SIGNAL_POLL_S = 0.5  # how often the foreground runner's main thread looks for a stop request

# -- the foreground runner's worker gate --
HEARTBEAT_FAILURES_BEFORE_PAUSE = 2  # failed beats in a row (retries included) that pause the worker
FIRST_BEAT_WAIT_S = 5.0  # the worker's first tick waits this long for the first beat rather than skip

# -- node_manager.py --
CLOCK_SKEW_WARN_S = 1.0  # `check` warns when this machine's clock is further than this from Redis's
# a --loop or --foreground process holding a job lock never ends by itself, but may be on its way out:
# deregister gives it this long (a cron tick gets its job's run_max_s, run/jobs.py)
DEREGISTER_LOCK_WAIT_S = 2.0
LOCK_POLL_S = 0.1  # how often deregister looks again for a job lock held by another process

# -- ./start-node.sh (run/installer.py, run/cron.py) --
OPENCLAW_CLI_TIMEOUT_S = 90.0  # one call of the openclaw CLI (cron add, list, rm)
SCRIPT_RUN_TIMEOUT_S = 120.0  # one run of the project's own script (a check, the status at the end)
# A living follower steps this long past the PTTL its last step saw, counted from when that step's reply
# arrived: Redis deems a key expired only once its clock is past the expiry, and a step that still finds
# it (a local clock running fast) waits again (cluster/election_job.py).
ELECTION_LAPSE_MARGIN_S = 0.002
