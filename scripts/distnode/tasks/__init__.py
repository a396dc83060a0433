"""The task queue: submit tasks, run them on any node (or one), survive workers that die.

Redis Streams deliver; a hash per task is the truth. Every change of state is
one Lua script (``lua/task_*.lua``), so a crash between any two steps of a client
leaves each task in exactly one of the states below, from where the system
moves it on without help.

State machine (``openclaw:tasks:task:<id>``, field ``state``; each state has
its index ``openclaw:tasks:state:<state>``, a sorted set)::

    from     to       by
    (new)    pending  submit
    pending  running  claim by a worker (attempts + 1, runs + 1, new token)
    running  done     finish, handler exited 0
    running  pending  finish failed or reclaimed, attempts left: a new entry now,
                      or the delayed zset until the backoff is over
    running  dead     finish failed or reclaimed, attempts used up
    running  pending  hand back (node leaving): attempts - 1, new entry
    pending  pending  due retry promoted, lost entry replaced, or a delivered but
                      unstarted entry handed back: a new entry each time
    dead     pending  retry (CLI): attempts reset, new entry

- ``pending``: waiting. Either it has a live stream entry (field ``entry``,
  body ``{task: <id>}``) in its stream (see Routing), or it waits for a
  retry in ``openclaw:tasks:delayed`` (score = due time) and gets a new
  entry when due (any worker's tick promotes due retries).
- ``running``: a worker took it (``worker``, ``token`` = ``<runs>@<node>``,
  ``deadline_ms`` = start + timeout; the running index is scored by the
  deadline). The entry stays in the worker's pending entries list (PEL)
  until the outcome is stored.
- ``done``: the result (stdout, capped) is stored; ``dead``: attempts used up,
  the last error is stored and a copy goes to ``openclaw:tasks:dead``. Either
  end also fills the task's end latch (``keys.task_ended``) in the same
  script, which ``submit --wait`` blocks on; leaving done/dead deletes it.

Transitions, each atomic:
- submit (task_submit): hash + pending index + entry (+ idempotency key).
- claim (task_claim, after XREADGROUP in the same round trip): the first
  entry in this worker's PEL whose task is pending -> running; the attempt
  count and the run count go up and a fresh token names the attempt. The
  claim's nonce is recorded on the task (``claim_nonce``): the same claim
  sent again finds that attempt instead of starting another.
- finish (task_finish): only if the token is still the task's: XACK and
  done, or the retry path (pending + delayed, or dead). A worker that finishes
  an attempt that was reclaimed meanwhile changes nothing ("stale").
- reclaim (task_reclaim, leader only, fenced): PEL entries of consumers whose
  heartbeat key is gone, and entries idle past timeout + ``reclaim_grace_s``
  on live ones, are XCLAIMed to the leader, XACKed, and their task takes the
  retry path (a started attempt counts as failed). Running tasks past
  deadline + grace are found through the running index even when their entry
  was acked or lost; pending tasks whose entry cannot be delivered any more
  get a new one.
- hand back (task_release): a leaving node's delivered entries go back to the
  queue with new entries; its running attempts are not counted as failed.

Routing (which stream a task goes to, which streams a worker reads): routes.py.

Retries never reuse an entry: the old one is acked and a new one is added, so
a stream entry belongs to one delivery. ``XTRIM`` only ever removes entries
every group has delivered and acknowledged (the task scripts trim from the
head, up to the oldest undelivered or unacknowledged entry), so
``stream_maxlen`` never drops a task that is still on its way; a stream may
hold more while that many tasks are in flight.

Crash windows and what recovers them:
- worker dies, hangs or is cut off after the claim: its entry is in its PEL
  with the task ``running`` under an attempt lease (``keys.task_lease``, TTL
  ``node.heartbeat_ttl``, renewed by the worker while the handler runs, see
  ``handler.attempt_lease``). Once the lease lapsed in Redis, its node's next tick
  (same instance) counts the attempt as failed (task_claim), or the leader's
  reclaim does; never earlier, whatever ``hb:<id>`` says. The handler's
  supervisor has killed the handler before then (spawn.Lease).
- a ``running`` task whose entry was acked or lost: the running index sweep.
- a ``pending`` task whose entry was trimmed or deleted by hand: the pending
  sweep gives it a new one (it checks the oldest pending tasks each tick).
- a reply lost on the wire: submit reuses its task id (a retry finds the
  task and reports it), finish is retried and finds its own stored outcome,
  and a claim is sent again with its nonce by the same process (the tick's
  retry, or the loop's next tick) and gets its own attempt back, its lease
  renewed (worker.claim). A ``work`` process that ends before any claim gets
  through, or gets one through only after ``node.heartbeat_ttl``, leaves that
  attempt to its lease: it counts as interrupted once the lease lapsed, like
  a worker killed after its claim.

Guarantees: at-least-once execution; every task ends ``done`` or ``dead``
(and stays findable for ``done_ttl_s``); an attempt that lost its claim never
overwrites the current one; a running attempt is moved only once its lease
lapsed, after its handler was killed (docs/en/tasks.md, "A handler never outlives its attempt"). Not guaranteed: exactly-once (a handler may run
twice when a worker dies or hangs after starting it: handlers get TASK_ID and
TASK_ATTEMPT to be idempotent), order across workers, or progress for tasks
targeted at a node that never comes back or requiring labels no node offers
(they wait, pending, and are never lost).

The modules, one concern each (none imports another's private names, no cycle):

- common.py: names, the scripts' common KEYS/ARGV header, refusals;
- routes.py: which stream a task goes to, which streams a worker reads;
- submit.py: submit (checked first), replicas confirming it, ``--wait``;
- worker.py: the worker tick: claim, run, finish; hand back when leaving;
- handler.py: one attempt's handler (argv or agent turn) under its lease;
- reclaim.py: the leader's fenced sweep;
- admin.py: status, list, stats, retry, purge;
- agent_task.py: the built-in ``agent`` type (one OpenClaw agent turn).
"""
