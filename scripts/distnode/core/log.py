"""Line logging to ``logs/<script>.log``, stderr and syslog, safe across processes.

Written without the ``logging`` package, whose import alone costs a cron
tick more than its Redis round trip. Each line is one ``os.write`` on an
``O_APPEND`` descriptor, so lines from several processes never interleave.
Rotation takes an ``flock`` on ``<file>.lock`` and re-checks the size under
it, so when several processes (several nodes, overlapping scripts) cross
``max_bytes`` together exactly one of them rotates; the others notice that
the file they hold was renamed (its inode changed) and reopen.
"""

import os
import sys
import time

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


class Logger:
    def __init__(self, script: str, node_id: str, log_dir: str, level: str = "INFO",
                 max_bytes: int = 10485760, backup_count: int = 5, use_syslog: bool = True,
                 console=sys.stderr):
        self.script, self.node_id = script, node_id
        self.path = os.path.join(log_dir, script + ".log")
        self.threshold = LEVELS[level]
        self.max_bytes, self.backup_count = max_bytes, backup_count
        self.console = console  # None: file and syslog only
        self._fd = None
        self._syslog = None
        if use_syslog and os.path.exists("/dev/log"):
            try:
                import syslog
                syslog.openlog("distributed-node", syslog.LOG_PID, syslog.LOG_DAEMON)
                self._syslog = syslog
            except (ImportError, OSError):
                self._syslog = None
        try:
            os.makedirs(log_dir, exist_ok=True)
        except OSError:
            pass  # reported when the first write fails

    def debug(self, msg: str, *args) -> None:
        self.log("DEBUG", msg, *args)

    def info(self, msg: str, *args) -> None:
        self.log("INFO", msg, *args)

    def warning(self, msg: str, *args) -> None:
        self.log("WARNING", msg, *args)

    def error(self, msg: str, *args) -> None:
        self.log("ERROR", msg, *args)

    def log(self, level: str, msg: str, *args, console: bool = True) -> None:
        if LEVELS[level] < self.threshold:
            return
        text = (msg % args) if args else msg
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".%03dZ" % (now % 1 * 1000)
        line = "%s %s node=%s %s: %s\n" % (stamp, level, self.node_id, self.script, text)
        self._write_file(line)
        if console and self.console is not None:
            try:
                self.console.write(line)
                self.console.flush()
            except (OSError, ValueError):
                pass
        if self._syslog is not None:
            prio = {"DEBUG": 7, "INFO": 6, "WARNING": 4, "ERROR": 3}[level]
            self._syslog.syslog(prio, "node=%s %s: %s" % (self.node_id, self.script, text))

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def _write_file(self, line: str) -> None:
        data = line.encode("utf-8", "replace")
        try:
            if self._fd is None or self._renamed():
                self.close()
                self._open()
            if self.max_bytes and os.fstat(self._fd).st_size + len(data) > self.max_bytes:
                self._rotate(len(data))
            os.write(self._fd, data)
        except OSError as exc:
            # A full disk or unwritable log dir must not stop the tick itself, nor must a broken console.
            if self.console is not None:
                try:
                    self.console.write("log file %s unwritable: %s\n" % (self.path, exc.strerror))
                except (OSError, ValueError):
                    pass

    def _renamed(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return True

    def _rotate(self, pending: int) -> None:
        """Rotate if the file still cannot take ``pending`` more bytes (an empty file never rotates)."""
        import fcntl
        lock_fd = os.open(self.path + ".lock", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            # Someone may have rotated while we waited: only rotate what is still too big.
            size = os.fstat(self._fd).st_size
            if not self._renamed() and size and size + pending > self.max_bytes:
                if self.backup_count > 0:
                    for i in range(self.backup_count - 1, 0, -1):
                        src = "%s.%d" % (self.path, i)
                        if os.path.exists(src):
                            os.replace(src, "%s.%d" % (self.path, i + 1))
                    os.replace(self.path, self.path + ".1")
                else:
                    os.truncate(self.path, 0)
            self.close()
            self._open()
        finally:
            os.close(lock_fd)

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None


def for_config(script: str, cfg, console=sys.stderr) -> Logger:
    """A logger for ``script`` set up from the config's ``logging`` section."""
    lc = cfg["logging"]
    return Logger(script, cfg.node_id, cfg.log_dir, level=lc["level"], max_bytes=lc["max_bytes"],
                  backup_count=lc["backup_count"], use_syslog=lc["syslog"], console=console)
