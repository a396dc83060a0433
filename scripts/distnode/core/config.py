"""Load, merge and validate the node's configuration.

Sources, later ones winning: built-in defaults, ``config/config.json``,
``config/secrets.json`` (Redis credentials), then environment variables
(``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``, ``REDIS_DB``,
``REDIS_USERNAME``, ``OPENCLAW_NODE_ID``, ``LOG_LEVEL``). Every value
remembers where it came from, for ``--print-config``.

A bad file raises ``ConfigError`` naming the file, the key and, for broken
JSON, the line and column; so do hostile files (a key given twice, a number
with more than ``MAX_INT_DIGITS`` digits, nesting deeper than
``MAX_JSON_DEPTH``). Every number has an upper bound (``upper_bound``: a
day for durations unless ``UPPER_BOUNDS`` says otherwise). Unknown keys are
warnings (a typo should not stop a node), returned in ``Config.warnings``,
and named first in a relation error they may have caused. A password never
shows in a message, whatever the shape of the value around it (``_masked``,
``_scrub``).
"""

import json
import os

SKILL_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_CONFIG_DIR = os.path.join(SKILL_DIR, "config")
DEFAULT_LOG_DIR = os.path.join(SKILL_DIR, "logs")
VERSION = "1.0.0"
NODE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NODE_ID_LEN = 64
MAX_DURATION_S = 86400  # a day: the most any duration setting may be, unless UPPER_BOUNDS says otherwise
MAX_TASK_DURATION_S = 7 * 86400  # a week: a handler's timeout, the longest retry delay
MAX_RETENTION_S = 366 * 86400  # a year: how long finished task records are kept
# the most tasks.max_payload_bytes may be: a quarter of the client's reply bound
# (redis_client.MAX_REPLY_BYTES, 64 MiB), so a claim or a status that carries a payload always fits
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
MAX_WHOLE = 2 ** 31 - 1  # the most any whole-number setting may be, unless UPPER_BOUNDS says otherwise
MAX_INT_DIGITS = 20  # JSON integers longer than this are refused before Python converts them
MAX_JSON_DEPTH = 32  # objects/arrays nested deeper than this are refused (no setting needs 4)
MAX_CONFIG_BYTES = 1 << 20  # config.json and secrets.json: larger files are refused unread (no real one is 20 KB)
SECRET_KEY_WORDS = ("pass", "secret", "token", "credential")  # a key containing one of these holds a secret
MIN_SCRUB_LEN = 4  # secret strings at least this long are also cut out of any message text


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


# (section, key): (kind, default, lower bound or None, help). Units are in the help
# and in the names where the seed did not already fix the name.
SCHEMA = {
    ("node", "id"): ("node_id", "", None, "this node's id, 1-64 chars of [A-Za-z0-9._-]; empty: the host name"),
    ("node", "host"): ("str", "", None, "host name shown in status; empty: the machine's host name"),
    ("node", "labels"): ("labels", [], None, "labels tasks can require (--require), e.g. [\"gpu\"]"),
    ("node", "heartbeat_interval"): ("num", 10, 0, "seconds between heartbeats"),
    ("node", "heartbeat_ttl"): ("num", 30, 0, "seconds after the last heartbeat when a node is offline"),
    ("node", "retry_count"): ("int", 3, -1, "retries of a tick on a connection fault"),
    ("node", "retry_delay"): ("num", 1, -1, "seconds between retries (plus up to 50% jitter)"),
    ("redis", "host"): ("host", "127.0.0.1", None, "Redis host name or address (no user, password or scheme)"),
    ("redis", "port"): ("port", 6379, None, "Redis port"),
    ("redis", "password"): ("secret", "", None, "Redis password (keep it in secrets.json)"),
    ("redis", "username"): ("str", "", None, "Redis 6 ACL user name; empty: default user"),
    ("redis", "db"): ("int", 0, -1, "database number"),
    ("redis", "tls"): ("bool", False, None, "connect with TLS"),
    ("redis", "tls_ca_file"): ("str", "", None, "CA bundle for TLS; empty: system CAs"),
    ("redis", "tls_insecure"): ("bool", False, None, "skip TLS certificate checks (testing only)"),
    ("redis", "connect_timeout"): ("num", 5, 0, "seconds to wait for a connection"),
    ("redis", "socket_timeout"): ("num", 5, 0, "seconds to wait for a reply"),
    ("redis", "max_reply_bytes"): ("int", 64 * 1024 * 1024, 1024 * 1024 - 1,
                                   "bytes one reply may cost (bulk bytes, lines, 64 per array element); at least 1 MiB"),
    ("redis", "instances"): ("endpoints", [], None, "independent Redis masters for Redlock (host, port, password)"),
    ("redis", "sentinels"): ("sentinels", [], None, "Sentinel addresses (host, port) to discover the master"),
    ("redis", "master_name"): ("str", "", None, "the master's name in Sentinel"),
    ("redis", "sentinel_password"): ("secret", "", None, "Sentinel's own password, if any"),
    ("redis", "sentinel_username"): ("str", "", None, "Sentinel's ACL user, if any"),
    ("election", "lease_ttl"): ("num", 0, -1, "seconds a lease lasts unrenewed; 0: heartbeat_ttl"),
    ("election", "renew_interval"): ("num", 0, -1, "seconds between renewals in --loop; 0: heartbeat_interval"),
    ("election", "clock_drift_factor"): ("num", 0.01, -1, "Redlock clock drift allowance, fraction of the TTL"),
    ("election", "min_replicas_acked"): ("int", 0, -1, "replicas that must confirm a new lease (WAIT) before acting"),
    ("election", "replica_wait_ms"): ("int", 500, 0, "milliseconds WAIT may block for those replicas"),
    ("hooks", "on_become_leader"): ("argv", [], None, "argv run when this node becomes leader"),
    ("hooks", "on_lose_leadership"): ("argv", [], None, "argv run when this node loses the lease"),
    ("hooks", "on_leader_change"): ("argv", [], None, "argv run when a new leader is observed"),
    ("hooks", "on_node_offline"): ("argv", [], None, "argv run by the leader when a node goes offline"),
    ("hooks", "timeout_s"): ("num", 10, 0, "seconds a hook may run before it is killed"),
    ("cluster", "events_maxlen"): ("int", 10000, 0, "events kept in openclaw:cluster:events (approximate)"),
    ("cluster", "mirror_file"): ("str", "", None, "local JSON mirror of the cluster; empty: logs/run/cluster-<id>.json"),
    ("tasks", "handlers"): ("handlers", {}, None, "task type -> argv run for it (payload on stdin)"),
    ("tasks", "max_per_tick"): ("int", 10, 0, "tasks one worker tick runs at most"),
    ("tasks", "tick_budget_s"): ("num", 8, 0, "seconds one worker tick may spend"),
    ("tasks", "poll_interval_s"): ("num", 1, 0, "seconds between polls of an idle `task_queue.py work --loop`"),
    ("tasks", "default_timeout_s"): ("num", 60, 0, "seconds a handler may run unless the task says"),
    ("tasks", "default_max_attempts"): ("int", 3, 0, "attempts before a task is dead-lettered"),
    ("tasks", "backoff_base_s"): ("num", 2, -1, "first retry delay; doubles per attempt"),
    ("tasks", "backoff_max_s"): ("num", 300, 0, "longest retry delay"),
    ("tasks", "reclaim_grace_s"): ("num", 30, -1, "extra seconds before a live node's stuck task is reclaimed"),
    ("tasks", "result_max_bytes"): ("int", 65536, 0, "bytes of handler output kept as the result"),
    ("tasks", "max_payload_bytes"): ("int", 1048576, 0, "bytes a task's payload may be; submit refuses a larger "
                                     "one (exit 2)"),
    ("tasks", "max_output_bytes"): ("int", 8388608, 0, "bytes of a handler's, agent turn's or hook's output "
                                    "read back; the rest is read and dropped"),
    ("tasks", "stream_maxlen"): ("int", 100000, 0, "entries kept in a task stream (approximate)"),
    ("tasks", "done_ttl_s"): ("num", 604800, 0, "seconds done and dead task records are kept"),
    ("agent", "cli"): ("str", "openclaw", None, "the openclaw executable for `agent` tasks"),
    ("agent", "default_agent"): ("str", "", None, "agent id used when a task names none"),
    ("logging", "level"): ("level", "INFO", None, "DEBUG, INFO, WARNING or ERROR"),
    ("logging", "max_bytes"): ("int", 10485760, 0, "bytes before a log file rotates"),
    ("logging", "backup_count"): ("int", 5, -1, "rotated files kept"),
    ("logging", "syslog"): ("bool", True, None, "also log to syslog when /dev/log exists"),
}

# (section, key): the largest value allowed, where the kind's default (a day, MAX_WHOLE) does not fit.
UPPER_BOUNDS = {
    ("node", "retry_count"): 100,
    ("election", "clock_drift_factor"): 0.5,
    ("election", "replica_wait_ms"): MAX_DURATION_S * 1000,
    ("tasks", "default_timeout_s"): MAX_TASK_DURATION_S,
    ("tasks", "backoff_max_s"): MAX_TASK_DURATION_S,
    ("tasks", "done_ttl_s"): MAX_RETENTION_S,
    ("tasks", "max_payload_bytes"): MAX_PAYLOAD_BYTES,
}


def upper_bound(key: tuple):
    """The largest value allowed for the setting ``(section, key)`` (None: not a number)."""
    if key in UPPER_BOUNDS:
        return UPPER_BOUNDS[key]
    kind = SCHEMA[key][0] if key in SCHEMA else "int"
    return MAX_DURATION_S if kind == "num" else MAX_WHOLE if kind == "int" else None


ENV_OVERRIDES = {
    "REDIS_HOST": ("redis", "host"), "REDIS_PORT": ("redis", "port"),
    "REDIS_PASSWORD": ("redis", "password"), "REDIS_DB": ("redis", "db"),
    "REDIS_USERNAME": ("redis", "username"), "OPENCLAW_NODE_ID": ("node", "id"),
    "LOG_LEVEL": ("logging", "level"),
}
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class Config:
    """The effective configuration: ``cfg.get("node", "id")`` or ``cfg["node"]["id"]``."""

    def __init__(self, values: dict, sources: dict, config_dir: str, log_dir: str, warnings: list):
        self.values, self.sources = values, sources
        self.config_dir, self.log_dir, self.warnings = config_dir, log_dir, warnings
        self.run_dir = os.path.join(log_dir, "run")
        self.relation_error = None  # load(check_relations=False): the relation error not raised, for --print-config
        self.secrets = set()  # every secret string load() saw: cut out of any text shown (see _scrub)

    def __getitem__(self, section: str) -> dict:
        return self.values[section]

    def get(self, section: str, key: str):
        return self.values[section][key]

    @property
    def node_id(self) -> str:
        return self.values["node"]["id"]

    @property
    def lease_ttl_s(self) -> float:
        return self.values["election"]["lease_ttl"] or self.values["node"]["heartbeat_ttl"]

    @property
    def renew_interval_s(self) -> float:
        return self.values["election"]["renew_interval"] or self.values["node"]["heartbeat_interval"]

    def check_log_dir(self, probe: bool = False) -> None:
        """ConfigError naming the folder unless the log dir and its run/ can be created and written.

        ``probe`` also writes and fsyncs a small file in run/, which catches a full disk; that
        costs a synced write, so only ``check`` and ``./start-node.sh`` pay it: a tick that
        meets a full disk gets the same error from runner._fail when its own write is refused.
        """
        for folder in (self.log_dir, self.run_dir):
            try:
                os.makedirs(folder, exist_ok=True)
                writable = os.access(folder, os.W_OK | os.X_OK)
                error = "not writable by this user"
            except OSError as exc:
                writable, error = False, exc.strerror or str(exc)
            if not writable:
                raise ConfigError("log dir %s: %s (choose another with --log-dir or OPENCLAW_DISTRIBUTED_LOG_DIR, "
                                  "or fix its owner and mode)" % (folder, error))
        if not probe:
            return
        # a full disk passes the checks above: write (and fsync) a small probe where the node's state goes
        probe = os.path.join(self.run_dir, ".probe.%d" % os.getpid())
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"probe\n")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
        except OSError as exc:
            raise ConfigError(log_dir_fault(self.run_dir, OSError(exc.errno, exc.strerror, probe))) from None

    def describe(self) -> str:
        """The effective config, one ``section.key = value  (source)`` a line, password masked."""
        lines = []
        for (section, key), spec in SCHEMA.items():
            value = self.values[section][key]
            shown = ("***" if value else "''") if spec[0] == "secret" else _scrub(json.dumps(_masked(value)),
                                                                                   self.secrets)
            lines.append("%s.%s = %s  (%s)" % (section, key, shown, self.sources["%s.%s" % (section, key)]))
        return "\n".join(lines)


def log_dir_fault(folder: str, exc: OSError) -> str:
    """The one line for a write refused under the log dir (a full disk, a file size limit, a bad mount)."""
    return "log dir %s: cannot write %s: %s (free some space, or choose another with --log-dir or " \
           "OPENCLAW_DISTRIBUTED_LOG_DIR)" % (folder, exc.filename or "a file", exc.strerror or exc)


def _read_json(path: str, required: bool):
    """Parse a JSON object from ``path``; None when optional and missing."""
    from distnode.core import local_state
    if not os.path.lexists(path):
        if required:
            raise ConfigError("%s: file not found (copy it from the skill's config/ folder)" % path)
        return None
    try:  # bounded, and never a FIFO or a device: those hang or never end
        raw = local_state.read_input(path, MAX_CONFIG_BYTES)
    except local_state.InputError as exc:
        raise ConfigError(str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s: not UTF-8 (byte %d)" % (path, exc.start)) from None
    if not text.strip():
        raise ConfigError("%s: file is empty (expected a JSON object)" % path)
    data = parse_json(text, path)
    if not isinstance(data, dict):
        raise ConfigError("%s: top level must be a JSON object, got %s" % (path, type(data).__name__))
    return data


class _HostileJson(ValueError):
    """JSON this module refuses to take in although ``json`` would (a duplicate key, a huge integer)."""


def _unique_object(pairs) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _HostileJson("duplicate key %s (JSON would keep only the last one; remove the other)"
                               % _shown(key))
        out[key] = value
    return out


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _HostileJson("a whole number with %d digits (at most %d)" % (len(text.lstrip("-")), MAX_INT_DIGITS))
    return int(text)


def _shown(value) -> str:
    shown = json.dumps(value)
    return "'%s'" % shown[1:-1] if len(shown) <= 42 else "'%s...'" % shown[1:38]


def _no_constant(name: str):
    raise _HostileJson("%s is not JSON (only finite numbers are)" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0:
        raise _HostileJson("%s is not a finite number" % (text if len(text) <= 40 else text[:37] + "..."))
    return value


def parse_json(text: str, where: str, max_depth: int = MAX_JSON_DEPTH, finite_only: bool = False):
    """Parse JSON text; any fault is one ConfigError naming ``where`` (never a crash or a traceback).

    Refused besides broken JSON: a key given twice in one object, an integer of more than
    ``MAX_INT_DIGITS`` digits, nesting deeper than ``max_depth``; with ``finite_only`` also
    NaN, Infinity and numbers beyond a double (1e999), which other JSON readers refuse.
    """
    extra = {"parse_constant": _no_constant, "parse_float": _finite_float} if finite_only else {}
    try:
        data = json.loads(text, object_pairs_hook=_unique_object, parse_int=_bounded_int, **extra)
    except json.JSONDecodeError as exc:
        raise ConfigError("%s:%d:%d: invalid JSON: %s" % (where, exc.lineno, exc.colno, exc.msg)) from None
    except _HostileJson as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None
    except ValueError as exc:  # Python's own int-size limit, should a number slip past _bounded_int
        raise ConfigError("%s: invalid JSON: %s" % (where, str(exc).split(":")[0])) from None
    except RecursionError:
        raise ConfigError("%s: invalid JSON: arrays or objects nested deeper than %d levels" % (
            where, max_depth)) from None
    if _too_deep(data, max_depth):
        raise ConfigError("%s: invalid JSON: arrays or objects nested deeper than %d levels" % (where, max_depth))
    return data


def _too_deep(data, max_depth: int) -> bool:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (list, dict)):
            if depth > max_depth:
                return True
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return False


def _suggest(name: str, known) -> str:
    import difflib  # only paid for when there is a typo
    close = difflib.get_close_matches(name, list(known), n=1)
    return "; did you mean %s?" % close[0] if close else ""


def _merge_file(data: dict, path: str, values: dict, sources: dict, warnings: list, label: str) -> None:
    for section, body in data.items():
        if section not in values:
            warnings.append("%s: unknown section '%s' (ignored%s)" % (path, section, _suggest(section, values)))
            continue
        if not isinstance(body, dict):
            raise ConfigError("%s: '%s' must be an object, got %s" % (path, section, type(body).__name__))
        for key, value in body.items():
            if (section, key) not in SCHEMA:
                warnings.append("%s: unknown key '%s.%s' (ignored%s)" % (
                    path, section, key, _suggest(key, values[section])))
                continue
            values[section][key] = _check(SCHEMA[(section, key)], value, "%s: %s.%s" % (path, section, key),
                                          upper_bound((section, key)))
            sources["%s.%s" % (section, key)] = label


def _bad(where: str, what: str, value) -> ConfigError:
    shown = json.dumps(_masked(value))
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return ConfigError("%s must be %s, got %s" % (where, what, shown))


def _check(spec: tuple, value, where: str, upper=None):
    """Validate one value against its schema entry (and ``upper``, else the kind's bound); return it normalised."""
    kind, _default, lower, _help = spec
    if kind in ("str", "secret"):
        if not isinstance(value, str):
            raise _bad(where, "a string", "***" if kind == "secret" else value)
        return value
    if kind == "host":
        if not isinstance(value, str):
            raise _bad(where, "a string", value)
        if any(mark in value for mark in ("@", "://", "/")) or any(ch.isspace() for ch in value):
            shown = "***" + value[value.rfind("@"):] if "@" in value else value  # user:password@ never shown
            raise _bad(where, "a host name or address (no scheme, user, password or path: the password goes "
                              "in redis.password)", shown)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, "true or false", value)
        return value
    if kind in ("int", "num", "port"):
        ok = isinstance(value, int) or (kind == "num" and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            raise _bad(where, "a whole number" if kind != "num" else "a number", value)
        if value - value != 0:  # NaN or Infinity, which json.loads accepts
            raise _bad(where, "a finite number", value)
        if kind == "port" and not 1 <= value <= 65535:
            raise _bad(where, "a port number from 1 to 65535", value)
        if lower is not None and (value < 0 if lower == -1 else value <= lower):  # -1: "0 or more", -0.5 too
            raise _bad(where, "0 or more" if lower == -1 else "a number above %g" % lower, value)
        if upper is None and kind != "port":
            upper = MAX_DURATION_S if kind == "num" else MAX_WHOLE
        if upper is not None and value > upper:
            raise _bad(where, "at most %s" % _bound_text(upper, kind), value)
        return value
    if kind == "level":
        if not isinstance(value, str) or value.upper() not in LEVELS:
            raise _bad(where, "one of " + ", ".join(LEVELS), value)
        return value.upper()
    if kind == "node_id":
        if not isinstance(value, str):
            raise _bad(where, "a string", value)
        if value:
            check_node_id(value, where)
        return value
    if kind == "labels":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise _bad(where, "a list of non-empty strings", value)
        for label in value:
            check_node_id(label, where + " label")
        return value
    if kind == "argv":
        return check_argv(value, where)
    if kind == "handlers":
        if not isinstance(value, dict):
            raise _bad(where, "an object mapping task type to argv", value)
        return {name: check_argv(argv, "%s.%s" % (where, name), allow_empty=False) for name, argv in value.items()}
    if kind in ("endpoints", "sentinels"):
        return _check_endpoints(value, where, 26379 if kind == "sentinels" else 6379)
    raise AssertionError(kind)


def _bound_text(upper, kind: str) -> str:
    if kind == "num" and upper >= 3600 and upper % 3600 == 0:
        return "%d (seconds: %s)" % (upper, "%d day(s)" % (upper // 86400) if upper % 86400 == 0 else
                                     "%d hour(s)" % (upper // 3600))
    return "%g" % upper if isinstance(upper, float) else "%d" % upper


def check_node_id(value: str, where: str) -> str:
    """Node ids end up inside key names: allow only [A-Za-z0-9._-], 1 to 64 chars."""
    if not value or len(value) > MAX_NODE_ID_LEN:
        raise _bad(where, "1 to %d characters" % MAX_NODE_ID_LEN, value)
    bad = sorted({ch for ch in value if ch not in NODE_ID_CHARS})
    if bad:
        raise ConfigError("%s: %r contains %s; use only letters, digits, '.', '_' and '-'" % (
            where, value, ", ".join(repr(ch) for ch in bad)))
    return value


def check_argv(value, where: str, allow_empty: bool = True) -> list:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(where, "an argv list of strings (run without a shell)", value)
    if not value and not allow_empty:
        raise _bad(where, "a non-empty argv list", value)
    return value


def _check_endpoints(value, where: str, default_port: int) -> list:
    if not isinstance(value, list):
        raise _bad(where, "a list of {\"host\": ..., \"port\": ...}", value)
    out = []
    for i, item in enumerate(value):
        here = "%s[%d]" % (where, i)
        if not isinstance(item, dict) or "host" not in item:
            raise _bad(here, "an object with host and port", _masked(item))
        for key in item:
            if key not in ("host", "port", "password", "username", "db"):
                raise ConfigError("%s: unknown key '%s' (host, port, password, username, db)" % (here, key))
        ep = {"host": _check(("host", "", None, ""), item["host"], here + ".host"),
              "port": _check(("port", 0, None, ""), item.get("port", default_port), here + ".port"),
              "password": _check(("secret", "", None, ""), item.get("password", ""), here + ".password"),
              "username": _check(("str", "", None, ""), item.get("username", ""), here + ".username"),
              "db": _check(("int", 0, -1, ""), item.get("db", 0), here + ".db")}
        out.append(ep)
    return out


def _is_secret_key(key) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in SECRET_KEY_WORDS)


def _masked(value, depth: int = 0):
    """``value`` for messages and --print-config: under any key named like a secret (password,
    secret, token, credential; any depth, any case) the value is ``***``, and a URL's user:password@
    (with a scheme or without) in any string is ``***@``. Deeper than MAX_JSON_DEPTH, the rest is ``...``."""
    if depth > MAX_JSON_DEPTH:
        return "..."
    if isinstance(value, list):
        return [_masked(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {k: ("***" if v not in ("", None) else v) if _is_secret_key(k) else _masked(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, str) and "@" in value:
        import re
        # a URL's user:password@, then a scheme-less one (``default:pw@host``)
        return re.sub(r"(^|[\s\"'=,;])[^\s@/\"'=,;:]*:[^\s@/\"']*@", r"\1***@", _masked_url(value))
    return value


def _masked_url(text: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://***@host`` (every occurrence)."""
    out, pos = [], 0
    while True:
        scheme = text.find("://", pos)
        if scheme < 0:
            break
        start = scheme + 3
        end = len(text)
        for stop in "/ ?#":
            found = text.find(stop, start)
            if 0 <= found < end:
                end = found
        at = text.rfind("@", start, end)
        if at < 0:
            out.append(text[pos:start])
        else:
            out.append(text[pos:start] + "***")
            start = at
        pos = start
    out.append(text[pos:])
    return "".join(out)


def _secrets_in(data, found: set) -> set:
    """Add every string under a secret-named key anywhere in ``data`` (parsed JSON) to ``found``."""
    stack = [(data, False)]
    while stack:
        value, secret = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, secret or _is_secret_key(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, secret) for v in value)
        elif secret and isinstance(value, str) and len(value) >= MIN_SCRUB_LEN:
            found.add(value)
    return found


def _scrub(text: str, secrets) -> str:
    """``text`` with every known secret string cut out (longest first), for error messages."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
        shown = json.dumps(secret)[1:-1]  # as it appears inside a JSON-quoted value
        text = text.replace(shown, "***")
        for cut in range(len(shown) - 1, MIN_SCRUB_LEN - 1, -1):  # a value _bad cut short: "s3cr3t-Pa..."
            text = text.replace(shown[:cut] + "...", "***...")
    return text


def _env_value(name: str, spec: tuple):
    raw = os.environ[name]
    kind = spec[0]
    if kind in ("int", "port"):
        digits = raw.strip()
        digits = digits[1:] if digits[:1] == "-" else digits
        if not digits or not all("0" <= ch <= "9" for ch in digits):  # int() would take '٣' and '6_379'
            raise ConfigError("environment %s must be a whole number, got %s (ASCII digits only)" % (
                name, _shown(raw)))
        if len(digits) > MAX_INT_DIGITS:
            return MAX_WHOLE + 1  # refused by the bound check, naming the variable
        return int(raw.strip())
    return raw


def _check_relations(values: dict, lease_ttl_s: float, renew_s: float) -> None:
    node, redis = values["node"], values["redis"]
    if node["heartbeat_ttl"] < 2 * node["heartbeat_interval"]:
        raise ConfigError("node.heartbeat_ttl (%gs) must be at least twice node.heartbeat_interval (%gs), "
                          "or one late beat marks the node offline" % (node["heartbeat_ttl"], node["heartbeat_interval"]))
    if lease_ttl_s <= renew_s:
        raise ConfigError("election.lease_ttl (%gs) must be longer than election.renew_interval (%gs), "
                          "or the lease lapses between renewals" % (lease_ttl_s, renew_s))
    for key in ("socket_timeout", "connect_timeout"):
        if redis[key] >= lease_ttl_s / 2:
            raise ConfigError("redis.%s (%gs) must be below half of the lease (%gs), or one slow reply "
                              "outlives the lease" % (key, redis[key], lease_ttl_s))
    election = values["election"]
    if election["min_replicas_acked"] and election["replica_wait_ms"] >= redis["socket_timeout"] * 1000:
        raise ConfigError("election.replica_wait_ms (%dms) must be below redis.socket_timeout (%gs), or WAIT "
                          "outlasts the socket timeout" % (election["replica_wait_ms"], redis["socket_timeout"]))
    if bool(redis["sentinels"]) != bool(redis["master_name"]):
        raise ConfigError("redis.sentinels and redis.master_name go together: set both or neither")


def load(config_dir: str = "", log_dir: str = "", check_relations: bool = True) -> Config:
    """Load the effective config; raise ConfigError on anything unusable (no secret in its message).

    ``check_relations`` False (for --print-config): a failed relation between settings is kept in
    ``cfg.relation_error`` instead of raised, so the user can see the values that broke it.
    """
    secrets_seen = set()
    try:
        return _load(config_dir, log_dir, check_relations, secrets_seen)
    except ConfigError as exc:
        raise ConfigError(_scrub(str(exc), secrets_seen)) from None


def _load(config_dir: str, log_dir: str, check_relations: bool, secrets_seen: set) -> Config:
    config_dir = config_dir or os.environ.get("OPENCLAW_DISTRIBUTED_CONFIG_DIR") or DEFAULT_CONFIG_DIR
    log_dir = log_dir or os.environ.get("OPENCLAW_DISTRIBUTED_LOG_DIR") or DEFAULT_LOG_DIR
    values, sources, warnings = {}, {}, []
    for (section, key), spec in SCHEMA.items():
        default = spec[1]
        values.setdefault(section, {})[key] = list(default) if isinstance(default, list) else (
            dict(default) if isinstance(default, dict) else default)
        sources["%s.%s" % (section, key)] = "default"
    config_path = os.path.join(config_dir, "config.json")
    secrets_path = os.path.join(config_dir, "secrets.json")
    if os.environ.get("REDIS_PASSWORD", "") and len(os.environ["REDIS_PASSWORD"]) >= MIN_SCRUB_LEN:
        secrets_seen.add(os.environ["REDIS_PASSWORD"])
    data = _read_json(config_path, True)
    secrets = _read_json(secrets_path, False)
    for parsed in (data, secrets):
        _secrets_in(parsed, secrets_seen)  # before any value is checked: its error must not show them
    _merge_file(data, config_path, values, sources, warnings, "config.json")
    if secrets is not None:
        _warn_if_exposed(secrets_path, warnings)
        _merge_file(secrets, secrets_path, values, sources, warnings, "secrets.json")
    for name, (section, key) in ENV_OVERRIDES.items():
        if os.environ.get(name):
            values[section][key] = _check(SCHEMA[(section, key)], _env_value(name, SCHEMA[(section, key)]),
                                          "environment " + name, upper_bound((section, key)))
            sources["%s.%s" % (section, key)] = "env " + name
    if not values["node"]["host"]:
        import socket
        values["node"]["host"] = socket.gethostname()
    if not values["node"]["id"]:
        host = values["node"]["host"].split(".")[0]
        values["node"]["id"] = check_node_id(host[:MAX_NODE_ID_LEN], "node.id (from the host name %r)" % host)
        sources["node.id"] = "host name"
    cfg = Config(values, sources, config_dir, log_dir, warnings)
    cfg.secrets = secrets_seen
    try:
        _check_relations(values, cfg.lease_ttl_s, cfg.renew_interval_s)
    except ConfigError as exc:
        typos = [w for w in warnings if ": unknown " in w]
        if typos:  # the typo first: it is the likelier cause
            exc = ConfigError("%s -- which may be why: %s" % ("; ".join(typos), exc))
        if check_relations:
            raise exc from None
        cfg.relation_error = str(exc)
    return cfg


def _warn_if_exposed(path: str, warnings: list) -> None:
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        warnings.append("%s is readable by group or others (mode %04o): run chmod 600 %s" % (path, mode, path))
