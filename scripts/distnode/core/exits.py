"""Every exit code a script of this skill returns, what it means, and the docs' table of them.

Guarantee: a number means one thing in every script. A script returns only the
names below (``tests/test_exits.py`` rejects a bare number at a ``sys.exit``,
``return`` of ``main`` or ``exit_code =``), and the exit-code tables in the
READMEs and docs are generated from ``CODES`` by ``markdown_table(lang)``.

Codes 0-3 and 130 are common to every script (``COMMON``); 4-6 are answers, not
faults: the command worked and the thing asked about is absent, moved on, or did
not come in time; 130 and 143 are the shell's 128 + signal number. Each script's
``--help`` lists the codes it returns (``help_lines``; the command scripts add
theirs in ``run/commands.main``).

Changed in issue 14 (two numbers meant two things): ``node_manager.py health``
exits 1, not 2, when Redis is unreachable (2 is bad config or usage everywhere);
``task_queue.py submit --wait`` exits 6, not 4, when ``--wait-timeout`` passes
first (4 is "no such key", 6 is "a wait ran out" as for ``state_sync.py watch``).

Pure data, no imports: the docs generator and every tick import this module.
``python3 -m distnode.core.exits --markdown en|zh`` prints the table;
``--update-docs`` rewrites it in README.md and README_EN.md.
"""

import os
import sys

OK = 0
FAILED = 1
BAD_CONFIG = 2
INTERNAL = 3
NOT_FOUND = 4
CONFLICT = 5
TIMED_OUT = 6
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
TERMINATED = 143  # 128 + SIGTERM: a one-shot command stopped by SIGTERM (errors.Terminated)

COMMON = (OK, FAILED, BAD_CONFIG, INTERNAL, INTERRUPTED)  # every script may return these

# (code, name, meaning in English, meaning in Chinese): the docs' table, in this order.
CODES = (
    (OK, "OK",
     "ok; also a run skipped because a previous run of the same script for the same node still holds its "
     "lock, and output cut short because its reader went away (`status | head`)",
     "成功；同一节点同一脚本的上一次运行仍持有锁而跳过的运行，以及因读取方离开而被截断的输出"
     "（`status | head`）也是 0"),
    (FAILED, "FAILED",
     "Redis unreachable or refusing; the node id is taken by another live machine; `deregister` refused "
     "while a job of this node runs; a task refused or dead, or no such task (`task_queue.py`: `submit`, "
     "`status ID`, `retry ID`); `node_manager.py health`: "
     "degraded or Redis unreachable; `./start-node.sh`: Redis, the gateway or a job's first run failed",
     "Redis 不可达或拒绝请求；节点 id 已被另一台存活的机器占用；本节点有任务在运行时 `deregister` 被拒绝；"
     "任务被拒绝、已死或不存在（`task_queue.py`：`submit`、`status ID`、`retry ID`）；`node_manager.py health`：降级或 Redis 不可达；"
     "`./start-node.sh`：Redis、网关或某个任务的首次运行失败"),
    (BAD_CONFIG, "BAD_CONFIG",
     "bad config or usage (one line naming the file and key, or the flag; a log folder that cannot be "
     "written); nothing was done",
     "配置或用法错误（一行写明文件和键，或出错的参数；无法写入的日志目录）；没有做任何事"),
    (INTERNAL, "INTERNAL",
     "an unexpected error (the traceback goes to the log file only)",
     "意外错误（traceback 只写入日志文件）"),
    (NOT_FOUND, "NOT_FOUND",
     "`state_sync.py`: no such key (`get`; `show`: no mirror yet)",
     "`state_sync.py`：键不存在（`get`；`show`：还没有镜像）"),
    (CONFLICT, "CONFLICT",
     "`state_sync.py`: the entry is at another version (`cas`, `delete --version`); nothing was written",
     "`state_sync.py`：条目处于另一个版本（`cas`、`delete --version`）；没有写入任何东西"),
    (TIMED_OUT, "TIMED_OUT",
     "a wait ran out: `state_sync.py watch` saw no change; `task_queue.py submit --wait`: "
     "`--wait-timeout` passed, the task stays queued",
     "等待到期：`state_sync.py watch` 没有等到变化；`task_queue.py submit --wait`：超过 `--wait-timeout`，"
     "任务仍在队列中"),
    (INTERRUPTED, "INTERRUPTED",
     "interrupted (Ctrl-C)",
     "被中断（Ctrl-C）"),
    (TERMINATED, "TERMINATED",
     "stopped by SIGTERM: a one-shot command says so in one line (`state_sync.py watch`; `task_queue.py "
     "submit --wait`: the task stays queued, its id named; `task_queue.py work`: the handler that ran had its "
     "whole process group stopped); a one-shot tick ends by the signal itself, which a shell reports as 143 "
     "too. A `--loop` or `--foreground` process exits 0 on SIGTERM",
     "被 SIGTERM 停止：一次性命令用一行说明（`state_sync.py watch`；`task_queue.py submit --wait`："
     "任务仍在队列中，并写明其 id；`task_queue.py work`：正在运行的 handler 的整个进程组已被停止）；"
     "一次性 tick 直接被信号结束，shell 同样报告为 143。`--loop` 或 `--foreground` 进程收到 SIGTERM 时以 0 退出"),
)

_HEADERS = {"en": ("code", "meaning"), "zh": ("退出码", "含义")}
BEGIN, END = "<!-- exit-codes:begin -->", "<!-- exit-codes:end -->"  # around the table in the READMEs
PAGES = {"en": "README_EN.md", "zh": "README.md"}  # in the skill folder


def meaning(code: int, lang: str = "en") -> str:
    """The one-line meaning of ``code``; KeyError for a code this skill never returns."""
    for number, _name, en, zh in CODES:
        if number == code:
            return zh if lang == "zh" else en
    raise KeyError(code)


def markdown_table(lang: str = "en") -> str:
    """The exit-code table of the docs (``lang`` "en" or "zh"), one row per code, ending in a newline."""
    if lang not in _HEADERS:
        raise ValueError("lang must be en or zh, got %r" % lang)
    rows = [(str(code), (zh if lang == "zh" else en).replace("|", "\\|")) for code, _name, en, zh in CODES]
    return "| %s |\n|---|---|\n" % " | ".join(_HEADERS[lang]) + "".join("| %s | %s |\n" % row for row in rows)


def with_table(text: str, lang: str) -> str:
    """``text`` (a page) with the table between BEGIN and END replaced by ``markdown_table(lang)``;
    ValueError when the page has no such markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("no %s ... %s markers" % (BEGIN, END))
    return text[:start + len(BEGIN)] + "\n" + markdown_table(lang) + text[end:]


# what ``--help`` says of each code, in a few words (the docs' table above says more)
_BRIEF = {
    OK: "ok",
    FAILED: "failed: Redis unreachable or refusing, or what was asked failed (the line on stderr says which)",
    BAD_CONFIG: "bad config or usage; nothing was done",
    INTERNAL: "unexpected error (details in the log file)",
    NOT_FOUND: "no such key",
    CONFLICT: "the entry is at another version; nothing was written",
    TIMED_OUT: "a wait ran out",
    INTERRUPTED: "interrupted (Ctrl-C)",
    TERMINATED: "stopped by SIGTERM",
}


def help_lines(codes=COMMON, locked: bool = False) -> list:
    """The end of a script's ``--help``: one line per code in ``codes`` (the codes it returns).

    ``locked``: the script runs a job under its per-node lock, so 0 also means a run skipped
    because a previous one still holds the lock."""
    lines = ["exit codes:"]
    for code in sorted(set(codes)):
        text = _BRIEF[code] + (" (or skipped: a previous run still holds the lock)" if code == OK and locked else "")
        lines.append("  %-4d %s" % (code, text))
    return lines


def _main(argv: list) -> None:
    if len(argv) == 2 and argv[0] == "--markdown" and argv[1] in _HEADERS:
        sys.stdout.write(markdown_table(argv[1]))
        return
    if argv != ["--update-docs"]:
        sys.stderr.write("usage: python3 -m distnode.core.exits --markdown en|zh | --update-docs\n")
        sys.exit(BAD_CONFIG)
    skill_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    for lang, page in PAGES.items():
        path = os.path.join(skill_dir, page)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(with_table(text, lang))


if __name__ == "__main__":
    _main(sys.argv[1:])
