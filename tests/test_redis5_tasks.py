"""Every command a task workload sends (the CLI, the leader, a worker, leaving) is in Redis 5.0's command set.

Redis records every command it receives (MONITOR) while the CLI and the leader run a task
workload, and each is checked against Redis 5.0's command table, the commands it refuses inside
Lua, and options newer than 5.0.
"""

import json
import re
import socket
import threading
import time
import unittest

from support.base import RedisServer  # first: puts scripts/ on sys.path
from support.nodes import NodeEnv, wait_for
from support.tasks import TASK_HANDLERS, TaskCase

from distnode.core import keys
from distnode.tasks import routes
from distnode.tasks import submit
from distnode.tasks import worker

CLI_TASKS = {"handlers": TASK_HANDLERS, "backoff_base_s": 0}

SERVER = RedisServer(name="redis5-tasks")  # started by the first class, closed after the module


# Every command of Redis 5.0 (its command table), and those it refuses inside Lua ("s" flag).
REDIS5_COMMANDS = frozenset("""
module get set setnx setex psetex append strlen del unlink exists setbit getbit bitfield setrange getrange
substr incr decr mget rpush lpush rpushx lpushx linsert rpop lpop brpop brpoplpush blpop llen lindex lset
lrange ltrim lrem rpoplpush sadd srem smove sismember scard spop srandmember sinter sinterstore sunion
sunionstore sdiff sdiffstore smembers sscan zadd zincrby zrem zremrangebyscore zremrangebyrank
zremrangebylex zunionstore zinterstore zrange zrangebyscore zrevrangebyscore zrangebylex zrevrangebylex
zcount zlexcount zrevrange zcard zscore zrank zrevrank zscan zpopmin zpopmax bzpopmin bzpopmax hset hsetnx
hget hmset hmget hincrby hincrbyfloat hdel hlen hstrlen hkeys hvals hgetall hexists hscan incrby decrby
incrbyfloat getset mset msetnx randomkey select swapdb move rename renamenx expire expireat pexpire
pexpireat keys scan dbsize auth ping echo save bgsave bgrewriteaof shutdown lastsave type multi exec
discard sync psync replconf flushdb flushall sort info monitor ttl touch pttl persist slaveof replicaof
role debug config subscribe unsubscribe psubscribe punsubscribe publish pubsub watch unwatch cluster
restore restore-asking migrate asking readonly readwrite dump object memory client eval evalsha slowlog
script time bitop bitcount bitpos wait command geoadd georadius georadius_ro georadiusbymember
georadiusbymember_ro geohash geopos geodist pfselftest pfadd pfcount pfmerge pfdebug xadd xrange xrevrange
xlen xread xreadgroup xgroup xsetid xack xpending xclaim xinfo xdel xtrim post host: latency lolwut
""".split())
REDIS5_NOSCRIPT = frozenset("""
module brpop brpoplpush blpop bzpopmin bzpopmax auth save bgsave bgrewriteaof shutdown multi exec discard
sync psync replconf monitor slaveof replicaof role debug config subscribe unsubscribe psubscribe
punsubscribe watch unwatch client eval evalsha script wait latency xread xreadgroup
""".split())
# Options newer than 5.0 of commands that exist in 5.0 (MKSTREAM landed on 5.0's release day: avoided too).
NEWER_OPTIONS = {
    "xadd": {"NOMKSTREAM", "MINID", "LIMIT"}, "xtrim": {"MINID", "LIMIT"}, "xpending": {"IDLE"},
    "xgroup": {"CREATECONSUMER", "ENTRIESREAD", "MKSTREAM"}, "xclaim": {"LASTID"}, "xreadgroup": {"CLAIM"},
    "set": {"GET", "KEEPTTL", "EXAT", "PXAT"}, "zadd": {"GT", "LT"},
    "zrange": {"BYSCORE", "BYLEX", "REV", "LIMIT"}, "expire": {"NX", "XX", "GT", "LT"},
    "pexpire": {"NX", "XX", "GT", "LT"}, "info": {"EVERYTHING"},
}
_MONITOR_LINE = re.compile(r'^\+?\d+\.\d+ \[\d+ ([^\]]+)\] (.*)$')
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """Collect MONITOR lines from a background thread until stop()."""

    def __init__(self, server):
        self.sock = socket.create_connection((server.host, server.port), timeout=0.2)
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.lines, self._buf, self._stop = [], b"", threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            self._buf += data
            *done, self._buf = self._buf.split(b"\r\n")
            self.lines += [line.decode("utf-8", "replace") for line in done]

    def stop(self):
        time.sleep(0.2)
        self._stop.set()
        self.thread.join(5)
        self.sock.close()

    def commands(self):
        """(source, command name in lower case, upper-cased words) for each line; source 'lua' for scripts."""
        for line in self.lines:
            match = _MONITOR_LINE.match(line)
            if not match:
                continue
            words = _QUOTED.findall(match.group(2))
            if words:
                yield match.group(1), words[0].lower(), {w.upper() for w in words[1:] if len(w) < 32}


class Redis5Compatibility(TaskCase):
    shared_server = SERVER

    def test_task_workload_sends_only_redis_5_commands(self):
        monitor = Monitor(SERVER)
        try:
            self._workload()
        finally:
            monitor.stop()
        seen = list(monitor.commands())
        names = {name for _, name, _ in seen}
        for expected in ("evalsha", "xreadgroup", "xadd", "xack", "xclaim", "xpending", "xinfo", "xgroup", "xtrim"):
            self.assertIn(expected, names, "the workload did not exercise %s" % expected)
        problems = set()
        for source, name, words in seen:
            if name not in REDIS5_COMMANDS:
                problems.add("%s is not a Redis 5.0 command" % name)
            elif source == "lua" and name in REDIS5_NOSCRIPT:
                problems.add("%s is called from Lua, which Redis 5.0 refuses" % name)
            elif words & NEWER_OPTIONS.get(name, set()):
                problems.add("%s uses %s, newer than Redis 5.0" % (name, words & NEWER_OPTIONS[name]))
        self.assertEqual(problems, set())

    def _workload(self):
        settings = {"tasks": dict(CLI_TASKS, stream_maxlen=2)}
        n1, n2 = (NodeEnv(self.tmp, node_id, SERVER, config=settings) for node_id in ("n1", "n2"))
        for node in (n1, n2):
            node.run("heartbeat.py")
        n1.run("leader_election.py")
        for args in (("--type", "echo", "--key", "same"), ("--type", "echo", "--key", "same"),
                     ("--type", "echo", "--node", "n2"), ("--type", "fail", "--max-attempts", "1"),
                     ("--type", "fail", "--max-attempts", "2")):
            self.assertEqual(n1.run("task_queue.py", "submit", *args).returncode, 0)
        n2.run("task_queue.py", "work")
        n1.run("task_queue.py", "work")
        dead = n1.run_json("task_queue.py", "list", "--state", "dead")["tasks"]
        for command in (("stats",), ("list",), ("status", dead[0]["id"]), ("retry", dead[0]["id"])):
            self.assertEqual(n1.run("task_queue.py", *command).returncode, 0, command)
        ghost = self.ctx("ghost")  # claims, then is never heard of again: reclaimed
        submit.submit(ghost, "true", "{}")
        self.lapse(worker.claim(ghost, routes.worker_streams(ghost), read_new=True)[0].id)
        self.assertGreaterEqual(self._leader_tick(n1)["tasks_reclaimed"], 1)
        leaving = self.ctx("n2")
        leaving.instance_token = json.loads(SERVER.command("HGET", keys.nodes(), "n2"))["instance"]  # n2's own
        submit.submit(leaving, "true", "{}")
        worker.claim(leaving, routes.worker_streams(leaving), read_new=True)
        self.assertEqual(n2.run_json("node_manager.py", "deregister")["tasks_handed_back"], 1)
        for _ in range(3):
            n1.run("task_queue.py", "work")
        n1.run("task_queue.py", "purge", "--done-older-than", "0", "--dead-older-than", "0")

    def _leader_tick(self, node: NodeEnv) -> dict:
        """Run failover_manager.py on ``node`` until it acts as the leader; return that tick's result."""
        def tick():
            node.run("heartbeat.py")
            result = node.run_json("failover_manager.py")
            return result if result["role"] == "leader" else None
        return wait_for(tick, 15, interval_s=0.2, message="%s to lead" % node.node_id)


if __name__ == "__main__":
    unittest.main()
