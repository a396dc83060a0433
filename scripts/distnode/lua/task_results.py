"""Decoders of the task scripts' replies (lua/task_*.lua headers give the shapes).

Each result type is built on first use, as in lua/results.py: a tick decodes one or two of them.
"""

from functools import partial

from distnode.lua.results import flag, id_list, result_type, text

FIELDS = {
    "TaskSubmit": "outcome task_id target_known",
    "TaskPrepare": "promoted routes next_due_ms",
    "ClaimedTask": "task_id type payload attempt max_attempts timeout_ms token stream entry",
    "TaskClaim": "task waiting interrupted",
    "TaskFinish": "outcome state token",
    "ReclaimNote": "task_id outcome reason",
    "TaskReclaim": "more notes",
    "TaskRetry": "outcome state",
    "TaskPurge": "deleted examined",
}
_task_type = partial(result_type, fields=FIELDS, module=__name__)


def __getattr__(name: str):
    """``task_results.TaskClaim`` and the like still name their types (PEP 562), built when first asked for."""
    if name in FIELDS:
        return _task_type(name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def task_submit(reply) -> "TaskSubmit":
    return _task_type("TaskSubmit")(text(reply[0]), text(reply[1]), reply[2] == 1)


def task_prepare(reply) -> "TaskPrepare":
    """``next_due_ms``: until the earliest delayed retry comes due (Redis's clock), None when there is none."""
    return _task_type("TaskPrepare")(int(reply[0]), [text(r) for r in reply[1]], None if reply[2] < 0 else reply[2])


def _claimed(task) -> "ClaimedTask":
    tid, ttype, payload, attempt, max_attempts, timeout_ms, token, stream, entry = task
    return _task_type("ClaimedTask")(text(tid), text(ttype), payload, int(attempt), int(max_attempts),
                                     int(timeout_ms), text(token), text(stream), text(entry))


def task_claim(reply) -> "TaskClaim":
    """``task`` None when nothing was started; ``interrupted`` [(task id, 'retry' | 'dead'), ...]."""
    task, waiting, flat = reply
    interrupted = [(text(flat[i]), text(flat[i + 1])) for i in range(0, len(flat), 2)]
    return _task_type("TaskClaim")(_claimed(task) if task else None, int(waiting), interrupted)


def task_finish(reply) -> "TaskFinish":
    make = _task_type("TaskFinish")
    if len(reply) > 1:
        return make(text(reply[0]), text(reply[1]), text(reply[2]))
    return make(text(reply[0]), "", "")


def task_reclaim(reply) -> "TaskReclaim":
    more, flat = reply
    note = _task_type("ReclaimNote")
    notes = [note(text(flat[i]), text(flat[i + 1]), text(flat[i + 2])) for i in range(0, len(flat), 3)]
    return _task_type("TaskReclaim")(more == 1, notes)


def task_retry(reply) -> "TaskRetry":
    return _task_type("TaskRetry")(text(reply[0]), text(reply[1]) if len(reply) > 1 else "")


def task_purge(reply) -> "TaskPurge":
    return _task_type("TaskPurge")(int(reply[0]), int(reply[1]))


def task_record(reply) -> dict:
    """{field: raw bytes value}; empty when the task has no record."""
    return {text(k): v for k, v in zip(reply[::2], reply[1::2])}


DECODERS = {
    "task_submit": task_submit, "task_prepare": task_prepare, "task_claim": task_claim,
    "task_finish": task_finish, "task_release": id_list, "task_reclaim": task_reclaim, "task_renew": flag,
    "task_retry": task_retry, "task_purge": task_purge, "task_record": task_record,
}
