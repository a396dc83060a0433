"""server_info: which Redis server a node uses, and the verdicts status/health print about it.

Real redis-server processes: a bare master, one with AOF, a replica, and one
whose CONFIG command is disabled the way hosted Redis services do it.
"""

import unittest

import support.base  # noqa: F401 - first: puts scripts/ on sys.path
from support.redis_server import RedisServer
from distnode.redis.client import Redis
from distnode.redis import server_info


def verdicts(server: dict, min_replicas_acked: int = 0) -> dict:
    return {name: (verdict, detail) for name, verdict, detail in server_info.checks(server, min_replicas_acked)}


class ServerInfoTest(unittest.TestCase):
    def describe(self, server: RedisServer) -> dict:
        client = Redis(server.host, server.port)
        self.addCleanup(client.close)
        before = client.round_trips
        info = server_info.describe(client)
        self.assertEqual(client.round_trips - before, 1, "one round trip without Sentinel")
        return info

    def test_bare_master_warns_about_replicas_and_persistence(self):
        with RedisServer(name="bare") as redis:
            info = self.describe(redis)
            self.assertEqual((info["role"], info["replicas_online"], info["sentinel"]), ("master", 0, None))
            self.assertEqual(info["persistence"], {"aof": False, "rdb": False, "detail": "off"})
            found = verdicts(info)
            self.assertEqual(found["role"][0], "ok")
            self.assertEqual(found["replicas"][0], "warn")
            self.assertEqual(found["persistence"][0], "warn")
            self.assertIn("a restart empties Redis", found["persistence"][1])
            lines = server_info.summary_lines(info)
            self.assertEqual(lines[0], "redis: 127.0.0.1:%d (master, 0 replicas online, persistence: off)" % redis.port)
            self.assertEqual(len(lines), 3)  # the head and two warnings

    def test_master_with_aof_and_a_replica_is_fine_and_the_replica_fails(self):
        with RedisServer(appendonly=True, name="aof") as master, \
                RedisServer(replicaof=master, name="rep") as replica:
            replica.wait_replica_synced()
            master.wait_for_replicas(1)
            info = self.describe(master)
            self.assertEqual(info["replicas_online"], 1)
            self.assertEqual(info["replicas"][0]["address"], "127.0.0.1:%d" % replica.port)
            self.assertTrue(info["persistence"]["aof"])
            self.assertIn("appendfsync always", info["persistence"]["detail"])
            self.assertEqual({v for v, _ in verdicts(info).values()}, {"ok"})
            self.assertEqual(server_info.summary_lines(info)[1:], [])
            self.assertEqual(verdicts(info, min_replicas_acked=2)["replicas"][0], "fail")
            # issue 13 item 7: exactly min_replicas_acked replicas leave none to spare for a failover
            verdict, detail = verdicts(info, min_replicas_acked=1)["replicas"]
            self.assertEqual(verdict, "warn")
            self.assertIn("run at least 2 replicas", detail)

            at_replica = self.describe(replica)
            self.assertEqual((at_replica["role"], at_replica["master_of"]),
                             ("replica", "127.0.0.1:%d" % master.port))
            role = verdicts(at_replica)["role"]
            self.assertEqual(role[0], "fail")
            self.assertIn("writes fail", role[1])

    def test_config_refused_is_reported_not_fatal(self):
        with RedisServer(extra_args=["--rename-command", "CONFIG", ""], name="hosted") as redis:
            info = self.describe(redis)
            self.assertEqual(info["persistence"]["aof"], False)  # INFO persistence still answers
            self.assertIsNone(info["persistence"]["rdb"])
            self.assertIn("CONFIG GET refused", info["persistence"]["detail"])
            verdict, detail = verdicts(info)["persistence"]
            self.assertEqual(verdict, "warn")
            self.assertIn("RDB unknown", detail)


if __name__ == "__main__":
    unittest.main()
