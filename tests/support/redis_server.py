"""Private, throw-away redis-server / redis-sentinel processes for tests.

Stdlib only, Python 3.9+, independent of the project's own Redis client.

    from support.redis_server import RedisServer, Sentinel

    with RedisServer() as master, RedisServer(replicaof=master) as replica:
        master.command("SET", "k", "v")
        replica.wait_replica_synced()
        assert replica.command("GET", "k") == "v"
        with Sentinel(master, "mymaster", quorum=1) as sentinel:
            assert sentinel.get_master_addr() == ("127.0.0.1", master.port)

Every server binds 127.0.0.1 only, on a free port (never 6379), and lives in
its own temp dir holding its config, data and log (``redis.log``: stdout and
stderr of the process).  Servers still running when the interpreter exits are
stopped by an ``atexit`` hook, and on Linux they also get SIGKILL when the
test process dies (``PR_SET_PDEATHSIG``, only for servers started from the
main thread; env ``DN_REDIS_NO_PDEATHSIG=1`` turns it off).  Temp dirs are
removed by :meth:`RedisServer.close` / at exit unless env
``DN_KEEP_REDIS_DIRS=1``.  The binary comes from
:func:`redis_bin.find_redis_server` (env ``REDIS_SERVER_BIN`` etc.).

Timing notes: start ~25 ms, stop (SIGTERM) ~110 ms (redis acts on it in its
100 ms cron); a replica first connects on its 1 s replication cron, so
``wait_replica_synced`` takes 0-1 s.  A killed master restarted with
``keep_data=True`` comes back as a *master* (its config has no replicaof)
until a sentinel demotes it (~10 s).
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

try:
    from .redis_bin import find_redis_server, redis_version
except ImportError:  # loaded as a top-level module (its dir on sys.path)
    from redis_bin import find_redis_server, redis_version  # type: ignore[no-redef]

__all__ = [
    "RedisServer",
    "Sentinel",
    "RedisServerError",
    "RedisReplyError",
    "free_port",
    "resp_command",
    "wait_until",
]

LOCALHOST = "127.0.0.1"
DEFAULT_START_TIMEOUT = 10.0
_FORBIDDEN_PORTS = frozenset({6379, 26379})
_ADDR_IN_USE = ("Address already in use", "EADDRINUSE")


class RedisServerError(RuntimeError):
    """A test server failed to start / stop."""


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) from the server."""


# --------------------------------------------------------------------------
# ports


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on ``host`` right now (never 6379/26379).

    Chosen by binding port 0; another process may still take it before the
    caller binds it, so starting a server on it must be retried on failure.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in _FORBIDDEN_PORTS:
            return port
    raise RedisServerError("could not find a free port on %s" % host)


# --------------------------------------------------------------------------
# minimal RESP client (for assertions; deliberately separate from project code)


def _encode_arg(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, (bytearray, memoryview)):
        return bytes(arg)
    if isinstance(arg, bool):
        raise TypeError("bool is ambiguous as a Redis argument: pass 0/1 or a string")
    if isinstance(arg, (int, float)):
        return repr(arg).encode() if isinstance(arg, float) else str(arg).encode()
    if isinstance(arg, str):
        return arg.encode("utf-8")
    raise TypeError("unsupported Redis argument type: %r" % type(arg).__name__)


def _encode_command(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _encode_arg(arg)
        out.append(b"$%d\r\n" % len(data))
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)


class _RespConnection:
    """One blocking socket speaking RESP2 (RESP3 replies parsed too)."""

    def __init__(self, host: str, port: int, timeout: float, decode: bool = True) -> None:
        self.decode = decode
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "_RespConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, *args: Any) -> Any:
        self.sock.sendall(_encode_command(args))
        reply = self.read()
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def _line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                line = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return line
            self._fill()

    def _exact(self, size: int) -> bytes:
        while len(self.buf) < size + 2:
            self._fill()
        data = bytes(self.buf[:size])
        del self.buf[: size + 2]
        return data

    def _str(self, data: bytes) -> Union[str, bytes]:
        if not self.decode:
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data

    def read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return self._str(rest)
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind in (b"$", b"=", b"!"):
            size = int(rest)
            if size < 0:
                return None
            data = self._exact(size)
            if kind == b"!":
                return RedisReplyError(data.decode("utf-8", "replace"))
            if kind == b"=":  # verbatim string: "txt:" prefix
                data = data[4:]
            return self._str(data)
        if kind in (b"*", b"~", b">"):
            count = int(rest)
            if count < 0:
                return None
            return [self.read() for _ in range(count)]
        if kind == b"%":
            return {_hashable(self.read()): self.read() for _ in range(int(rest))}
        if kind == b"_":
            return None
        if kind == b"#":
            return rest == b"t"
        if kind == b",":
            return float(rest)
        if kind == b"(":
            return int(rest)
        raise RedisReplyError("unexpected reply from server: %r" % line[:80])


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def resp_command(
    host: str,
    port: int,
    *args: Any,
    password: Optional[str] = None,
    username: Optional[str] = None,
    timeout: float = 5.0,
    decode: bool = True,
) -> Any:
    """Send one command on a fresh connection and return the decoded reply.

    Bulk/simple strings become ``str`` (``bytes`` if not UTF-8, or always
    with ``decode=False``), integers ``int``, arrays ``list``, nil ``None``.
    An error reply raises :class:`RedisReplyError` (errors nested in an
    array, e.g. from EXEC, are returned as RedisReplyError instances).
    """
    if not args:
        raise ValueError("no command given")
    with _RespConnection(host, port, timeout, decode) as conn:
        if password is not None:
            conn.call(*(("AUTH", username, password) if username else ("AUTH", password)))
        return conn.call(*args)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str = "condition",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned).

    Exceptions from ``predicate`` count as "not yet"; on timeout raise
    ``TimeoutError`` naming ``message`` and the last exception, if any.
    """
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - polling
            last_exc = exc
        if time.monotonic() >= deadline:
            extra = " (last error: %s)" % last_exc if last_exc else ""
            raise TimeoutError("timed out after %.1fs waiting for %s%s" % (timeout, message, extra))
        time.sleep(interval)


def _parse_info(text: str) -> Dict[str, str]:
    info: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        info[key] = value
    return info


def _conf_quote(value: Any) -> str:
    """Quote a value for redis.conf (double quotes with escapes)."""
    text = str(value)
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"')
               .replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t"))
    return '"%s"' % escaped


# --------------------------------------------------------------------------
# process bookkeeping


_LIVE: "set[RedisServer]" = set()
_LIVE_LOCK = threading.Lock()


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _pdeathsig_preexec() -> Optional[Callable[[], None]]:
    """preexec_fn making the child get SIGKILL when this process dies.

    Linux's PDEATHSIG fires when the *thread* that forked exits, so it is
    only used for servers started from the main thread.
    """
    if not sys.platform.startswith("linux") or _truthy_env("DN_REDIS_NO_PDEATHSIG"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigkill = int(signal.SIGKILL)

    def _preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)

    return _preexec


def _cleanup_all() -> None:
    """atexit: stop every server still running and drop temp dirs."""
    with _LIVE_LOCK:
        servers = list(_LIVE)
    running = [s for s in servers if s.is_running]
    for server in running:
        server._signal(signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for server in running:
        proc = server._proc
        if proc is None:
            continue
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server._signal(signal.SIGKILL)
            try:
                proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
    for server in servers:
        server._remove_dir()


atexit.register(_cleanup_all)


# --------------------------------------------------------------------------
# servers

ReplicaOf = Union[Tuple[str, int], "RedisServer", None]


class RedisServer:
    """A private redis-server on 127.0.0.1:<free port> in its own temp dir.

    :param password: ``requirepass``; :meth:`command` then AUTHs itself.
    :param appendonly: AOF on with ``appendfsync always`` (data survives
        :meth:`kill` + :meth:`restart`); default no persistence at all
        (``save ""``, ``appendonly no``).
    :param replicaof: ``(host, port)`` or a :class:`RedisServer` to replicate.
    :param masterauth: password of the master (defaults to the master's
        ``password`` when ``replicaof`` is a RedisServer).
    :param extra_args: extra command-line args, e.g. ``["--maxmemory", "1mb"]``.
    :param port: fixed port (default: a free one, re-picked if another process
        grabs it first).
    :param binary: redis-server path (default :func:`find_redis_server`).
    :param start_timeout: seconds to wait for PING in :meth:`start`.
    :param name: label used in the temp dir name and messages.
    """

    kind = "redis-server"

    def __init__(
        self,
        password: Optional[str] = None,
        appendonly: bool = False,
        replicaof: ReplicaOf = None,
        masterauth: Optional[str] = None,
        extra_args: Optional[Sequence[str]] = None,
        *,
        port: Optional[int] = None,
        binary: Optional[str] = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        name: str = "redis",
        base_dir: Optional[str] = None,
    ) -> None:
        if port is not None and int(port) in _FORBIDDEN_PORTS:
            raise ValueError("port %s is reserved for real servers; tests must not use it" % port)
        if isinstance(replicaof, RedisServer):
            if masterauth is None:
                masterauth = replicaof.password
            replicaof = (replicaof.host, replicaof.port)
        self.password = password
        self.appendonly = bool(appendonly)
        self.replicaof: Optional[Tuple[str, int]] = (
            (str(replicaof[0]), int(replicaof[1])) if replicaof else None
        )
        self.masterauth = masterauth
        self.extra_args: List[str] = [str(a) for a in (extra_args or ())]
        self.start_timeout = float(start_timeout)
        self.name = name
        self._fixed_port = port is not None
        self._port: Optional[int] = int(port) if port is not None else None
        self._binary = binary
        self._base_dir = base_dir
        self._dir: Optional[str] = None
        self._proc: Optional[subprocess.Popen] = None
        self._paused = False
        self._version: Optional[Tuple[int, int, int]] = None
        self._ever_started = False

    # -- properties -------------------------------------------------------

    @property
    def host(self) -> str:
        return LOCALHOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("%s has no port yet: call start() first" % self.name)
        return self._port

    @property
    def address(self) -> Tuple[str, int]:
        return (self.host, self.port)

    @property
    def dir(self) -> str:
        """The server's temp dir (created on first access / start)."""
        if self._dir is None:
            base = self._base_dir or tempfile.gettempdir()
            self._dir = tempfile.mkdtemp(prefix="dn-%s-" % self.name, dir=base)
        return self._dir

    @property
    def conf_path(self) -> str:
        return os.path.join(self.dir, "redis.conf")

    @property
    def log_path(self) -> str:
        return os.path.join(self.dir, "redis.log")

    @property
    def binary(self) -> str:
        if self._binary is None:
            self._binary = find_redis_server()
        return self._binary

    @property
    def version(self) -> Tuple[int, int, int]:
        """Version of the binary, e.g. ``(7, 0, 15)``."""
        if self._version is None:
            self._version = redis_version(self.binary)
        return self._version

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    @property
    def url(self) -> str:
        auth = ":%s@" % quote(self.password, safe="") if self.password else ""
        return "redis://%s%s:%d/0" % (auth, self.host, self.port)

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else ("running" if self.is_running else "stopped")
        port = self._port if self._port is not None else "?"
        return "<%s %s %s:%s %s>" % (type(self).__name__, self.name, LOCALHOST, port, state)

    # -- config -----------------------------------------------------------

    def _config_lines(self) -> List[str]:
        lines = [
            "bind %s" % LOCALHOST,
            "port %d" % self.port,
            "dir %s" % _conf_quote(self.dir),
            "daemonize no",
            'logfile ""',
            "protected-mode yes",
            'save ""',
            "appendonly %s" % ("yes" if self.appendonly else "no"),
            "appendfsync always",
            # Redis 7 defaults to diskless full syncs delayed by 5 s (waiting
            # for more replicas to share the transfer): sync at once instead.
            "repl-diskless-sync-delay 0",
        ]
        if self.version >= (7, 0, 0):
            lines.append("enable-debug-command local")
        if self.password is not None:
            lines.append("requirepass %s" % _conf_quote(self.password))
        if self.replicaof:
            lines.append("replicaof %s %d" % self.replicaof)
        if self.masterauth is not None:
            lines.append("masterauth %s" % _conf_quote(self.masterauth))
        return lines

    def _argv(self) -> List[str]:
        return [self.binary, self.conf_path] + self.extra_args

    def _write_config(self) -> None:
        with open(self.conf_path, "w") as handle:
            handle.write("# generated by tests/support/redis_server.py\n")
            handle.write("\n".join(self._config_lines()) + "\n")

    # -- lifecycle --------------------------------------------------------

    def start(self) -> "RedisServer":
        """Start (no-op when running); wait until it answers PING."""
        if self.is_running:
            return self
        with _LIVE_LOCK:  # from now on atexit cleans up, even if start fails
            _LIVE.add(self)
        fresh = not os.path.exists(self.conf_path)
        # Only the very first start may move to another port (lost race for
        # a free_port()); a restart keeps its port, as a real node would.
        may_repick = fresh and not self._fixed_port and not self._ever_started
        attempts = 5 if may_repick else 1
        for attempt in range(attempts):
            if self._port is None or (may_repick and attempt > 0):
                self._port = free_port()
            if fresh:
                self._write_config()
            try:
                self._spawn_and_wait()
                self._ever_started = True
                return self
            except _PortInUse as exc:
                if attempt + 1 >= attempts:
                    raise RedisServerError(str(exc)) from None
        raise RedisServerError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(("\n=== %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self._argv()))).encode())
            log.flush()
            log_offset = log.tell()
            try:
                self._proc = subprocess.Popen(
                    self._argv(),
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # no SIGINT from the terminal's Ctrl-C
                    preexec_fn=_pdeathsig_preexec(),
                    close_fds=True,
                )
            except OSError as exc:
                raise RedisServerError("cannot run %s: %s" % (self.binary, exc)) from None
        self._paused = False
        try:
            self._wait_ready(log_offset)
        except BaseException:
            self._signal(signal.SIGKILL)
            if self._proc is not None:
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            raise

    def _wait_ready(self, log_offset: int) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        last_error = "no answer yet"
        ping_timeout = 0.2  # grows: a foreign listener on a raced port never answers
        while True:
            code = proc.poll()
            if code is not None:
                tail = self._log_tail(since=log_offset)
                message = "%s %s exited with code %s while starting on %s:%d; log %s:\n%s" % (
                    self.kind, self.name, code, self.host, self.port, self.log_path, tail)
                if any(marker in tail for marker in _ADDR_IN_USE):
                    raise _PortInUse("port %d is already in use: %s" % (self.port, message))
                raise RedisServerError(message)
            try:
                reply = self.command("PING", timeout=ping_timeout)
                if reply in ("PONG", b"PONG"):
                    # Something else may sit on the port (race): make sure it
                    # is our process that answered, and that loading is done.
                    info = self.info()
                    pid = info.get("process_id")
                    if pid is not None and int(pid) != proc.pid:
                        proc.poll()
                        last_error = "port %d answered by pid %s, not ours (%d)" % (
                            self.port, pid, proc.pid)
                        if proc.returncode is None:
                            time.sleep(0.05)
                            continue
                    elif info.get("loading", "0") == "0":
                        return
                    else:
                        last_error = "still loading"
            except RedisReplyError as exc:
                last_error = str(exc)  # e.g. LOADING
            except OSError as exc:
                last_error = str(exc) or type(exc).__name__
                if isinstance(exc, socket.timeout):
                    ping_timeout = min(ping_timeout * 2, 2.0)
            if time.monotonic() >= deadline:
                raise RedisServerError(
                    "%s %s on %s:%d did not answer PING within %.0fs (%s); log %s:\n%s" % (
                        self.kind, self.name, self.host, self.port, self.start_timeout,
                        last_error, self.log_path, self._log_tail(since=log_offset)))
            time.sleep(0.02)

    def _log_tail(self, lines: int = 20, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(since)
                data = handle.read()
        except OSError:
            return "(no log)"
        text = data.decode("utf-8", "replace").rstrip("\n")
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log (all runs)."""
        return self._log_tail(lines)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
            if sig in (signal.SIGTERM, signal.SIGKILL) and self._paused:
                proc.send_signal(signal.SIGCONT)  # a stopped process never handles SIGTERM
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful stop: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._paused = False
            return
        self._signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait(5)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed beyond what fsync already did)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._paused = False
            return
        self._signal(signal.SIGKILL)
        proc.wait(5)
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answered)."""
        if not self.is_running:
            raise RedisServerError("%s is not running" % self.name)
        self._signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.is_running:
            self._signal(signal.SIGCONT)
        self._paused = False

    def restart(self, keep_data: bool = True, timeout: float = 5.0) -> "RedisServer":
        """Stop (gracefully, if running) and start again on the same port.

        ``keep_data=True`` keeps the dir (data as far as persistence allows,
        and the config file, which redis/sentinel may have rewritten);
        ``keep_data=False`` wipes the dir (but the log) and writes a fresh
        config first.
        """
        self.stop(timeout)
        if not keep_data:
            self._wipe_dir()
        return self.start()

    def _wipe_dir(self) -> None:
        directory = self.dir
        for entry in os.listdir(directory):
            if entry == os.path.basename(self.log_path):
                continue
            path = os.path.join(directory, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        """Stop and remove the temp dir (unless env DN_KEEP_REDIS_DIRS=1)."""
        self.stop()
        self._remove_dir()
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def _remove_dir(self) -> None:
        if self._dir and not _truthy_env("DN_KEEP_REDIS_DIRS"):
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- talking to it ----------------------------------------------------

    def command(self, *args: Any, timeout: float = 5.0, auth: bool = True, decode: bool = True) -> Any:
        """One command over a fresh raw-RESP connection (AUTH first if the
        server has a password and ``auth``); see :func:`resp_command`."""
        return resp_command(
            self.host, self.port, *args,
            password=self.password if auth else None,
            timeout=timeout, decode=decode,
        )

    def flushall(self) -> None:
        self.command("FLUSHALL")

    def info(self, section: Optional[str] = None) -> Dict[str, str]:
        """``INFO [section]`` parsed into ``{key: value}`` (values are str)."""
        text = self.command(*(("INFO", section) if section else ("INFO",)))
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        return _parse_info(text)

    def command_calls(self, name: str) -> int:
        """How often command ``name`` (lower case) ran since start or CONFIG RESETSTAT (INFO commandstats)."""
        stats = self.info("commandstats").get("cmdstat_" + name, "calls=0")
        return int(stats.split(",")[0].split("=")[1])

    def wait_replica_synced(self, timeout: float = 10.0) -> None:
        """On a replica: wait for ``master_link_status:up``."""
        wait_until(
            lambda: self.info("replication").get("master_link_status") == "up",
            timeout, message="%s to sync with its master" % self.name,
        )

    def wait_for_replicas(self, count: int = 1, timeout: float = 10.0) -> None:
        """On a master: wait until ``count`` replicas are connected and online."""

        def _online() -> bool:
            info = self.info("replication")
            online = [k for k, v in info.items()
                      if k.startswith("slave") and k[5:].isdigit() and "state=online" in v]
            return len(online) >= count

        wait_until(_online, timeout, message="%d replica(s) of %s" % (count, self.name))


class _PortInUse(RedisServerError):
    pass


class Sentinel(RedisServer):
    """A redis-server in ``--sentinel`` mode monitoring one master.

    :param master: the :class:`RedisServer` to monitor, or ``(host, port)``.
    :param master_name: name used in ``sentinel monitor`` / SENTINEL commands.
    :param quorum: sentinels that must agree the master is down.
    :param down_after_ms: ``sentinel down-after-milliseconds``.
    :param failover_timeout_ms: ``sentinel failover-timeout``.
    :param auth_pass: master's password (defaults to ``master.password``).
    :param password: ``requirepass`` of the sentinel itself.
    :param extra_conf: extra config lines, e.g. ``["sentinel announce-ip 127.0.0.1"]``.

    The sentinel rewrites its config file (state, ``myid``, known replicas
    and sentinels), which therefore lives in the writable temp dir;
    ``restart(keep_data=True)`` reuses it, ``keep_data=False`` starts over.
    Each instance gets its own file and so its own ``myid`` (sentinels
    sharing one ignore each other).  Pitfall: the rewrite writes
    ``auth-pass`` unquoted, so a master password with spaces or quotes
    breaks the next start of the sentinel: use plain-token passwords.
    """

    kind = "redis-sentinel"

    def __init__(
        self,
        master: Union[Tuple[str, int], RedisServer],
        master_name: str = "mymaster",
        quorum: int = 1,
        *,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        parallel_syncs: int = 1,
        auth_pass: Optional[str] = None,
        password: Optional[str] = None,
        extra_conf: Optional[Sequence[str]] = None,
        extra_args: Optional[Sequence[str]] = None,
        port: Optional[int] = None,
        binary: Optional[str] = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        name: str = "sentinel",
        base_dir: Optional[str] = None,
    ) -> None:
        super().__init__(
            password=password, extra_args=extra_args, port=port, binary=binary,
            start_timeout=start_timeout, name=name, base_dir=base_dir,
        )
        if isinstance(master, RedisServer):
            if auth_pass is None:
                auth_pass = master.password
            master = (master.host, master.port)
        self.master_host, self.master_port = str(master[0]), int(master[1])
        self.master_name = master_name
        self.quorum = int(quorum)
        self.down_after_ms = int(down_after_ms)
        self.failover_timeout_ms = int(failover_timeout_ms)
        self.parallel_syncs = int(parallel_syncs)
        self.auth_pass = auth_pass
        self.extra_conf = list(extra_conf or ())

    @property
    def conf_path(self) -> str:
        return os.path.join(self.dir, "sentinel.conf")

    def _config_lines(self) -> List[str]:
        name = self.master_name
        lines = [
            "bind %s" % LOCALHOST,
            "port %d" % self.port,
            "dir %s" % _conf_quote(self.dir),
            "daemonize no",
            'logfile ""',
            "sentinel monitor %s %s %d %d" % (name, self.master_host, self.master_port, self.quorum),
            "sentinel down-after-milliseconds %s %d" % (name, self.down_after_ms),
            "sentinel failover-timeout %s %d" % (name, self.failover_timeout_ms),
            "sentinel parallel-syncs %s %d" % (name, self.parallel_syncs),
        ]
        if self.auth_pass is not None:
            lines.append("sentinel auth-pass %s %s" % (name, _conf_quote(self.auth_pass)))
        if self.password is not None:
            lines.append("requirepass %s" % _conf_quote(self.password))
        lines.extend(self.extra_conf)
        return lines

    def _argv(self) -> List[str]:
        return [self.binary, self.conf_path, "--sentinel"] + self.extra_args

    def get_master_addr(self, master_name: Optional[str] = None) -> Optional[Tuple[str, int]]:
        """``SENTINEL get-master-addr-by-name`` as ``(host, port)`` or None."""
        reply = self.command("SENTINEL", "get-master-addr-by-name", master_name or self.master_name)
        if not reply:
            return None
        return (reply[0], int(reply[1]))

    def master_state(self, master_name: Optional[str] = None) -> Dict[str, str]:
        """``SENTINEL MASTER <name>`` as a dict (``flags``, ``num-slaves``...)."""
        reply = self.command("SENTINEL", "MASTER", master_name or self.master_name)
        return dict(zip(reply[::2], reply[1::2]))
