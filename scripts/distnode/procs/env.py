"""The environment a child gets: this process's, without Redis credentials.

Not a defence against a child running as the same OS user: it can read its
owner's /proc/<pid>/environ and config/secrets.json. It keeps credentials out
of what a handler or hook logs, prints or passes on.
"""

import os

from distnode.core.defaults import SECRET_MIN_CHARS

# Environment variables never passed to a child: the config reads the first two
# (config.ENV_OVERRIDES); redis-cli reads the third.
SECRET_ENV = ("REDIS_PASSWORD", "REDIS_USERNAME", "REDISCLI_AUTH")
SECRET_ENV_WORDS = ("PASS", "AUTH", "SECRET", "TOKEN", "CREDENTIAL")  # in a name with REDIS in it
SECRET_ENV_SUFFIXES = ("URL", "URI")  # a name with REDIS in it ending so: a URL may carry a password


def config_secrets(cfg) -> list:
    """Every password the config holds (Redis, Sentinel, Redlock instances): no child sees them."""
    r = cfg["redis"]
    values = [r.get("password"), r.get("sentinel_password")]
    values += [i.get("password") for i in r.get("instances") or [] if isinstance(i, dict)]
    return [v for v in values if isinstance(v, str) and v]


def clean_env(cfg=None, extra: dict = None, base=None) -> dict:
    """``base`` (default: this process's environment) without Redis credentials, plus ``extra``.

    Dropped: SECRET_ENV, any name with REDIS and one of SECRET_ENV_WORDS in it
    or ending in one of SECRET_ENV_SUFFIXES, any variable whose value contains
    one of the config's passwords (defaults.SECRET_MIN_CHARS or longer; a
    shorter one only when it is the whole value).
    """
    secrets = set(config_secrets(cfg)) if cfg is not None else set()
    long_secrets = [s for s in secrets if len(s) >= SECRET_MIN_CHARS]
    env = {}
    for name, value in (os.environ if base is None else base).items():
        upper = name.upper()
        if upper in SECRET_ENV or value in secrets or any(s in value for s in long_secrets) or (
                "REDIS" in upper and (any(word in upper for word in SECRET_ENV_WORDS)
                                      or upper.endswith(SECRET_ENV_SUFFIXES))):
            continue
        env[name] = value
    env.update(extra or {})
    return env
