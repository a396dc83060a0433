"""What only tests and benchmarks need from a Redis client: command helpers, pipelines, a parse helper.

The product sends its commands through ``Redis.request`` and ``Redis.execute``
(scripts through ``distnode.redis.script``); these helpers ride on the same
two calls, so a test that uses them exercises the product's client.

    from support.redis_extras import Redis
    r = Redis("127.0.0.1", port)
    r.set("k", "v", px=5000)
    r.pipeline().get("k").ping().execute()       # one round trip
    parse_all(raw_bytes, step=1)                 # every reply in raw_bytes, fed one byte at a time
"""

from distnode.redis import client, resp
from distnode.redis.errors import ResponseError

__all__ = ["Redis", "Pipeline", "parse_all"]


def parse_all(data: bytes, step: int = 0, rng=None, **parser_kwargs) -> list:
    """Feed ``data`` (all at once, ``step`` bytes at a time, or 1 to 8 bytes at a time drawn from
    ``rng``) and collect every reply."""
    parser = resp.Parser("test:1", **parser_kwargs)
    out = []
    chunks = [data] if not (step or rng) else list(_chunks(data, step, rng))
    for chunk in chunks:
        parser.feed(chunk)
        while True:
            reply = parser.gets()
            if reply is resp.NOT_READY:
                break
            out.append(reply)
    return out


def _chunks(data: bytes, step: int, rng):
    pos = 0
    while pos < len(data):
        size = step or rng.randrange(1, 9)
        yield data[pos:pos + size]
        pos += size


class Redis(client.Redis):
    """The product's client plus one helper per command the tests use."""

    def pipeline(self, transaction: bool = False) -> "Pipeline":
        return Pipeline(self, transaction)

    def ping(self):
        return self.execute("PING")

    def time(self) -> float:
        sec, usec = self.execute("TIME")
        return int(sec) + int(usec) / 1e6

    def get(self, key):
        return self.execute("GET", key)

    def set(self, key, value, ex: int = None, px: int = None, nx: bool = False, xx: bool = False):
        args = ["SET", key, value]
        if ex is not None:
            args += ["EX", ex]
        if px is not None:
            args += ["PX", px]
        if nx:
            args.append("NX")
        if xx:
            args.append("XX")
        return self.execute(*args)

    def setex(self, key, seconds: int, value):
        return self.execute("SETEX", key, seconds, value)

    def delete(self, *keys) -> int:
        return self.execute("DEL", *keys)

    def expire(self, key, seconds: int) -> int:
        return self.execute("EXPIRE", key, seconds)

    def pexpire(self, key, ms: int) -> int:
        return self.execute("PEXPIRE", key, ms)

    def ttl(self, key) -> int:
        return self.execute("TTL", key)

    def pttl(self, key) -> int:
        return self.execute("PTTL", key)

    def incr(self, key) -> int:
        return self.execute("INCR", key)

    def hset(self, key, field, value) -> int:
        return self.execute("HSET", key, field, value)

    def hget(self, key, field):
        return self.execute("HGET", key, field)

    def hdel(self, key, *fields) -> int:
        return self.execute("HDEL", key, *fields)

    def hgetall(self, key) -> dict:
        flat = self.execute("HGETALL", key) or []
        return dict(zip(flat[::2], flat[1::2]))

    def publish(self, channel, message) -> int:
        return self.execute("PUBLISH", channel, message)


class Pipeline:
    """Buffer commands and send them in one write.

    With ``transaction=True`` they are wrapped in MULTI/EXEC and ``execute``
    returns the EXEC results; otherwise one reply per command. Error replies
    are returned in place either way.
    """

    def __init__(self, redis: Redis, transaction: bool = False):
        self._client = redis
        self._transaction = transaction
        self._commands = []

    def __len__(self) -> int:
        return len(self._commands)

    def execute_command(self, *args) -> "Pipeline":
        self._commands.append(args)
        return self

    def __getattr__(self, name):
        # pipe.hset(...), pipe.get(...): queue the same command the client's helper would run
        if name.startswith("_") or name == "pipeline" or not hasattr(Redis, name) or hasattr(client.Redis, name):
            raise AttributeError(name)
        return _QueueingHelper(self, name)

    def execute(self) -> list:
        commands, self._commands = self._commands, []
        if not commands:
            return []
        if not self._transaction:
            return self._client.request(commands)
        replies = self._client.request([("MULTI",)] + commands + [("EXEC",)])
        queued, result = replies[1:-1], replies[-1]
        if isinstance(result, ResponseError):
            # EXECABORT: the first queue-time error is the useful one
            errors = [r for r in queued if isinstance(r, ResponseError)]
            raise errors[0] if errors else result
        return result


class _QueueingHelper:
    """Calls a client helper against a recorder, queueing the command instead."""

    def __init__(self, pipe: Pipeline, name: str):
        self._pipe, self._name = pipe, name

    def __call__(self, *args, **kwargs) -> Pipeline:
        recorder = _Recorder()
        getattr(Redis, self._name)(recorder, *args, **kwargs)
        self._pipe._commands.extend(recorder.commands)
        return self._pipe


class _Recorder:
    def __init__(self):
        self.commands = []

    def execute(self, *args):
        self.commands.append(args)
