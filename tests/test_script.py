"""scripts/distnode/redis/script.py: the one way to run Lua: Script and request_with_scripts.

EVAL the first time on a client (one round trip, no hashlib), EVALSHA after,
EVAL again on NOSCRIPT; scripts and plain commands share one round trip; a
wrong key count is refused before anything is sent.
"""

import unittest
from unittest import mock

from support.base import RedisCase
from distnode.redis import errors
from distnode.redis.script import Script, request_with_scripts
from support.redis_extras import Redis

COUNT = Script("count", "return redis.call('INCR', KEYS[1])", 1)
ECHO = Script("echo", "return {KEYS[1], ARGV[1]}", 1)


class ScriptTest(RedisCase):
    SRC = "redis.call('INCR', KEYS[1]); return ARGV[1]"
    flush_scripts = True

    def setUp(self):
        super().setUp()
        self.r = Redis(self.server.host, self.server.port)
        self.addCleanup(self.r.close)

    def test_eval_first_then_evalsha_then_noscript_fallback(self):
        script = Script("incr_echo", self.SRC, 1)
        self.server.command("CONFIG", "RESETSTAT")
        self.assertEqual(script(self.r, ("n",), ("a",)), b"a")
        self.assertEqual((self.server.command_calls("eval"), self.server.command_calls("evalsha")), (1, 0))
        self.assertEqual(script(self.r, ("n",), ("b",)), b"b")
        self.assertEqual((self.server.command_calls("eval"), self.server.command_calls("evalsha")), (1, 1))
        self.server.command("SCRIPT", "FLUSH")
        self.assertEqual(script(self.r, ("n",), ("c",)), b"c")  # NOSCRIPT -> EVAL
        self.assertEqual((self.server.command_calls("eval"), self.server.command_calls("evalsha")), (2, 2))
        self.assertEqual(self.server.command("GET", "n"), "3")  # ran exactly once per call
        self.assertEqual(script.sha, self.server.command("SCRIPT", "LOAD", self.SRC))

    def test_script_error_is_raised(self):
        script = Script("boom", "return redis.error_reply('BOOM ' .. KEYS[1])", 1)
        for _ in range(2):  # raised each time (a script that refused is sent as EVAL again)
            with self.assertRaises(errors.ResponseError) as ctx:
                script(self.r, ("k",))
            self.assertIn("BOOM k", str(ctx.exception))

    def test_named_script_checks_its_key_count_before_sending(self):
        before = self.r.round_trips
        for keys in ((), ("a", "b")):
            with self.subTest(keys=keys), self.assertRaises(ValueError) as caught:
                COUNT(self.r, keys)
            self.assertIn("count takes 1 keys, got %d" % len(keys), str(caught.exception))
            with self.assertRaises(ValueError):
                request_with_scripts(self.r, [("SET", "x", 1), (COUNT, keys, ())])
        self.assertEqual(self.r.round_trips, before, "nothing was sent")
        self.assertEqual(self.server.command("DBSIZE"), 0)
        self.assertEqual(COUNT(self.r, ("n",)), 1)


class RequestWithScriptsTest(RedisCase):
    flush_scripts = True

    def setUp(self):
        super().setUp()
        self.r = Redis(self.server.host, self.server.port)
        self.addCleanup(self.r.close)

    def calls(self) -> tuple:
        return self.server.command_calls("eval"), self.server.command_calls("evalsha")

    def batch(self) -> list:
        return request_with_scripts(self.r, [("INCR", "before"), (COUNT, ("n",), ()), ("GET", "n"),
                                             (ECHO, ("k",), ("v",)), ("INCR", "after")])

    def test_mixed_batch_is_one_round_trip_eval_first_then_evalsha(self):
        self.server.command("CONFIG", "RESETSTAT")
        trips = self.r.round_trips
        self.assertEqual(self.batch(), [1, 1, b"1", [b"k", b"v"], 1])
        self.assertEqual(self.r.round_trips - trips, 1)
        self.assertEqual(self.calls(), (2, 0))
        self.assertEqual(self.batch(), [2, 2, b"2", [b"k", b"v"], 2])
        self.assertEqual(self.r.round_trips - trips, 2)
        self.assertEqual(self.calls(), (2, 2))
        self.assertEqual(COUNT(self.r, ("n",)), 3, "a script learnt in a batch goes as EVALSHA alone too")
        self.assertEqual(self.calls(), (2, 3))

    def test_noscript_after_script_flush_is_sent_again_with_eval(self):
        self.batch()
        self.server.command("SCRIPT", "FLUSH")
        self.server.command("CONFIG", "RESETSTAT")
        trips = self.r.round_trips
        replies = self.batch()
        self.assertEqual(self.r.round_trips - trips, 2, "one more round trip for the refused scripts")
        self.assertEqual(self.calls(), (2, 2))
        self.assertEqual(replies[1:4], [2, b"1", [b"k", b"v"]],
                         "each script ran once; GET ran once too, before the refused script's EVAL")
        self.assertEqual(replies[0], 2, "the command before the first refused script ran once")
        self.assertEqual(self.server.command("GET", "n"), "2")
        self.assertEqual(self.server.command("GET", "before"), "2")
        self.assertEqual(self.server.command("GET", "after"), "2", "a command after a refused script ran once")
        self.batch()
        self.assertEqual(self.calls(), (2, 4), "relearnt: EVALSHA again")

    def test_noscript_resends_only_the_refused_script_never_what_ran_after_it(self):
        # the worker's claim batch: [task_prepare, XREADGROUP, task_claim] with only task_prepare
        # evicted from Redis's script cache: nothing after it may run twice
        self.batch()
        self.server.command("SCRIPT", "FLUSH")
        self.server.command("SCRIPT", "LOAD", ECHO.source)
        self.server.command("CONFIG", "RESETSTAT")
        sent = []
        real = self.r.request
        with mock.patch.object(self.r, "request", side_effect=lambda commands: sent.append(commands) or real(commands)):
            replies = request_with_scripts(self.r, [(COUNT, ("n",), ()), ("INCR", "after"), (ECHO, ("k",), ("v",)),
                                                    (COUNT, ("m",), ())])
        self.assertEqual(replies, [2, 2, [b"k", b"v"], 1])
        self.assertEqual([c[0] for c in sent[1]], ["EVAL", "EVAL"], "only the refused scripts, once more")
        self.assertEqual((self.server.command("GET", "after"), self.server.command("GET", "n")), ("2", "2"))
        self.assertEqual(self.calls(), (2, 3), "ECHO ran once, as the EVALSHA Redis still knew")

    def test_a_wait_after_a_refused_script_is_sent_again_after_its_eval(self):
        # submit's [task_submit, WAIT]: the first WAIT came before the script's writes, so it counts for nothing
        COUNT(self.r, ("n",))
        self.server.command("SCRIPT", "FLUSH")
        self.server.command("CONFIG", "RESETSTAT")
        sent = []
        real = self.r.request
        with mock.patch.object(self.r, "request", side_effect=lambda commands: sent.append(commands) or real(commands)):
            replies = request_with_scripts(self.r, [("INCR", "before"), (COUNT, ("n",), ()), ("WAIT", 0, 0)])
        self.assertEqual(replies, [1, 2, 0])
        self.assertEqual([c[0] for c in sent[1]], ["EVAL", "WAIT"])
        self.assertEqual((self.server.command_calls("wait"), self.server.command("GET", "before")), (2, "1"))

    def test_error_replies_come_back_in_place(self):
        refuse = Script("refuse", "return redis.error_reply('FENCED ' .. KEYS[1])", 1)
        replies = request_with_scripts(self.r, [(refuse, ("k",), ()), ("WAIT", 0, 0), (ECHO, ("k",), ("v",))])
        self.assertIsInstance(replies[0], errors.FencedError)
        self.assertEqual(replies[1:], [0, [b"k", b"v"]])
        self.assertEqual(request_with_scripts(self.r, []), [])

    def test_variadic_script_takes_any_number_of_keys(self):
        variadic = Script("count_keys", "return #KEYS", None)  # numkeys None: the Lua loader checks
        self.assertEqual(variadic(self.r, ("a", "b", "c")), 3)
        self.assertEqual(request_with_scripts(self.r, [(variadic, (), ())]), [0])


if __name__ == "__main__":
    unittest.main()
