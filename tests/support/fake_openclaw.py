"""A stand-in for the `openclaw` CLI in tests of `agent` tasks: it records every call and answers as told.

    from support import fake_openclaw
    bin_dir = fake_openclaw.install(tmp)      # <tmp>/fake-bin/openclaw: this file with a shebang
    env = {"PATH": bin_dir + os.pathsep + path, "FAKE_OPENCLAW_LOG": log, "FAKE_OPENCLAW_MODE": "ok"}
    calls = fake_openclaw.calls(log)          # one dict per call, oldest first

Each call appends a JSON line to $FAKE_OPENCLAW_LOG: ``argv`` (without the program),
``stdin``, ``message_file`` (path), ``message`` (its content) and ``message_mode``
(permission bits), ``node`` and ``task`` ($NODE_ID, $TASK_ID) and ``pid``.
$FAKE_OPENCLAW_MODE says how to answer:
  ok    exit 0 with the Gateway's JSON shape; the reply is "reply from <node>: <message>"
  text  exit 0 with plain text, not JSON
  fail  exit 1 with the CLI's JSON error envelope on stdout and the message on stderr
  hang  sleep until killed; on SIGTERM append {"signal": "SIGTERM"} and exit 143
"""

import json
import os
import signal
import stat
import sys
import time

FAILURE = "fake failure: the model is unreachable"


def install(base_dir: str) -> str:
    """Write the executable ``openclaw`` into ``<base_dir>/fake-bin``; return that folder."""
    bin_dir = os.path.join(base_dir, "fake-bin")
    os.makedirs(bin_dir, exist_ok=True)
    with open(os.path.abspath(__file__)) as fh:
        source = fh.read()
    path = os.path.join(bin_dir, "openclaw")
    with open(path, "w") as fh:
        fh.write("#!%s\n%s" % (sys.executable, source))
    os.chmod(path, 0o755)
    return bin_dir


def calls(log_path: str) -> list:
    try:
        with open(log_path) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def _record(entry: dict) -> None:
    with open(os.environ["FAKE_OPENCLAW_LOG"], "a") as fh:
        fh.write(json.dumps(entry) + "\n")


def _message_file(argv: list):
    if "--message-file" not in argv:
        return None, None, None
    path = argv[argv.index("--message-file") + 1]
    with open(path, "rb") as fh:
        content = fh.read().decode("utf-8")
    return path, content, stat.S_IMODE(os.stat(path).st_mode)


def main() -> int:
    argv = sys.argv[1:]
    path, message, mode = _message_file(argv)
    node = os.environ.get("NODE_ID", "")
    _record({"argv": argv, "stdin": sys.stdin.read(), "message_file": path, "message": message,
             "message_mode": mode, "node": node, "task": os.environ.get("TASK_ID", ""), "pid": os.getpid()})
    answer = os.environ.get("FAKE_OPENCLAW_MODE", "ok")
    if answer == "ok":
        reply = {"runId": "run-%d" % os.getpid(), "status": "ok", "summary": "completed",
                 "result": {"payloads": [{"text": "reply from %s: %s" % (node, message), "mediaUrl": None}],
                            "meta": {"durationMs": 1, "agentMeta": {"sessionId": "s-1"}}}}
        print(json.dumps(reply, indent=2))
        return 0
    if answer == "text":
        print("plain reply from %s" % node)
        return 0
    if answer == "fail":
        print(json.dumps({"ok": False, "error": {"type": "cli_error", "message": FAILURE}}, indent=2))
        sys.stderr.write(FAILURE + "\n")
        return 1
    if answer == "hang":
        def on_term(_signum, _frame):
            _record({"signal": "SIGTERM"})
            os._exit(143)
        signal.signal(signal.SIGTERM, on_term)
        time.sleep(120)
        return 0
    sys.stderr.write("fake openclaw: unknown FAKE_OPENCLAW_MODE %r\n" % answer)
    return 2


if __name__ == "__main__":
    sys.exit(main())
