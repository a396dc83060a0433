"""The built-in ``agent`` task type: one OpenClaw agent turn, run on the node that claims the task.

Payload, a JSON object:
  message    what the agent is asked (required; UTF-8, at most 4 MiB: the CLI's limit)
  agent      the agent id (optional; default ``agent.default_agent``, else OpenClaw's ``main``)
  timeout_s  whole seconds the turn may take (optional; passed to the CLI as ``--timeout``)

The worker runs, without a shell::

    <agent.cli> agent --message-file <file> --json --agent <id> [--timeout <s>]

The message goes in a file (mode 0600, in a private temp folder, removed when
the CLI ends: also on failure, timeout or SIGTERM), never on a command line,
where any local user could read it. Exit 0 makes the task done, with a JSON
result ``{"reply": <text>, "agent": <id>, "response": <the CLI's JSON>}``,
kept under ``tasks.result_max_bytes`` by dropping ``response`` first, then
cutting the reply (``reply_truncated``). Any other exit or the task's timeout
fails the attempt like any handler's: retried, then dead-lettered, with the
CLI's error message. At the timeout the CLI gets SIGTERM (it then aborts the
run on the Gateway) and SIGKILL ``TERM_GRACE_S`` later.

Only nodes with the ``agent`` capability (the CLI found on PATH, published
with the heartbeat) are routed ``agent`` tasks (routes.requirement).
"""

import json
import os

from distnode.procs import spawn

TASK_TYPE = "agent"
CAPABILITY = "agent"          # what membership.capabilities() publishes when the CLI is here
OPENCLAW_DEFAULT_AGENT = "main"  # the CLI needs an agent (or session) selector; this is its default agent
PAYLOAD_KEYS = ("message", "agent", "timeout_s")
MESSAGE_MAX_BYTES = 4 * 1024 * 1024  # --message-file refuses larger files; the payload holding the message
# is bounded first by tasks.max_payload_bytes (1 MiB by default, at most 16 MiB)
TERM_GRACE_S = 5.0
TIMEOUT_MARGIN_S = 60  # task timeout over the turn's: the CLI waits for the Gateway up to timeout + 30 s
AGENT_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def parse_request(payload) -> dict:
    """The checked payload as {"message", "agent" (or None), "timeout_s" (int or None)}.

    Raises ValueError with one line that names the offending key.
    """
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise ValueError("the agent payload is not JSON: %s" % exc) from None
    if not isinstance(doc, dict):
        raise ValueError('an agent payload is a JSON object like {"message": "..."}, got %s' % type(doc).__name__)
    unknown = sorted(set(doc) - set(PAYLOAD_KEYS))
    if unknown:
        raise ValueError("unknown key(s) %s in the agent payload (known: %s)" % (
            ", ".join(unknown), ", ".join(PAYLOAD_KEYS)))
    return {"message": _message(doc.get("message")), "agent": _agent_id(doc.get("agent")),
            "timeout_s": _timeout_s(doc.get("timeout_s"))}


def _message(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError('the agent payload needs "message": a non-empty string')
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError('"message" holds a lone surrogate (\\ud800-\\udfff): it is not valid UTF-8') from None
    if size > MESSAGE_MAX_BYTES:
        raise ValueError('"message" is %d bytes; the OpenClaw CLI takes at most %d' % (size, MESSAGE_MAX_BYTES))
    return value


def _agent_id(value):
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64 or any(ch not in AGENT_ID_CHARS for ch in value) \
            or value[0] in ".-":
        raise ValueError('"agent" must be an agent id: 1 to 64 letters, digits, ".", "_" or "-", not starting '
                         'with "." or "-"; got %r' % (value,))
    return value


def _timeout_s(value):
    if value is None:
        return None
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or value < 1:
        raise ValueError('"timeout_s" must be a whole number of seconds, at least 1; got %r' % (value,))
    return int(value)


def task_timeout_s(request: dict):
    """The task timeout an agent task gets when the submitter sets none: the turn's, plus a margin."""
    return request["timeout_s"] + TIMEOUT_MARGIN_S if request["timeout_s"] else None


def agent_id(cfg, request: dict) -> str:
    """The payload's agent, else ``agent.default_agent``, else OpenClaw's default agent."""
    return request["agent"] or cfg["agent"]["default_agent"] or OPENCLAW_DEFAULT_AGENT


def argv(cfg, request: dict, message_path: str) -> list:
    """The CLI call for one turn (no shell): the message by file, JSON out, the agent always named
    (the CLI refuses a turn with no agent or session selector)."""
    out = [cfg["agent"]["cli"], "agent", "--message-file", message_path, "--json", "--agent", agent_id(cfg, request)]
    if request["timeout_s"]:
        out += ["--timeout", str(request["timeout_s"])]
    return out


def run(ctx, task, env: dict, lease=None, record: str = None):
    """Run the agent turn of ``task`` through spawn.run; a spawn.Outcome, as handler.run_handler returns.

    ``lease`` and ``record``: the attempt lease and the handler record (see spawn.run).

    The CLI's output is read up to ``tasks.max_output_bytes`` (JSON to parse;
    the result is capped after); the rest is read and dropped.
    """
    import shutil  # deferred with tempfile: only agent turns pay for them (~20 ms in a bare interpreter)
    import tempfile
    try:
        request = parse_request(task.payload)
    except ValueError as exc:
        return spawn.Outcome(False, b"", str(exc))
    folder = tempfile.mkdtemp(prefix="openclaw-agent-")  # 0700
    try:
        path = os.path.join(folder, "message.txt")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(request["message"].encode("utf-8"))
        call = argv(ctx.cfg, request, path)
        ran = spawn.run(call, b"", env, task.timeout_s, ctx.cfg["tasks"]["max_output_bytes"], TERM_GRACE_S,
                        should_stop=lambda: ctx.stopping, lease=lease, record=record)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    response = _json_or_none(ran.output)
    if not ran.ok:
        return spawn.Outcome(False, b"", _failure(ran.error, response), ran.out_bytes, ran.reason, ran.code)
    text = reply_text(response)
    if text is None:
        text = ran.output.decode("utf-8", "replace").strip() if response is None else ""
    doc = result_document(text, agent_id(ctx.cfg, request), response, ctx.cfg["tasks"]["result_max_bytes"])
    return spawn.Outcome(True, doc, "", ran.out_bytes if ran.dropped_bytes else len(doc), code=ran.code)


def _json_or_none(output: bytes):
    try:
        return json.loads(output.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        return None


def _failure(error: str, response) -> str:
    """``error`` (exit code and stderr tail), or its reason with the CLI's own message when it gave one."""
    message = response.get("error") if isinstance(response, dict) else None
    message = message.get("message") if isinstance(message, dict) else message
    if isinstance(message, str) and message.strip():
        return "openclaw agent failed (%s): %s" % (error.split(": ", 1)[0], message.strip())
    return "openclaw agent failed: " + error


def reply_text(doc):
    """The agent's reply in the CLI's JSON, or None: the Gateway's ``result.payloads[].text``,
    ``--local``'s ``payloads[].text``, or a ``final``/``reply``/``text`` string; payloads joined by a blank line."""
    if not isinstance(doc, dict):
        return None
    for holder in (doc.get("result"), doc):
        payloads = holder.get("payloads") if isinstance(holder, dict) else None
        if isinstance(payloads, list):
            texts = [p["text"] for p in payloads if isinstance(p, dict) and isinstance(p.get("text"), str)]
            if any(t.strip() for t in texts):
                return "\n\n".join(t for t in texts if t.strip())
    for key in ("final", "reply", "text"):
        if isinstance(doc.get(key), str):
            return doc[key]
    return None


def result_document(reply: str, agent_id: str, response, max_bytes: int) -> bytes:
    """The task result, as compact JSON of at most ``max_bytes`` (unless even an empty reply is larger)."""
    doc = {"reply": reply, "agent": agent_id, "response": response}
    data = _dump(doc)
    if len(data) <= max_bytes:
        return data
    doc["response"], doc["response_omitted_bytes"] = None, len(_dump(response))
    data = _dump(doc)
    while len(data) > max_bytes and doc["reply"]:
        raw = doc["reply"].encode("utf-8")
        keep = max(0, len(raw) - (len(data) - max_bytes) - 1)
        doc["reply"], doc["reply_truncated"] = raw[:keep].decode("utf-8", "ignore"), True
        data = _dump(doc)
    return data


def _dump(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def reply_of(result: str):
    """The reply text in an ``agent`` task's stored result, or None if the result is not one."""
    try:
        doc = json.loads(result)
    except ValueError:
        return None
    return doc["reply"] if isinstance(doc, dict) and isinstance(doc.get("reply"), str) else None
