"""A fenced Lua probe for the tests that check who may write as leader.

    from support.fence import fenced_probe
    PROBE = Script("probe", fenced_probe("redis.call('SET', KEYS[4], ARGV[4])\\nreturn 1"), 4)

The probe is the real fence (lua/include/fence.lua, confirmed terms only), so a
test of it tests what every fenced script runs before its first write.
"""

import sys

try:
    from .base import SCRIPTS
except ImportError:  # loaded as a top-level module
    from base import SCRIPTS  # type: ignore[no-redef]

if SCRIPTS not in sys.path:
    sys.path.insert(0, SCRIPTS)

from distnode import lua  # noqa: E402


def fenced_probe(body: str) -> str:
    """Lua text: the fence (KEYS[1..3], ARGV[1..3]; confirmed terms only), then ``body``
    (its own keys and arguments from KEYS[4] and ARGV[4]). Refused: a ``FENCED ...`` error reply."""
    return (lua.include_text("fence") + "redis.replicate_commands()\nlocal fenced = fence(true)\n"
            "if fenced then return fenced end\n" + body)
