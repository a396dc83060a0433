"""Keep secrets out of every message and of ``--print-config``.

Two nets: ``masked`` hides values by shape (anything under a key named like a secret,
any URL's ``user:password@``), and ``scrub`` cuts out every secret string the loader
saw (``secrets_in``) wherever it appears in a text, also cut short by an ellipsis.

Only a message about a failure and ``--print-config`` need this module: its users import
it when they build one, so a tick that succeeds never loads it.
"""

import json
import re  # json has loaded it already

from distnode.core.defaults import JSON_MAX_DEPTH, SECRET_MIN_CHARS

SECRET_KEY_WORDS = ("pass", "secret", "token", "credential")  # a key containing one of these holds a secret


def is_secret_key(key) -> bool:
    return isinstance(key, str) and any(word in key.lower() for word in SECRET_KEY_WORDS)


def masked(value, depth: int = 0):
    """``value`` for messages and --print-config: under any key named like a secret (password,
    secret, token, credential; any depth, any case) the value is ``***``, and a URL's user:password@
    (with a scheme or without) in any string is ``***@``. Deeper than JSON_MAX_DEPTH, the rest is ``...``."""
    if depth > JSON_MAX_DEPTH:
        return "..."
    if isinstance(value, list):
        return [masked(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {k: ("***" if v not in ("", None) else v) if is_secret_key(k) else masked(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, str) and "@" in value:
        # a URL's user:password@, then a scheme-less one (``default:pw@host``)
        return re.sub(r"(^|[\s\"'=,;])[^\s@/\"'=,;:]*:[^\s@/\"']*@", r"\1***@", masked_url(value))
    return value


def masked_url(text: str) -> str:
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


def secrets_in(data, found: set) -> set:
    """Add every string under a secret-named key anywhere in ``data`` (parsed JSON) to ``found``."""
    stack = [(data, False)]
    while stack:
        value, secret = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, secret or is_secret_key(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, secret) for v in value)
        elif secret and isinstance(value, str) and len(value) >= SECRET_MIN_CHARS:
            found.add(value)
    return found


def scrub(text: str, secrets) -> str:
    """``text`` with every known secret string cut out (longest first), for error messages."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
        shown = json.dumps(secret)[1:-1]  # as it appears inside a JSON-quoted value
        text = text.replace(shown, "***")
        for cut in range(len(shown) - 1, SECRET_MIN_CHARS - 1, -1):  # a value validate cut short: "s3cr3t-Pa..."
            text = text.replace(shown[:cut] + "...", "***...")
    return text
