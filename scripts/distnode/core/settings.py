"""Every user setting as one record: its kind, default, bounds, unit and help (English and Chinese).

The records are the schema: ``config.load`` fills and validates values from them
(``validate.check``), ``--print-config`` lists them in this order, and the docs'
settings reference is generated from them (``markdown_reference``; regenerate with
``python3 -m distnode.core.settings --update-docs`` run from ``scripts/``, checked by
tests/test_config.py). Names are the user's file format: a seed name without a unit
(``heartbeat_interval``) stays as it is and is read through a ``_s`` accessor on
``config.Config``.

Every number has both bounds: the lower one the record names, the upper one a day
for seconds and 2**31 - 1 for whole numbers unless the record says otherwise. Every
tick imports this module: plain classes and tuples only (no dataclasses, no namedtuple).
"""

import json
import os
import sys

from distnode.core import defaults

MAX_DURATION_S = 86400  # a day: the most any duration setting may be, unless its record says otherwise
MAX_TASK_DURATION_S = 7 * 86400  # a week: a handler's timeout, the longest retry delay
MAX_RETENTION_S = 366 * 86400  # a year: how long finished task records are kept
# a quarter of the client's default reply bound (a smaller redis.max_reply_bytes lowers it: config's relations)
MAX_PAYLOAD_BYTES = defaults.REDIS_MAX_REPLY_BYTES // 4
# the least redis.max_reply_bytes: a kv value (STATE_VALUE_MAX_BYTES) with its fields always fits, and
# so does a task record with the default payload and result bounds (config's relations check those)
MIN_REPLY_BYTES = 2 * defaults.STATE_VALUE_MAX_BYTES
MAX_WHOLE = 2 ** 31 - 1  # the most any whole-number setting may be, unless its record says otherwise
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_KIND_MAX = {"num": MAX_DURATION_S, "int": MAX_WHOLE}


class Setting:
    """One setting of config.json: ``section.key``, its kind and default, and for numbers both bounds.

    ``low`` is the lower bound (None: none), excluded when ``low_open``; ``high`` the upper bound,
    always set for ``num`` and ``int``. ``unit`` is what a number counts: "s", "ms", "bytes", or a
    word ("retries", "entries"); the key names it when the seed did not fix the name ("_s", "_ms",
    "_bytes"), else ``config.Config`` has a ``<key>_s`` accessor. ``env`` names the environment
    variable that overrides it. ``help_en`` and ``help_zh`` are the docs' words (Markdown).
    """

    __slots__ = ("section", "key", "kind", "default", "unit", "low", "low_open", "high", "env", "help_en", "help_zh")

    def __init__(self, section: str, key: str, kind: str, default, unit: str = "", above=None, at_least=None,
                 at_most=None, env: str = "", en: str = "", zh: str = ""):
        self.section, self.key, self.kind, self.default, self.unit = section, key, kind, default, unit
        self.low = above if above is not None else at_least
        self.low_open = above is not None
        self.high = at_most if at_most is not None else _KIND_MAX.get(kind)
        self.env, self.help_en, self.help_zh = env, en, zh

    @property
    def name(self) -> str:
        return "%s.%s" % (self.section, self.key)


S = Setting
SETTINGS = (
    S("node", "id", "node_id", "", env="OPENCLAW_NODE_ID",
      en="this node's id, 1-64 characters of `[A-Za-z0-9._-]`; empty: the host name (up to its first dot). Env "
         "`OPENCLAW_NODE_ID`",
      zh="本节点的 id，1-64 个 `[A-Za-z0-9._-]` 字符；为空时用主机名（第一个点之前的部分）。环境变量 `OPENCLAW_NODE_ID`"),
    S("node", "host", "str", "",
      en="host name shown in status; empty: the machine's host name",
      zh="status 中显示的主机名；为空时用本机主机名"),
    S("node", "labels", "labels", [],
      en='labels tasks can require (`--require`), e.g. `["gpu", "browser"]`; each follows the node id rules; '
         "published with every heartbeat",
      zh='任务可以要求的标签（`--require`），例如 `["gpu", "browser"]`；每个标签遵循节点 id 的规则；随每次心跳发布'),
    S("node", "heartbeat_interval", "num", 10, "s", above=0,
      en="seconds between heartbeats; also the period of the failover and state sync jobs (cron, `--foreground`, "
         "`--loop`)",
      zh="两次心跳之间的秒数；也是故障转移和状态同步任务的周期（cron、`--foreground`、`--loop`）"),
    S("node", "heartbeat_ttl", "num", 30, "s", above=0,
      en="a node is offline this long after its last heartbeat; at least twice `node.heartbeat_interval`",
      zh="最后一次心跳之后多久节点算离线；至少是 `node.heartbeat_interval` 的两倍"),
    S("node", "retry_count", "int", 3, "retries", at_least=0, at_most=100,
      en="retries of a tick on a transient connection fault (0 or more)",
      zh="tick 遇到瞬时连接故障时的重试次数（0 或更多）"),
    S("node", "retry_delay", "num", 1, "s", at_least=0,
      en="seconds between retries, plus up to 50% jitter",
      zh="两次重试之间的秒数，另加最多 50% 的随机抖动"),
    S("redis", "host", "host", "127.0.0.1", env="REDIS_HOST",
      en="Redis host (env `REDIS_HOST`); ignored when `redis.sentinels` is set",
      zh="Redis 主机（环境变量 `REDIS_HOST`）；设置了 `redis.sentinels` 时被忽略"),
    S("redis", "port", "port", 6379, env="REDIS_PORT",
      en="Redis port, 1-65535 (env `REDIS_PORT`); ignored when `redis.sentinels` is set",
      zh="Redis 端口，1-65535（环境变量 `REDIS_PORT`）；设置了 `redis.sentinels` 时被忽略"),
    S("redis", "password", "secret", "", env="REDIS_PASSWORD",
      en="Redis password (env `REDIS_PASSWORD`); keep it in `secrets.json`; masked as `***` everywhere",
      zh="Redis 密码（环境变量 `REDIS_PASSWORD`）；请放在 `secrets.json` 中；在任何地方都显示为 `***`"),
    S("redis", "username", "str", "", env="REDIS_USERNAME",
      en="Redis 6 ACL user name (env `REDIS_USERNAME`); empty: the default user",
      zh="Redis 6 ACL 用户名（环境变量 `REDIS_USERNAME`）；为空时用默认用户"),
    S("redis", "db", "int", 0, at_least=0, env="REDIS_DB",
      en="database number (env `REDIS_DB`)",
      zh="数据库编号（环境变量 `REDIS_DB`）"),
    S("redis", "tls", "bool", False,
      en="connect with TLS (the Sentinels too)",
      zh="用 TLS 连接（对 Sentinel 也适用）"),
    S("redis", "tls_ca_file", "str", "",
      en="CA bundle for TLS; empty: the system CAs",
      zh="TLS 的 CA 证书包；为空时用系统 CA"),
    S("redis", "tls_insecure", "bool", False,
      en="skip TLS certificate checks (testing only)",
      zh="跳过 TLS 证书检查（仅用于测试）"),
    S("redis", "connect_timeout", "num", defaults.REDIS_TIMEOUT_S, "s", above=0,
      en="seconds to wait for a connection, name resolution and TLS included; below half the lease",
      zh="等待建立连接的秒数，包括域名解析和 TLS；小于租约的一半"),
    S("redis", "socket_timeout", "num", defaults.REDIS_TIMEOUT_S, "s", above=0,
      en="seconds a request may take as a whole (its write and all its replies, not each `recv`); below half the "
         "lease",
      zh="一个请求整体（写出及其全部回复，而不是每次 `recv`）最多用的秒数；小于租约的一半"),
    S("redis", "max_reply_bytes", "int", defaults.REDIS_MAX_REPLY_BYTES, "bytes", at_least=MIN_REPLY_BYTES,
      en="what one reply may cost (64 MiB): its bulk strings' bytes, each line's (`+`, `-`, `:`) bytes, 64 per "
         "array element, at any depth; more is a protocol error. At least 2 MiB (2097152), so a shared-state value "
         "(1 MiB at most) always fits; and at least `tasks.max_payload_bytes` + `tasks.result_max_bytes` + 64 KiB "
         "(65536), so a task's claim or `status` always fits",
      zh="一个回复最多占用的量（64 MiB）：bulk 字符串的字节数、每一行（`+`、`-`、`:`）的字节数，加上每个数组元素 64 字节，任意嵌套深度都计入；超过即协议错误。至少 2 MiB（2097152），"
         "这样共享状态的值（最多 1 MiB）总能放得下；并且至少为 `tasks.max_payload_bytes` + `tasks.result_max_bytes` + 64 KiB（65536），这样领取任务和 `status` 的回复总能放得下"),
    S("redis", "blocking_reads", "bool", True,
      en="a living job (`--loop`, `--foreground`) waits between ticks with blocking reads on a connection of its "
         "own, and ticks the moment a task lands, a task ends (`submit --wait`) or a lease is released or lapses; "
         "false: it sleeps its period, as a cron tick does",
      zh="常驻的任务（`--loop`、`--foreground`）在两次 tick 之间用单独连接上的阻塞读等待，一旦有任务到达、任务结束"
         "（`submit --wait`）或租约被释放、到期就立即 tick；为 false 时像 cron tick 一样睡满周期"),
    S("redis", "instances", "endpoints", [],
      en='independent Redis masters for a Redlock lease: `[{"host", "port", "password", "username", "db"}]`; only '
         "the lease and epoch live there (see [Production](production.md))",
      zh='用于 Redlock 租约的相互独立的 Redis 主库：`[{"host", "port", "password", "username", "db"}]`；那里只存租约和 '
         "epoch（见[生产部署](production.md)）"),
    S("redis", "sentinels", "sentinels", [],
      en='Sentinel addresses `[{"host", "port"}]` (port default 26379; a per-entry `password` / `username` '
         "overrides the two Sentinel keys below) to discover the master; set together with `redis.master_name`",
      zh='用来发现主库的 Sentinel 地址 `[{"host", "port"}]`（端口默认 26379；单项里的 `password` / `username` 优先于下面两个 Sentinel 键）；必须与 '
         "`redis.master_name` 一起设置"),
    S("redis", "master_name", "str", "",
      en="the master's name in Sentinel (`sentinel monitor <name> ...`)",
      zh="主库在 Sentinel 中的名字（`sentinel monitor <名字> ...`）"),
    S("redis", "sentinel_password", "secret", "",
      en="Sentinel's own `requirepass` (not the master's), if any",
      zh="Sentinel 自己的 `requirepass`（不是主库的），如有"),
    S("redis", "sentinel_username", "str", "",
      en="Sentinel's ACL user (Redis 6.2+), if any",
      zh="Sentinel 的 ACL 用户（Redis 6.2+），如有"),
    S("election", "lease_ttl", "num", 0, "s", at_least=0,
      en="how long a lease lasts unrenewed; 0: `node.heartbeat_ttl`; must be longer than the renew interval "
         "(shipped `config.json`: `30`)",
      zh="不续约时租约持续多久；0：取 `node.heartbeat_ttl`；必须长于续约间隔（随附的 `config.json`：`30`）"),
    S("election", "renew_interval", "num", 0, "s", at_least=0,
      en="seconds between renewals (`leader_election.py --loop` and its cron job); 0: `node.heartbeat_interval` "
         "(shipped `config.json`: `10`)",
      zh="两次续约之间的秒数（`leader_election.py --loop` 及其 cron 任务）；0：取 `node.heartbeat_interval`（随附的 `config.json`：`10`）"),
    S("election", "clock_drift_factor", "num", 0.01, "fraction of the TTL", at_least=0, at_most=0.5,
      en="Redlock clock-drift allowance, subtracted from the validity time",
      zh="Redlock 的时钟漂移余量，从有效期中扣除"),
    S("election", "min_replicas_acked", "int", 0, "replicas", at_least=0,
      en="replicas that must confirm a new leader's lease and epoch (`WAIT`) before it acts; 0: off",
      zh="新 leader 行动前须确认（`WAIT`）其租约和 epoch 的副本数；0：关闭"),
    S("election", "replica_wait_ms", "int", 500, "ms", above=0, at_most=MAX_DURATION_S * 1000,
      en="how long `WAIT` may block for those replicas; below `redis.socket_timeout`",
      zh="`WAIT` 为这些副本最多阻塞多久；小于 `redis.socket_timeout`"),
    S("hooks", "on_become_leader", "argv", [], "argv",
      en="run when this node becomes leader",
      zh="本节点成为 leader 时运行"),
    S("hooks", "on_lose_leadership", "argv", [], "argv",
      en="run when this node loses the lease",
      zh="本节点失去租约时运行"),
    S("hooks", "on_leader_change", "argv", [], "argv",
      en="run when a new leader is observed",
      zh="观察到新 leader 时运行"),
    S("hooks", "on_node_offline", "argv", [], "argv",
      en="run by the leader when a node goes offline (`OFFLINE_NODE_ID` in its environment)",
      zh="某个节点离线时由 leader 运行（环境变量中有 `OFFLINE_NODE_ID`）"),
    S("hooks", "timeout_s", "num", 10, "s", above=0,
      en="seconds a hook may run before it is killed",
      zh="hook 被杀掉之前最多可运行的秒数"),
    S("cluster", "events_maxlen", "int", 10000, "entries", above=0,
      en="events kept in `openclaw:cluster:events` (approximate trimming)",
      zh="`openclaw:cluster:events` 中保留的事件数（近似裁剪）"),
    S("cluster", "mirror_file", "str", "",
      en="path of this node's mirror of the cluster snapshot; empty: `logs/run/cluster-<node id>.json`; a relative "
         "path is taken inside the log folder; `~` is expanded",
      zh="本节点集群快照镜像文件的路径；为空时为 `logs/run/cluster-<节点 id>.json`；相对路径以日志目录为基准；支持 `~`"),
    S("tasks", "handlers", "handlers", {},
      en="task type -> argv run for it, payload on stdin (shipped `config.json`: `echo` and `true`)",
      zh="任务类型 -> 为它运行的 argv，payload 从标准输入传入（随附的 `config.json`：`echo` 和 `true`）"),
    S("tasks", "max_per_tick", "int", 10, "tasks", above=0,
      en="tasks one `work` tick runs at most (not applied with `--loop`)",
      zh="一次 `work` tick 最多执行的任务数（`--loop` 时不限制）"),
    S("tasks", "tick_budget_s", "num", 8, "s", above=0,
      en="seconds after which a tick starts no new task (a running one is finished first)",
      zh="超过该秒数后 tick 不再开始新任务（正在运行的任务会先执行完）"),
    S("tasks", "poll_interval_s", "num", 1, "s", above=0,
      en="seconds between ticks of the task worker: its cron job, `--foreground` and `task_queue.py work --loop` "
         "alike",
      zh="任务 worker 两次 tick 之间的秒数：cron 任务、`--foreground` 和 `task_queue.py work --loop` 都一样"),
    S("tasks", "default_timeout_s", "num", 60, "s", above=0, at_most=MAX_TASK_DURATION_S,
      en="seconds a handler may run, unless `submit --timeout` says otherwise (the submitting node's config)",
      zh="handler 可运行的秒数，除非 `submit --timeout` 另行指定（取提交节点的配置）"),
    S("tasks", "default_max_attempts", "int", 3, "attempts", above=0,
      en="attempts before dead-lettering, unless `submit --max-attempts` says otherwise (the submitting node's "
         "config)",
      zh="进入死信前的尝试次数，除非 `submit --max-attempts` 另行指定（取提交节点的配置）"),
    S("tasks", "backoff_base_s", "num", 2, "s", at_least=0,
      en="delay before the first retry; doubles per attempt (0: retry at once)",
      zh="第一次重试前的延迟；每次尝试翻倍（0：立即重试）"),
    S("tasks", "backoff_max_s", "num", 300, "s", above=0, at_most=MAX_TASK_DURATION_S,
      en="longest retry delay",
      zh="最长重试延迟"),
    S("tasks", "reclaim_grace_s", "num", 30, "s", at_least=0,
      en="extra seconds past a task's timeout before the leader takes it from a live but silent worker",
      zh="任务超过超时时间后再等多少秒，leader 才从仍在线但没有回应的 worker 手中收回它"),
    S("tasks", "result_max_bytes", "int", 65536, "bytes", above=0,
      en="bytes of stdout kept as the result (`status` says when it was cut); with `tasks.max_payload_bytes` and "
         "64 KiB at most `redis.max_reply_bytes`",
      zh="作为结果保存的标准输出字节数（被截断时 `status` 会注明）；它加上 `tasks.max_payload_bytes` 和 64 KiB 不超过 `redis.max_reply_bytes`"),
    S("tasks", "max_payload_bytes", "int", 1048576, "bytes", above=0, at_most=MAX_PAYLOAD_BYTES,
      en="largest task payload `submit` takes (`--payload`, `--payload-file`, stdin, agent messages): a larger one "
         "is refused with one line, exit 2, nothing queued. At most 16 MiB, and with `tasks.result_max_bytes` and "
         "64 KiB at most `redis.max_reply_bytes`, so a claim or a `status` always fits. 1 MiB by default because a "
         "payload stays in Redis memory "
         "(and on every replica) until `tasks.done_ttl_s` and travels with every claim: pass large data by "
         "reference (a path or URL)",
      zh="`submit` 接受的最大任务 payload（`--payload`、`--payload-file`、标准输入、agent 消息）：更大的被拒绝，打印一行，退出码 2，不入队。最多 16 MiB，并且它加上 `tasks.result_max_bytes` "
         "和 64 KiB 不超过 `redis.max_reply_bytes`，这样领取任务和 `status` 的回复总能放得下。默认 1 MiB，因为 payload 会留在 Redis 内存（以及每个副本）中直到 "
         "`tasks.done_ttl_s`，并随每次领取传输：大数据请按引用传递（路径或 URL）"),
    S("tasks", "max_output_bytes", "int", 8388608, "bytes", above=0,
      en="output read back from a handler, agent turn or hook; the rest is read and dropped (`output_bytes` in "
         "`status`; hooks: a note in `hooks.log`)",
      zh="从处理程序、agent 调用或 hook 读回的输出上限；其余被读出并丢弃（`status` 中的 `output_bytes`；hook 在 `hooks.log` 中注明）"),
    S("tasks", "stream_maxlen", "int", 100000, "entries", above=0,
      en="entries kept in each task stream and in the dead-letter stream (approximate)",
      zh="每个任务 stream 以及死信 stream 保留的条目数（近似）"),
    S("tasks", "done_ttl_s", "num", 604800, "s", above=0, at_most=MAX_RETENTION_S,
      en="seconds (7 days) done and dead tasks, and their idempotency keys, are kept",
      zh="done 和 dead 任务及其幂等键保留的秒数（7 天）"),
    S("agent", "cli", "str", "openclaw",
      en="the `openclaw` executable that runs `agent` tasks (a name on `PATH` or a path); a node has the capability "
         "`agent` when it is executable",
      zh="运行 `agent` 任务的 `openclaw` 可执行文件（`PATH` 上的名字或一个路径）；它可执行时节点具备 `agent` 能力"),
    S("agent", "default_agent", "str", "",
      en="agent id used when a task names none; empty: OpenClaw's default agent `main`",
      zh="任务没有指定 agent 时使用的 agent id；为空时用 OpenClaw 的默认 agent `main`"),
    S("logging", "level", "level", "INFO", env="LOG_LEVEL",
      en="`DEBUG`, `INFO`, `WARNING` or `ERROR` (env `LOG_LEVEL`)",
      zh="`DEBUG`、`INFO`、`WARNING` 或 `ERROR`（环境变量 `LOG_LEVEL`）"),
    S("logging", "max_bytes", "int", 10485760, "bytes", above=0,
      en="size (10 MiB) at which a log file rotates",
      zh="日志文件轮转的大小（10 MiB）"),
    S("logging", "backup_count", "int", 5, "files", at_least=0,
      en="rotated files kept",
      zh="保留的轮转文件数"),
    S("logging", "syslog", "bool", True,
      en="also log to syslog when `/dev/log` exists",
      zh="`/dev/log` 存在时也写入 syslog"),
)
del S

SCHEMA = {(s.section, s.key): s for s in SETTINGS}  # (section, key) -> Setting, in file order
ENV_OVERRIDES = {s.env: (s.section, s.key) for s in SETTINGS if s.env}  # variable -> (section, key)

# -- the docs' settings reference ----------------------------------------------------------------------

BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"
_HEAD = {"en": "| key | default | unit | range | meaning |", "zh": "| 键 | 默认值 | 单位 | 范围 | 含义 |"}
_UNIT_ZH = {"s": "秒", "ms": "毫秒", "bytes": "字节", "retries": "次", "replicas": "个副本", "entries": "条",
            "tasks": "个任务", "attempts": "次", "files": "个文件", "fraction of the TTL": "TTL 的比例"}


def _range(setting: Setting) -> str:
    """The values a number may take (``> 0, <= 86400``); empty for other kinds."""
    if setting.kind == "port":
        return "1-65535"
    if setting.high is None:
        return ""
    low = "" if setting.low is None else "%s %s, " % (">" if setting.low_open else ">=", _number(setting.low))
    return "%s<= %s" % (low, _number(setting.high))


def _number(value) -> str:
    return "%g" % value if isinstance(value, float) else "%d" % value


def _row(cells: list) -> str:
    return "|" + "|".join(" %s " % cell if cell else " " for cell in cells) + "|"


def markdown_reference(lang: str) -> str:
    """The settings reference for docs/<lang>/configuration.md (``en`` or ``zh``): per section a heading
    and a table, one row per setting in file order; the text the page holds between BEGIN and END."""
    blocks = []
    for section in dict.fromkeys(s.section for s in SETTINGS):
        lines = ["### `%s`" % section, "", _HEAD[lang], "|---|---|---|---|---|"]
        for s in SETTINGS:
            if s.section == section:
                unit = _UNIT_ZH.get(s.unit, s.unit) if lang == "zh" else s.unit
                lines.append(_row(["`%s`" % s.name, "`%s`" % json.dumps(s.default, ensure_ascii=False), unit,
                                   _range(s), s.help_en if lang == "en" else s.help_zh]))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def with_reference(text: str, lang: str) -> str:
    """``text`` (a docs page) with the part between BEGIN and END replaced by ``markdown_reference(lang)``;
    ValueError when the page lacks the markers."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError("the page lacks %s ... %s" % (BEGIN, END))
    return text[:start + len(BEGIN)] + "\n" + markdown_reference(lang) + text[end:]


def docs_page(lang: str) -> str:
    """The path of docs/<lang>/configuration.md in this skill."""
    skill_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    return os.path.join(skill_dir, "docs", lang, "configuration.md")


def _main(argv: list) -> None:
    """``--markdown en|zh``: print the reference; ``--update-docs``: rewrite it in both docs pages."""
    if len(argv) == 2 and argv[0] == "--markdown" and argv[1] in _HEAD:
        sys.stdout.write(markdown_reference(argv[1]))
        return
    if argv != ["--update-docs"]:
        sys.exit("usage: python3 -m distnode.core.settings --markdown en|zh | --update-docs")
    for lang in _HEAD:
        with open(docs_page(lang), encoding="utf-8") as fh:
            text = fh.read()
        with open(docs_page(lang), "w", encoding="utf-8") as fh:
            fh.write(with_reference(text, lang))
        print("updated %s" % docs_page(lang))


if __name__ == "__main__":
    _main(sys.argv[1:])
