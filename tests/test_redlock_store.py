"""scripts/distnode/cluster/redlock_store.py on a fake clock: validity, the drift allowance, retries.

Three real redis-servers are the lease instances and the class's server is the data Redis;
only time is fake. The store takes its clock, sleep and randomness at construction, and each
instance's round trip is made to cost fake seconds (``SlowLink``), so a claim phase that eats
the whole lease runs in milliseconds, and nothing sleeps for real.
"""

import os
import unittest
from unittest import mock

from support.base import RedisCase  # first: puts scripts/ on sys.path
from support.nodes import NodeEnv
from support.redis_server import RedisServer
from distnode.cluster.lease_store import Memory, SingleRedisStore
from distnode.cluster.redlock_store import RedlockStore
from distnode.core import config, defaults, keys, local_state
from distnode.core import log as log_mod
from distnode.run.context import Context

ME = "n1"
INSTANCES = [RedisServer(name="redlock%d" % i) for i in range(3)]


def setUpModule():
    for server in INSTANCES:
        server.start()
        unittest.addModuleCleanup(server.close)


class FakeClock:
    """Monotonic seconds that move only when a test (or a fake round trip or sleep) moves them."""

    def __init__(self, now_s: float = 1000.0):
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


class SlowLink:
    """An instance's client whose round trips cost ``delays_s`` on ``clock`` (one popped per request;
    none left: free). Everything else is the real client."""

    def __init__(self, client, clock: FakeClock, delays_s):
        self._client, self._clock, self._delays_s = client, clock, list(delays_s)

    def request(self, commands):
        if self._delays_s:
            self._clock.now_s += self._delays_s.pop(0)
        return self._client.request(commands)

    def __getattr__(self, name):
        return getattr(self._client, name)


class FirstOfRange:
    """``rng`` for the store: ``uniform(low, high)`` records its range and returns ``low``."""

    def __init__(self):
        self.ranges = []

    def uniform(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return low


class RedlockStoreCase(RedisCase):
    def setUp(self):
        super().setUp()
        for server in INSTANCES:
            server.flushall()
        self.clock, self.rng, self.slept_s = FakeClock(), FirstOfRange(), []

    def sleep(self, seconds: float) -> None:
        self.slept_s.append(seconds)
        self.clock.now_s += seconds

    def store(self, lease_ttl_s: int, drift_factor: float, delays_s=(), sub: str = "") -> RedlockStore:
        """A store for node n1 (registered and alive in the data Redis) whose ``i``-th instance's
        round trips cost ``delays_s[i]`` (a list of fake seconds, one per request). ``sub``: a
        directory of its own under the test's (a node that remembers nothing)."""
        endpoints = [{"host": s.host, "port": s.port} for s in INSTANCES]
        election = {"lease_ttl": lease_ttl_s, "renew_interval": 1, "clock_drift_factor": drift_factor}
        env = NodeEnv(os.path.join(self.tmp, sub), ME, self.server,
                      {"redis": {"instances": endpoints}, "election": election})
        cfg = config.load(env.config_dir, env.log_dir)
        cfg.values["node"]["id"] = ME
        cfg.values["redis"].update(host=self.server.host, port=self.server.port)
        local_state.atomic_write(os.path.join(cfg.run_dir, ME + ".instance"), b"x")
        ctx = Context("test", cfg, log_mod.Logger("test", ME, env.log_dir, console=None, use_syslog=False), {})
        self.addCleanup(ctx.close)
        self.server.command("SET", keys.heartbeat(ME), "1", "PX", 60000)
        self.server.command("HSET", keys.nodes(), ME, '{"id": "n1", "status": "online", "instance": "x"}')
        memory = Memory(ctx, ME)
        store = RedlockStore(ctx, memory, SingleRedisStore(ctx, memory, "x"), clock=self.clock, sleep=self.sleep,
                             rng=self.rng)
        self.addCleanup(store.close)
        links = [SlowLink(client, self.clock, delays) for client, delays in
                 zip(store.instances(), list(delays_s) + [[]] * len(INSTANCES))]
        store.instances = lambda: links
        return store

    def step(self, store: RedlockStore):
        """One election step as the elector runs it (under the node's attempt lock); never sleeps for real."""
        with mock.patch("time.sleep", side_effect=AssertionError("slept for real")):
            return store.exclusive(store.acquire_or_renew)

    def claims(self) -> list:
        return [s.command("GET", keys.leader()) for s in INSTANCES]

    def epochs(self) -> list:
        return [s.command("GET", keys.epoch()) for s in INSTANCES]


class Validity(RedlockStoreCase):
    def test_a_claim_phase_longer_than_the_lease_is_no_quorum_after_every_attempt(self):
        # every round trip to every instance costs 1.1 s: the claims alone take 3.3 s of a 3 s lease
        store = self.store(3, 0.01, [[1.1] * 10] * len(INSTANCES))
        obs = self.step(store)
        self.assertEqual((obs.outcome, obs.leader, obs.lease_ms), ("no_quorum", "", 0))
        retries = defaults.REDLOCK_ATTEMPTS - 1
        self.assertEqual(self.rng.ranges, [defaults.REDLOCK_RETRY_DELAY_S] * retries, "a random delay per retry")
        self.assertEqual(self.slept_s, [defaults.REDLOCK_RETRY_DELAY_S[0]] * retries, "slept on the fake clock")
        self.assertEqual(self.claims(), [None] * len(INSTANCES), "the claims it took were given back")
        self.assertEqual(self.epochs(), [None] * len(INSTANCES), "an attempt out of validity takes no epoch (R2)")
        self.assertIsNone(self.server.command("GET", keys.leader()), "nothing announced in the data Redis")

    def test_the_announced_lease_is_what_is_left_less_the_drift_allowance(self):
        # 0.25 s per instance round trip: 0.75 s of claims, 0.75 s of raises before the announce
        store = self.store(10, 0.05, [[0.25] * 2] * len(INSTANCES))
        obs = self.step(store)
        drift_ms = 10000 * 0.05 + defaults.REDLOCK_DRIFT_EXTRA_MS
        self.assertEqual((obs.outcome, obs.leader, obs.epoch), ("acquired", ME, 1))
        self.assertEqual(obs.lease_ms, 10000 - 1500 - drift_ms)
        data_pttl_ms = int(self.server.command("PTTL", keys.leader()))
        self.assertLessEqual(data_pttl_ms, 10000 - 1500 - drift_ms, "the data lease outlives the validity")
        self.assertGreater(data_pttl_ms, 10000 - 1500 - drift_ms - 5000, "announced with the validity left")
        self.assertEqual(self.claims(), [ME] * len(INSTANCES))
        self.assertEqual(self.slept_s, [])

    def test_a_claim_leaves_at_least_a_millisecond_past_the_drift_allowance_or_is_given_back(self):
        # one attempt; the first instance's claim costs ``claim_s`` of a 3 s lease whose allowance is 32 ms
        drift_ms = 3000 * 0.01 + defaults.REDLOCK_DRIFT_EXTRA_MS
        rows = [((3000 - drift_ms) / 1000, "no_quorum", 0),  # nothing left
                ((3000 - drift_ms - 0.5) / 1000, "no_quorum", 0),  # half a millisecond is not one
                ((3000 - drift_ms - 1.5) / 1000, "acquired", 1),
                ((3000 - drift_ms - 40.5) / 1000, "acquired", 40)]
        for row, (claim_s, outcome, lease_ms) in enumerate(rows):
            with self.subTest(claim_s=claim_s), mock.patch.object(defaults, "REDLOCK_ATTEMPTS", 1):
                for server in INSTANCES + [self.server]:
                    server.flushall()
                obs = self.step(self.store(3, 0.01, [[claim_s]], sub=str(row)))
                self.assertEqual((obs.outcome, obs.lease_ms), (outcome, lease_ms))
                won = outcome == "acquired"
                self.assertEqual(self.claims(), [ME if won else None] * len(INSTANCES))
                self.assertEqual(self.epochs(), ["1" if won else None] * len(INSTANCES), "R3 only once R2 kept it")


if __name__ == "__main__":
    unittest.main()
