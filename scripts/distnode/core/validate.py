"""Check one config value against its record in ``settings``; return it normalised or raise ConfigError.

Every message names where the value came from (``where``: the file and ``section.key``,
or the environment variable), what it must be, and what it was: cut to 40 characters
and masked (``redact.masked``), so neither a flood nor a password reaches the user.
"""

import json
import os

from distnode.core.defaults import JSON_MAX_INT_DIGITS
from distnode.core.errors import ConfigError
from distnode.core.settings import LEVELS, MAX_WHOLE, Setting

NODE_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
MAX_NODE_ID_LEN = 64
_ENDPOINT_KEYS = ("host", "port", "password", "username", "db")


def check(setting: Setting, value, where: str):
    """``value`` for ``setting`` as the program uses it (a level upper-cased), or ConfigError naming ``where``."""
    return check_value(setting.kind, value, where, setting.low, setting.low_open, setting.high)


def check_value(kind: str, value, where: str, low=None, low_open: bool = False, high=None):
    """``check`` for a bare kind and bounds (the fields of an endpoint have no record of their own)."""
    if kind in ("int", "num", "port"):
        return _check_number(kind, value, where, low, low_open, high)
    if kind in ("str", "secret", "host"):
        if not isinstance(value, str):
            raise _bad(where, "a string", "***" if kind == "secret" else value)
        return _check_host(value, where) if kind == "host" else value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, "true or false", value)
        return value
    if kind == "level":
        if not isinstance(value, str) or value.upper() not in LEVELS:
            raise _bad(where, "one of " + ", ".join(LEVELS), value)
        return value.upper()
    if kind == "node_id":
        if not isinstance(value, str):
            raise _bad(where, "a string", value)
        return check_node_id(value, where) if value else value
    return _check_list(kind, value, where)


def _check_number(kind: str, value, where: str, low, low_open: bool, high):
    ok = isinstance(value, int) or (kind == "num" and isinstance(value, float))
    if isinstance(value, bool) or not ok:
        raise _bad(where, "a whole number" if kind != "num" else "a number", value)
    if value - value != 0:  # NaN or Infinity, which json.loads accepts
        raise _bad(where, "a finite number", value)
    if kind == "port" and not 1 <= value <= 65535:
        raise _bad(where, "a port number from 1 to 65535", value)
    if low is not None and (value <= low if low_open else value < low):
        raise _bad(where, "a number above %g" % low if low_open else "%s or more" % _bound_text(low, kind), value)
    if high is not None and value > high:
        raise _bad(where, "at most %s" % _bound_text(high, kind), value)
    return value


def _check_host(value: str, where: str) -> str:
    if any(mark in value for mark in ("@", "://", "/")) or any(ch.isspace() for ch in value):
        shown = "***" + value[value.rfind("@"):] if "@" in value else value  # user:password@ never shown
        raise _bad(where, "a host name or address (no scheme, user, password or path: the password goes "
                          "in redis.password)", shown)
    return value


def _check_list(kind: str, value, where: str):
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


def _bound_text(bound, kind: str) -> str:
    if kind == "num" and bound >= 3600 and bound % 3600 == 0:
        return "%d (seconds: %s)" % (bound, "%d day(s)" % (bound // 86400) if bound % 86400 == 0 else
                                     "%d hour(s)" % (bound // 3600))
    return "%g" % bound if isinstance(bound, float) else "%d" % bound


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
    """An argv list of strings (run without a shell); ConfigError otherwise."""
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
            raise _bad(here, "an object with host and port", item)
        for key in item:
            if key not in _ENDPOINT_KEYS:
                raise ConfigError("%s: unknown key '%s' (%s)" % (here, key, ", ".join(_ENDPOINT_KEYS)))
        out.append({"host": check_value("host", item["host"], here + ".host"),
                    "port": check_value("port", item.get("port", default_port), here + ".port"),
                    "password": check_value("secret", item.get("password", ""), here + ".password"),
                    "username": check_value("str", item.get("username", ""), here + ".username"),
                    "db": check_value("int", item.get("db", 0), here + ".db", low=0, high=MAX_WHOLE)})
    return out


def env_value(name: str, setting: Setting):
    """The environment variable ``name``'s text as ``setting``'s kind wants it (a whole number parsed)."""
    raw = os.environ[name]
    if setting.kind not in ("int", "port"):
        return raw
    digits = raw.strip()
    digits = digits[1:] if digits[:1] == "-" else digits
    if not digits or not all("0" <= ch <= "9" for ch in digits):  # int() would take '٣' and '6_379'
        raise ConfigError("environment %s must be a whole number, got %s (ASCII digits only)" % (name, shown(raw)))
    if len(digits) > JSON_MAX_INT_DIGITS:
        return MAX_WHOLE + 1  # refused by the bound check, naming the variable
    return int(raw.strip())


def shown(value) -> str:
    """``value`` quoted for a message, at most about 40 characters."""
    text = json.dumps(value)
    return "'%s'" % text[1:-1] if len(text) <= 42 else "'%s...'" % text[1:38]


def _bad(where: str, what: str, value) -> ConfigError:
    from distnode.core.redact import masked  # deferred: only a refused value is shown (config's docstring says why)
    text = json.dumps(masked(value))
    if len(text) > 40:
        text = text[:37] + "..."
    return ConfigError("%s must be %s, got %s" % (where, what, text))
