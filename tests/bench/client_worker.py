"""One throughput measurement in its own process: pipelined SET then GET with one client library.

    python client_worker.py --client ours|redispy|hiredis --batch N --seconds S --port P

Prints one JSON line: {"set": ops/s, "get": ops/s}. Each phase runs whole
batches of ``N`` commands on one connection (``N`` = 1: plain calls, no
pipeline) for ``S`` seconds after a short warm-up. Keys cycle over 1000 names,
values are 3 bytes (redis-benchmark's default). ``redispy`` forces redis-py's
pure-Python RESP parser; ``hiredis`` uses its hiredis parser.
"""

import json
import os
import sys
import time

KEYSPACE = 1000
VALUE = b"xxx"
WARMUP_S = 0.1


def ours(port: int):
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [tests, os.path.join(os.path.dirname(tests), "scripts")]
    from support.redis_extras import Redis  # the product's client with the tests' command helpers
    client = Redis("127.0.0.1", port)

    def run(op: str, names: list):
        if len(names) == 1:
            return client.set(names[0], VALUE) if op == "SET" else client.get(names[0])
        pipe = client.pipeline()
        for name in names:
            pipe.set(name, VALUE) if op == "SET" else pipe.get(name)
        return pipe.execute()
    return run


def redispy(port: int, parser: str):
    import redis
    from redis import _parsers
    if parser == "hiredis":
        if not redis.utils.HIREDIS_AVAILABLE:
            raise SystemExit("hiredis is not installed")
        cls = _parsers._HiredisParser
    else:
        cls = _parsers._RESP2Parser
    client = redis.Redis(connection_pool=redis.ConnectionPool(host="127.0.0.1", port=port, parser_class=cls,
                                                              protocol=2))

    def run(op: str, names: list):
        if len(names) == 1:
            return client.set(names[0], VALUE) if op == "SET" else client.get(names[0])
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.set(name, VALUE) if op == "SET" else pipe.get(name)
        return pipe.execute()
    return run


def phase(run, op: str, batch: int, seconds: float) -> float:
    names = ["bench:tp:%d" % i for i in range(KEYSPACE)]
    i, done = 0, 0
    deadline = time.perf_counter() + WARMUP_S
    while time.perf_counter() < deadline:
        run(op, names[:batch])
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        start = i % KEYSPACE
        chunk = names[start:start + batch]
        if len(chunk) < batch:
            chunk = chunk + names[:batch - len(chunk)]
        run(op, chunk)
        i += batch
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - started)


def main(argv) -> int:
    args = dict(zip(argv[::2], argv[1::2]))
    port, batch, seconds = int(args["--port"]), int(args["--batch"]), float(args["--seconds"])
    kind = args["--client"]
    run = ours(port) if kind == "ours" else redispy(port, "hiredis" if kind == "hiredis" else "python")
    result = {"set": phase(run, "SET", batch, seconds / 2), "get": phase(run, "GET", batch, seconds / 2)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
