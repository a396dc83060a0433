"""scripts/distnode/redis/connection.py: faults, deadlines and reply bounds on the wire.

Every fault is a RedisError naming host:port, raised within its timeout,
without the password: fake servers (tests/support/fake_servers.py) that never
answer, speak HTTP, close mid-reply, drip their bytes, claim a 100 GB bulk or
stream an endless array; closed ports, unresolvable and slow-resolving hosts.
The handshake has its own file, test_handshake.py.
"""

import socket
import threading
import time
import unittest
from unittest import mock

import support.base  # noqa: F401 - puts scripts/ on sys.path
from distnode.redis import errors, resp
from support import fake_servers as fakes
from support.redis_extras import Redis
from support.redis_server import free_port

PASSWORD = "pw-Secret-4711"


class FaultTest(unittest.TestCase):
    """Every fault is a RedisError naming host:port, raised within its timeout, without the password."""

    def assert_fault(self, fake_handler, exc_class, *words, timeout_s=0.5, **kw):
        with fakes.FakeServer(fake_handler) as fake:
            r = Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=timeout_s,
                         connect_timeout_s=timeout_s, **kw)
            started = time.monotonic()
            with self.assertRaises(exc_class) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
            r.close()
        msg = str(ctx.exception)
        self.assertIn("127.0.0.1:%d" % fake.port, msg)
        self.assertNotIn(PASSWORD, msg)
        for word in words:
            self.assertIn(word, msg)
        self.assertLess(elapsed, timeout_s + 3)
        return ctx.exception, elapsed

    def test_server_that_never_answers(self):
        _exc, elapsed = self.assert_fault(fakes.silent(), errors.RedisTimeoutError, "no complete reply", timeout_s=0.3)
        self.assertGreaterEqual(elapsed, 0.25)

    def test_http_server(self):
        self.assert_fault(fakes.http(), errors.ProtocolError, "not RESP")

    def test_closes_mid_reply(self):
        exc, _ = self.assert_fault(fakes.close_mid_reply(), errors.RedisConnectionError, "mid-reply")
        self.assertNotIsInstance(exc, errors.RedisTimeoutError)

    def test_claims_a_100_gb_bulk(self):
        self.assert_fault(fakes.huge_bulk(), errors.ProtocolError, "107374182400")

    def test_loading_and_readonly(self):
        for text, cls in (("LOADING Redis is loading the dataset in memory", errors.LoadingError),
                          ("READONLY You can't write against a read only replica.", errors.ReadOnlyError)):
            with self.subTest(cls=cls.__name__), fakes.FakeServer(fakes.error_reply(text)) as fake:
                r = Redis(fake.host, fake.port, socket_timeout_s=1)
                with self.assertRaises(cls):
                    r.execute("SET", "k", "v")
                self.assertIsInstance(r.request([("SET", "k", "v")])[0], cls)
                r.close()

    def test_send_that_cannot_complete_times_out(self):
        # A server that never reads: the send itself must time out as a RedisTimeoutError.
        with fakes.FakeServer(fakes.no_read()) as fake:
            r = Redis(fake.host, fake.port, socket_timeout_s=0.3)
            with self.assertRaises(errors.RedisTimeoutError) as ctx:
                r.set("k", b"x" * (16 * 1024 * 1024))  # more than both socket buffers can hold
            self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))

    def test_connection_reset_before_send(self):
        with fakes.FakeServer(fakes.reset_after(1)) as fake:
            r = Redis(fake.host, fake.port, socket_timeout_s=1)
            self.assertEqual(r.ping(), "OK")  # the pooled connection is then reset by the peer
            time.sleep(0.1)
            with self.assertRaises(errors.RedisConnectionError) as ctx:
                r.ping()
            self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))
            r.close()

    def test_connect_timeout(self):
        # A listener whose accept queue is full: the kernel drops further SYNs, so connect() hangs.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        time.sleep(0.05)
        r = Redis("127.0.0.1", port, password=PASSWORD, connect_timeout_s=0.3, socket_timeout_s=0.3)
        started = time.monotonic()
        with self.assertRaises(errors.RedisTimeoutError) as ctx:
            r.ping()
        self.assertLess(time.monotonic() - started, 3)
        self.assertIn("127.0.0.1:%d" % port, str(ctx.exception))
        self.assertNotIn(PASSWORD, str(ctx.exception))

    def test_unresolvable_host(self):
        r = Redis("no-such-host.invalid", 6390, password=PASSWORD, connect_timeout_s=3)
        with self.assertRaises(errors.RedisConnectionError) as ctx:
            r.ping()
        self.assertIn("no-such-host.invalid:6390", str(ctx.exception))
        self.assertNotIn(PASSWORD, str(ctx.exception))

    def test_closed_port(self):
        port = free_port()
        r = Redis("127.0.0.1", port, password=PASSWORD, connect_timeout_s=1)
        with self.assertRaises(errors.RedisConnectionError) as ctx:
            r.ping()
        msg = str(ctx.exception)
        self.assertNotIsInstance(ctx.exception, errors.RedisTimeoutError)
        self.assertIn("127.0.0.1:%d" % port, msg)
        self.assertIn("refused", msg.lower())
        self.assertNotIn(PASSWORD, msg)

    def test_handshake_is_answered_before_any_command_is_sent(self):
        with fakes.FakeServer(fakes.silent()) as fake:
            r = Redis(fake.host, fake.port, password=PASSWORD, db=2, socket_timeout_s=0.2)
            with self.assertRaises(errors.RedisTimeoutError):
                r.ping()
        expected = b"".join(resp.encode_command(c) for c in (["AUTH", PASSWORD], ["SELECT", 2]))
        self.assertEqual(bytes(fake.received), expected, "PING must wait for the handshake's replies")
        self.assertEqual(fake.connections, 1)

    def test_refused_handshake_sends_no_command(self):
        with fakes.FakeServer(fakes.error_reply("WRONGPASS invalid username-password pair")) as fake:
            r = Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1)
            with self.assertRaises(errors.AuthError):
                r.execute("SET", "k", "v")
            r.close()
        self.assertEqual(bytes(fake.received), resp.encode_command(["AUTH", PASSWORD]))


class ReplyBoundsTest(unittest.TestCase):
    """Issue 13 item 13: one request's replies finish within socket_timeout_s, one reply stays
    within max_reply_bytes (array elements count too), and resolving the host counts against
    connect_timeout_s. Bounds here are generous: the point is that they hold at all."""

    def test_streamed_array_of_empty_arrays_is_refused_not_grown(self):
        # 2**30 - 1 elements claimed, a million empty arrays sent: the reply must be refused
        # (ProtocolError) instead of being built until the timeout or the memory runs out.
        self.assert_refused_naming_the_server(fakes.array_stream(2 ** 30 - 1, 1000000))

    def test_nested_arrays_under_every_single_length_cap_are_refused(self):
        # Each array's length is modest; together they pass the bound (20000 x 100 elements).
        item = b"*100\r\n" + b"*0\r\n" * 100
        self.assert_refused_naming_the_server(fakes.array_stream(20000, 20000, item=item, chunk_items=100))

    def assert_refused_naming_the_server(self, handler) -> None:
        with fakes.FakeServer(handler) as fake:
            r = Redis(fake.host, fake.port, socket_timeout_s=20, connect_timeout_s=2)
            self.addCleanup(r.close)
            with self.assertRaises(errors.ProtocolError) as ctx:
                r.execute("SMEMBERS", "s")
        self.assertIn("127.0.0.1:%d" % fake.port, str(ctx.exception))

    def test_dripping_server_cannot_hold_a_reply_past_the_timeout(self):
        # One byte every 0.2 s keeps every recv() alive; the whole reply must still end in time.
        reply = b"$100\r\n" + b"x" * 100 + b"\r\n"
        with fakes.FakeServer(fakes.drip(reply, 0.2)) as fake:
            r = Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            started = time.monotonic()
            with self.assertRaises(errors.RedisTimeoutError) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
        msg = str(ctx.exception)
        self.assertIn("127.0.0.1:%d" % fake.port, msg)
        self.assertNotIn(PASSWORD, msg)
        self.assertLess(elapsed, 5, "a 1 s timeout held the call %.1fs" % elapsed)

    def test_dripping_pipeline_shares_one_deadline(self):
        # Each reply alone arrives within the timeout; the request as a whole does not.
        with fakes.FakeServer(fakes.drip(b"+OK\r\n", 0.1)) as fake:
            r = Redis(fake.host, fake.port, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            started = time.monotonic()
            with self.assertRaises(errors.RedisTimeoutError):
                r.request([("PING",)] * 10)
            elapsed = time.monotonic() - started
        self.assertLess(elapsed, 5)

    def test_name_resolution_counts_against_the_connect_timeout(self):
        release = threading.Event()
        real = socket.getaddrinfo

        def hanging(host, *args, **kwargs):
            if host in ("slow-dns.example", b"slow-dns.example"):
                release.wait(30)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
            return real(host, *args, **kwargs)

        self.addCleanup(release.set)
        with mock.patch.object(socket, "getaddrinfo", hanging):
            r = Redis("slow-dns.example", 6390, password=PASSWORD, connect_timeout_s=0.5, socket_timeout_s=0.5)
            started = time.monotonic()
            with self.assertRaises(errors.RedisTimeoutError) as ctx:
                r.ping()
            elapsed = time.monotonic() - started
            release.set()
        msg = str(ctx.exception)
        self.assertIn("slow-dns.example:6390", msg)
        self.assertNotIn(PASSWORD, msg)
        self.assertLess(elapsed, 5, "resolving held the call %.1fs" % elapsed)

    def test_handshake_and_commands_share_one_deadline(self):
        # Each reply takes ~0.72 s, under the 1 s timeout; AUTH and PING together do not fit.
        with fakes.FakeServer(fakes.drip(b"+OK\r\n", 0.18)) as fake:
            r = Redis(fake.host, fake.port, password=PASSWORD, socket_timeout_s=1, connect_timeout_s=1)
            self.addCleanup(r.close)
            with self.assertRaises(errors.RedisTimeoutError) as ctx:
                r.ping()
        self.assertNotIn(PASSWORD, str(ctx.exception))


if __name__ == "__main__":
    unittest.main()
