"""scripts/distnode/redis/errors.py: one exception tree, and error replies named by their first word.

Each case goes through the parser (how every reply arrives) and the project's
own refusals (FENCED, STALE, BADEPOCH, COLLISION) also through a real Lua
``redis.error_reply`` on a redis-server, by EVAL and by EVALSHA.
"""

import unittest

from support.base import RedisCase
from distnode.redis import errors
from distnode.redis.script import Script
from support.redis_extras import Redis, parse_all

OWN_REFUSALS = [
    ("FENCED", errors.FencedError, "FENCED n1 at epoch 3 is not the leader (lease held by n2)"),
    ("STALE", errors.StaleError, "STALE the published snapshot is at epoch 9, above 4"),
    ("BADEPOCH", errors.BadEpochError, 'BADEPOCH openclaw:cluster:epoch holds "x", not an epoch'),
    ("COLLISION", errors.CollisionError, "COLLISION host h1, pid 4242"),
]


class ErrorMappingTest(unittest.TestCase):
    def test_error_replies_are_returned_as_mapped_instances(self):
        cases = [
            (b"-ERR unknown command\r\n", errors.ResponseError),
            (b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", errors.WrongTypeError),
            (b"-NOSCRIPT No matching script\r\n", errors.NoScriptError),
            (b"-READONLY You can't write against a read only replica.\r\n", errors.ReadOnlyError),
            (b"-LOADING Redis is loading the dataset in memory\r\n", errors.LoadingError),
            (b"-NOAUTH Authentication required.\r\n", errors.NoAuthError),
            (b"-WRONGPASS invalid username-password pair\r\n", errors.WrongPassError),
            (b"-ERR invalid password\r\n", errors.WrongPassError),  # Redis < 6
            (b"-ERR Protocol error: unauthenticated multibulk length\r\n", errors.NoAuthError),  # Redis >= 6.2.6
            (b"-NOPERM this user has no permissions to run the 'eval' command\r\n", errors.NoPermError),
            (b"-BUSY Redis is busy running a script\r\n", errors.BusyError),
            (b"-EXECABORT Transaction discarded\r\n", errors.ExecAbortError),
            # Redis < 7 wraps an error raised inside a script; the inner error decides the class
            (b"-ERR Error running script (call to f_755c): @user_script:36: @user_script: 36: -READONLY You can't "
             b"write against a read only replica.\r\n", errors.ReadOnlyError),
            (b"-ERR Error running script (call to f_755c): @user_script:1: Script attempted to access a non "
             b"local key\r\n", errors.ResponseError),
        ]
        for raw, cls in cases:
            with self.subTest(raw=raw):
                (reply,) = parse_all(raw, 1)
                self.assertIs(type(reply), cls)
                self.assertEqual(str(reply), raw[1:-2].decode())
        (nested,) = parse_all(b"*2\r\n+OK\r\n-ERR inside\r\n")
        self.assertEqual(nested[0], "OK")
        self.assertIsInstance(nested[1], errors.ResponseError)
        self.assertTrue(issubclass(errors.WrongPassError, errors.AuthError))
        self.assertTrue(issubclass(errors.RedisTimeoutError, errors.RedisConnectionError))

    def test_own_refusals_are_their_own_classes(self):
        for prefix, cls, text in OWN_REFUSALS:
            with self.subTest(prefix=prefix):
                self.assertIs(errors.ERROR_PREFIXES[prefix], cls)
                self.assertTrue(issubclass(cls, errors.ResponseError))
                (reply,) = parse_all(b"-" + text.encode() + b"\r\n", 3)
                self.assertIs(type(reply), cls)
                self.assertEqual(str(reply), text)
                # Redis < 7 wraps an error raised (not returned) inside a script; the inner word decides
                wrapped = "ERR Error running script (call to f_1): @user_script:9: -" + text
                self.assertIs(type(errors.error_from_reply(wrapped)), cls)
        for text in ("FENCEDX n1", "ERR FENCED n1", "fenced n1", "STALEMATE"):
            with self.subTest(text=text):
                self.assertIs(type(errors.error_from_reply(text)), errors.ResponseError, "only the first word counts")


class LuaRefusalTest(RedisCase):
    """A Lua script's redis.error_reply('FENCED ...') is raised as FencedError, and so on."""

    flush_scripts = True

    def test_lua_error_reply_raises_its_class(self):
        r = Redis(self.server.host, self.server.port)
        self.addCleanup(r.close)
        for prefix, cls, text in OWN_REFUSALS:
            with self.subTest(prefix=prefix, how="EVAL"), self.assertRaises(cls) as caught:
                Script("refuse", "return redis.error_reply(ARGV[1])", 0)(r, (), (text,))
            self.assertEqual(str(caught.exception), text)
            script = Script("refuse_" + prefix.lower(), "if ARGV[1] == '' then return 1 end "
                            "return redis.error_reply(ARGV[1])", 0)
            self.assertEqual(script(r, (), ("",)), 1)  # by EVAL: the client now sends EVALSHA
            evalsha_before = self.server.command_calls("evalsha")
            with self.subTest(prefix=prefix, how="EVALSHA"), self.assertRaises(cls) as caught:
                script(r, (), (text,))
            self.assertEqual(str(caught.exception), text)
            self.assertEqual(self.server.command_calls("evalsha"), evalsha_before + 1)
            replies = r.request([("EVAL", "return redis.error_reply(ARGV[1])", 0, text), ("PING",)])
            self.assertIsInstance(replies[0], cls, "in a batch the error comes back in place")
            self.assertEqual(replies[1], "PONG")

if __name__ == "__main__":
    unittest.main()
