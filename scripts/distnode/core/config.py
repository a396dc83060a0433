"""Load, merge and validate the node's configuration.

Sources, later ones winning: the defaults in ``settings``, ``config/config.json``,
``config/secrets.json`` (Redis credentials), then environment variables
(``settings.ENV_OVERRIDES``: ``REDIS_HOST``, ``REDIS_PORT``, ``REDIS_PASSWORD``,
``REDIS_DB``, ``REDIS_USERNAME``, ``OPENCLAW_NODE_ID``, ``LOG_LEVEL``). Every value
remembers where it came from, for ``--print-config``.

A bad file raises ``ConfigError`` naming the file, the key and, for broken
JSON, the line and column; so do hostile files (a key given twice, a number
with more than ``JSON_MAX_INT_DIGITS`` digits, nesting deeper than
``JSON_MAX_DEPTH``). Each value is checked against its record (``validate``),
relations between settings at the end of the load, naming the relation that
failed. Unknown keys are warnings (a typo should not stop a node), returned in
``Config.warnings``, and named first in a relation error they may have caused.
A password never shows in a message, whatever the shape of the value around it
(``redact``, imported only when a message about a failure or ``--print-config``
needs it: a tick that succeeds skips it, 0.45 M instructions, cachegrind).
"""

import json
import os

from distnode.core import local_state
from distnode.core.defaults import (CONFIG_MAX_BYTES, JSON_DATA_MAX_DEPTH, JSON_MAX_DEPTH, JSON_MAX_INT_DIGITS,
                                    TASK_RECORD_OTHER_BYTES)
from distnode.core.errors import ConfigError  # noqa: F401 - raised here; importers catch config.ConfigError
from distnode.core.settings import ENV_OVERRIDES, SCHEMA
from distnode.core.validate import MAX_NODE_ID_LEN, check, check_node_id, env_value, shown

SKILL_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
DEFAULT_CONFIG_DIR = os.path.join(SKILL_DIR, "config")
DEFAULT_LOG_DIR = os.path.join(SKILL_DIR, "logs")
VERSION = "1.0.0"


class Config:
    """The effective configuration: ``cfg["node"]["id"]`` or ``cfg.get("node", "id")``.

    The seed's duration settings carry no unit in their names (``heartbeat_interval``):
    read them through the ``_s`` properties, which also resolve the election's 0 = "as
    the heartbeat" defaults. Settings whose names carry their unit are read as they are.
    """

    def __init__(self, values: dict, sources: dict, config_dir: str, log_dir: str, warnings: list, read=()):
        self.values, self.sources = values, sources
        self.config_dir, self.log_dir, self.warnings = config_dir, log_dir, warnings
        self.run_dir = os.path.join(log_dir, "run")
        self.relation_error = None  # load(check_relations=False): the relation error not raised, for --print-config
        self._read = read  # what load() read that may hold secrets: the parsed files, REDIS_PASSWORD

    @property
    def secrets(self) -> set:
        """Every secret string load() saw, to cut out of any text shown (``redact.scrub``); collected
        when asked for, since only a message about a failure and ``--print-config`` need them."""
        return _secrets_in(self._read)

    def __getitem__(self, section: str) -> dict:
        return self.values[section]

    def get(self, section: str, key: str):
        return self.values[section][key]

    @property
    def node_id(self) -> str:
        return self.values["node"]["id"]

    @property
    def heartbeat_interval_s(self) -> float:
        return self.values["node"]["heartbeat_interval"]

    @property
    def heartbeat_ttl_s(self) -> float:
        return self.values["node"]["heartbeat_ttl"]

    @property
    def retry_delay_s(self) -> float:
        return self.values["node"]["retry_delay"]

    @property
    def connect_timeout_s(self) -> float:
        return self.values["redis"]["connect_timeout"]

    @property
    def socket_timeout_s(self) -> float:
        return self.values["redis"]["socket_timeout"]

    @property
    def lease_ttl_s(self) -> float:
        """election.lease_ttl, or node.heartbeat_ttl when it is 0."""
        return self.values["election"]["lease_ttl"] or self.heartbeat_ttl_s

    @property
    def renew_interval_s(self) -> float:
        """election.renew_interval, or node.heartbeat_interval when it is 0."""
        return self.values["election"]["renew_interval"] or self.heartbeat_interval_s

    def check_log_dir(self, probe: bool = False) -> None:
        """ConfigError naming the folder unless the log dir and its run/ can be created and written.

        ``probe`` also writes and fsyncs a small file in run/, which catches a full disk; that
        costs a synced write, so only ``check`` and ``./start-node.sh`` pay it: a tick that
        meets a full disk gets the same error from the runner (``run/cli.fail``) when its own write
        is refused.
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
        from distnode.core.redact import masked, scrub  # deferred: see the module docstring
        lines, secrets = [], self.secrets
        for setting in SCHEMA.values():
            value = self.values[setting.section][setting.key]
            text = ("***" if value else "''") if setting.kind == "secret" else scrub(json.dumps(masked(value)),
                                                                                     secrets)
            lines.append("%s = %s  (%s)" % (setting.name, text, self.sources[setting.name]))
        return "\n".join(lines)


def log_dir_fault(folder: str, exc: OSError) -> str:
    """The one line for a write refused under the log dir (a full disk, a file size limit, a bad mount)."""
    return "log dir %s: cannot write %s: %s (free some space, or choose another with --log-dir or " \
           "OPENCLAW_DISTRIBUTED_LOG_DIR)" % (folder, exc.filename or "a file", exc.strerror or exc)


def _read_json(path: str, required: bool):
    """Parse a JSON object from ``path``; None when optional and missing."""
    if not os.path.lexists(path):
        if required:
            raise ConfigError("%s: file not found (copy it from the skill's config/ folder)" % path)
        return None
    try:  # bounded, and never a FIFO or a device: those hang or never end
        raw = local_state.read_input(path, CONFIG_MAX_BYTES)
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
                               % shown(key))
        out[key] = value
    return out


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > JSON_MAX_INT_DIGITS:
        raise _HostileJson("a whole number with %d digits (at most %d)" % (len(text.lstrip("-")), JSON_MAX_INT_DIGITS))
    return int(text)


def _no_constant(name: str):
    raise _HostileJson("%s is not JSON (only finite numbers are)" % name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0:
        raise _HostileJson("%s is not a finite number" % (text if len(text) <= 40 else text[:37] + "..."))
    return value


def parse_json(text: str, where: str, max_depth: int = JSON_MAX_DEPTH, strict: bool = False):
    """Parse JSON text; any fault is one ConfigError naming ``where`` (never a crash or a traceback).

    Refused besides broken JSON: a key given twice in one object, an integer of more than
    ``JSON_MAX_INT_DIGITS`` digits, nesting deeper than ``max_depth``; with ``strict`` also what
    other JSON readers refuse: NaN, Infinity, numbers beyond a double (1e999), and a string that
    holds a lone surrogate (\\ud800 unpaired: not UTF-8).
    """
    extra = {"parse_constant": _no_constant, "parse_float": _finite_float} if strict else {}
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
    if strict and _lone_surrogate(text, data):
        raise ConfigError("%s: invalid JSON: a string holds a lone surrogate (\\ud800-\\udfff unpaired), which "
                          "is not UTF-8" % where)
    return data


def parse_data(text: str, where: str, max_depth: int = JSON_DATA_MAX_DEPTH):
    """Data a user hands over as JSON text (a task payload, a kv value), parsed as every JSON reader
    takes it (``parse_json`` with ``strict``); else ValueError "<where> is not valid JSON: why
    (line L, column C)", one line."""
    try:
        return parse_json(text, "", max_depth=max_depth, strict=True)
    except ConfigError as exc:  # ":LINE:COL: invalid JSON: why", or ": why"
        head, _sep, why = str(exc).partition(": invalid JSON: ") if ": invalid JSON: " in str(exc) else (
            "", "", str(exc)[2:])
        at = " (line %s, column %s)" % tuple(head.split(":")[1:3]) if head.count(":") == 2 else ""
        raise ValueError("%s is not valid JSON: %s%s" % (where, why, at)) from None


def _lone_surrogate(text: str, data) -> bool:
    """Whether a string in ``data`` (parsed from ``text``) holds a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True  # a raw one: json.loads takes it only inside a string
    if "\\u" not in text:
        return False  # nor an escaped one
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


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
            values[section][key] = check(SCHEMA[(section, key)], value, "%s: %s.%s" % (path, section, key))
            sources["%s.%s" % (section, key)] = label


def _check_relations(cfg: Config) -> None:
    """ConfigError naming the first relation between settings that fails (the values are valid one by one)."""
    redis, election = cfg["redis"], cfg["election"]
    if cfg.heartbeat_ttl_s < 2 * cfg.heartbeat_interval_s:
        raise ConfigError("node.heartbeat_ttl (%gs) must be at least twice node.heartbeat_interval (%gs), "
                          "or one late beat marks the node offline" % (cfg.heartbeat_ttl_s, cfg.heartbeat_interval_s))
    if cfg.lease_ttl_s <= cfg.renew_interval_s:
        raise ConfigError("election.lease_ttl (%gs) must be longer than election.renew_interval (%gs), "
                          "or the lease lapses between renewals" % (cfg.lease_ttl_s, cfg.renew_interval_s))
    for key, timeout_s in (("socket_timeout", cfg.socket_timeout_s), ("connect_timeout", cfg.connect_timeout_s)):
        if timeout_s >= cfg.lease_ttl_s / 2:
            raise ConfigError("redis.%s (%gs) must be below half of the lease (%gs), or one slow reply "
                              "outlives the lease" % (key, timeout_s, cfg.lease_ttl_s))
    if election["min_replicas_acked"] and election["replica_wait_ms"] >= cfg.socket_timeout_s * 1000:
        raise ConfigError("election.replica_wait_ms (%dms) must be below redis.socket_timeout (%gs), or WAIT "
                          "outlasts the socket timeout" % (election["replica_wait_ms"], cfg.socket_timeout_s))
    _check_reply_room(cfg)
    if bool(redis["sentinels"]) != bool(redis["master_name"]):
        raise ConfigError("redis.sentinels and redis.master_name go together: set both or neither")


def _check_reply_room(cfg: Config) -> None:
    """A task's claim and its ``status`` carry its payload and its result in one reply: both at their
    bounds, with TASK_RECORD_OTHER_BYTES for the other fields, must fit in redis.max_reply_bytes."""
    tasks, reply_bytes = cfg["tasks"], cfg["redis"]["max_reply_bytes"]
    needed_bytes = tasks["max_payload_bytes"] + tasks["result_max_bytes"] + TASK_RECORD_OTHER_BYTES
    if needed_bytes > reply_bytes:
        raise ConfigError("redis.max_reply_bytes (%d) must be at least tasks.max_payload_bytes (%d) + "
                          "tasks.result_max_bytes (%d) + %d for a task record's other fields = %d, or a claim or "
                          "a `status` of a task at those sizes does not fit in one reply: raise the first or "
                          "lower the others" % (reply_bytes, tasks["max_payload_bytes"], tasks["result_max_bytes"],
                                                TASK_RECORD_OTHER_BYTES, needed_bytes))


def load(config_dir: str = "", log_dir: str = "", check_relations: bool = True) -> Config:
    """Load the effective config; raise ConfigError on anything unusable (no secret in its message).

    ``check_relations`` False (for --print-config): a failed relation between settings is kept in
    ``cfg.relation_error`` instead of raised, so the user can see the values that broke it.
    """
    read = []  # what _load read that may hold secrets, as it reads it: no error may show them
    try:
        return _load(config_dir, log_dir, check_relations, read)
    except ConfigError as exc:
        from distnode.core.redact import scrub  # deferred: see the module docstring
        raise ConfigError(scrub(str(exc), _secrets_in(read))) from None


def _secrets_in(read) -> set:
    """Every secret string in ``read`` (parsed JSON documents): see ``redact.secrets_in``."""
    from distnode.core.redact import secrets_in  # deferred: see the module docstring
    found = set()
    for document in read:
        secrets_in(document, found)
    return found


def _load(config_dir: str, log_dir: str, check_relations: bool, read: list) -> Config:
    config_dir = config_dir or os.environ.get("OPENCLAW_DISTRIBUTED_CONFIG_DIR") or DEFAULT_CONFIG_DIR
    log_dir = log_dir or os.environ.get("OPENCLAW_DISTRIBUTED_LOG_DIR") or DEFAULT_LOG_DIR
    values, sources, warnings = {}, {}, []
    for setting in SCHEMA.values():
        default = setting.default  # a fresh list or dict for each load: the caller may change its own
        values.setdefault(setting.section, {})[setting.key] = list(default) if isinstance(default, list) else (
            dict(default) if isinstance(default, dict) else default)
        sources[setting.name] = "default"
    config_path = os.path.join(config_dir, "config.json")
    secrets_path = os.path.join(config_dir, "secrets.json")
    read.append({"REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", "")})  # a secret-named key, as in a file
    data = _read_json(config_path, True)
    read.append(data)
    secrets = _read_json(secrets_path, False)
    read.append(secrets)  # both read before any value is checked: its error must not show them
    _merge_file(data, config_path, values, sources, warnings, "config.json")
    if secrets is not None:
        _warn_if_exposed(secrets_path, warnings)
        _merge_file(secrets, secrets_path, values, sources, warnings, "secrets.json")
    for name, (section, key) in ENV_OVERRIDES.items():
        if os.environ.get(name):
            setting = SCHEMA[(section, key)]
            values[section][key] = check(setting, env_value(name, setting), "environment " + name)
            sources["%s.%s" % (section, key)] = "env " + name
    if not values["node"]["host"]:
        import socket
        values["node"]["host"] = socket.gethostname()
    if not values["node"]["id"]:
        host = values["node"]["host"].split(".")[0]
        values["node"]["id"] = check_node_id(host[:MAX_NODE_ID_LEN], "node.id (from the host name %r)" % host)
        sources["node.id"] = "host name"
    cfg = Config(values, sources, config_dir, log_dir, warnings, read)
    try:
        _check_relations(cfg)
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
