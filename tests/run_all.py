#!/usr/bin/env python3
"""Run the test suite (every tests/test_*.py) with stdlib unittest and print one summary line.

    python3 tests/run_all.py                      # everything, one interpreter, one Redis
    python3 tests/run_all.py test_config test_log # some modules (also tests/test_log.py, tests.test_log)
    python3 tests/run_all.py test_log.LoggerTest  # one class, or one test: ...LoggerTest.test_file_mode
    python3 tests/run_all.py -j 3                 # modules in 3 parallel processes
    python3 tests/run_all.py -v --failfast
    python3 tests/run_all.py --durations 10       # also list the 10 slowest tests

With ``-j N`` each module runs in its own process, the slowest modules of the
last parallel run first (their times are kept in ``.cache/test-times.json``, or
``test-times-quick.json`` under ``DN_TEST_SKIP_SLOW=1``; env ``DN_CACHE_DIR``
moves the folder), and each module's output is printed whole under a
``---- <module> (<seconds>s): <counts>`` header.

The last line printed is exactly ``<N> passed, <N> failed, <N> skipped``;
errors (including a module that fails to import and setUpModule errors) and
unexpected successes count as failed. Exit status: 0 when nothing failed and
at least one test ran, 1 otherwise, 2 for bad usage.

Environment: ``REDIS_SERVER_BIN`` picks the redis-server (see
tests/support/redis_bin.py); ``DN_TEST_SKIP_SLOW=1`` lets tests skip their
slowest cases; ``DN_TEST_JOBS`` is the default for ``-j``;
``DN_TEST_TIMEOUT_S`` (default 900) aborts a hung run with every thread's
traceback.
"""

import faulthandler
import json
import os
import subprocess
import sys
import time
import unittest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
USAGE = "usage: run_all.py [-v] [-q] [-j N] [--failfast] [--durations N] [--summary-file PATH] [NAME ...]"
TIMES_FILE = "test-times.json"  # per-module seconds of the last parallel run, in the cache folder
QUICK_TIMES_FILE = "test-times-quick.json"  # the same under DN_TEST_SKIP_SLOW=1, where slow modules are not slow


class CountingResult(unittest.TextTestResult):
    """Counts each test once: failed if any part of it failed, else skipped, else passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passed_ids, self.failed_ids, self.skipped_ids = set(), set(), set()
        self.durations = []  # [seconds, test id], setUp and tearDown included
        self._started_at = None

    def startTest(self, test):  # noqa: N802
        self._started_at = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):  # noqa: N802
        super().stopTest(test)
        if self._started_at is not None:
            self.durations.append([round(time.monotonic() - self._started_at, 3), test.id()])
            self._started_at = None

    def addSuccess(self, test):  # noqa: N802 - unittest API
        super().addSuccess(test)
        self.passed_ids.add(test.id())

    def addExpectedFailure(self, test, err):  # noqa: N802
        super().addExpectedFailure(test, err)
        self.passed_ids.add(test.id())

    def addFailure(self, test, err):  # noqa: N802
        super().addFailure(test, err)
        self.failed_ids.add(test.id())

    def addError(self, test, err):  # noqa: N802
        super().addError(test, err)
        self.failed_ids.add(test.id())  # also setUpModule/setUpClass errors (an _ErrorHolder)

    def addUnexpectedSuccess(self, test):  # noqa: N802
        super().addUnexpectedSuccess(test)
        self.failed_ids.add(test.id())

    def addSkip(self, test, reason):  # noqa: N802
        super().addSkip(test, reason)
        self.skipped_ids.add(test.id())

    def addSubTest(self, test, subtest, err):  # noqa: N802
        super().addSubTest(test, subtest, err)
        if err is not None:
            self.failed_ids.add(test.id())

    def counts(self) -> dict:
        failed = self.failed_ids
        skipped = self.skipped_ids - failed
        passed = self.passed_ids - failed - skipped
        return {"passed": len(passed), "failed": len(failed), "skipped": len(skipped)}


def summary_line(counts: dict) -> str:
    return "%d passed, %d failed, %d skipped" % (counts["passed"], counts["failed"], counts["skipped"])


def parse_args(argv: list) -> dict:
    opts = {"verbosity": 1, "jobs": int(os.environ.get("DN_TEST_JOBS") or 1), "failfast": False,
            "summary_file": None, "durations": 0, "names": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-v", "--verbose"):
            opts["verbosity"] = 2
        elif arg in ("-q", "--quiet"):
            opts["verbosity"] = 0
        elif arg in ("-f", "--failfast"):
            opts["failfast"] = True
        elif arg in ("-j", "--jobs", "--summary-file", "--durations"):
            if i + 1 >= len(argv):
                raise SystemExit("run_all.py: %s needs a value\n%s" % (arg, USAGE))
            i += 1
            if arg == "--summary-file":
                opts["summary_file"] = argv[i]
            elif arg == "--durations":
                opts["durations"] = _positive_int(argv[i], arg)
            else:
                opts["jobs"] = _positive_int(argv[i])
        elif arg.startswith("-j") and arg[2:].isdigit():
            opts["jobs"] = _positive_int(arg[2:])
        elif arg in ("-h", "--help"):
            print(__doc__.strip())
            raise SystemExit(0)
        elif arg.startswith("-"):
            raise SystemExit("run_all.py: unknown option %s\n%s" % (arg, USAGE))
        else:
            opts["names"].append(test_name(arg))
        i += 1
    return opts


def _positive_int(text: str, option: str = "-j") -> int:
    if not text.isdigit() or int(text) < 1:
        raise SystemExit("run_all.py: %s needs a whole number of at least 1, got %r" % (option, text))
    return int(text)


def test_name(arg: str) -> str:
    """``tests/test_log.py``, ``tests.test_log``, ``test_log.py`` -> ``test_log`` (dotted ids kept)."""
    name = arg.replace(os.sep, "/")
    if name.endswith(".py"):
        name = name[:-3]
    for prefix in ("./", "tests/", "tests."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.replace("/", ".")


def all_modules() -> list:
    return sorted(name[:-3] for name in os.listdir(TESTS) if name.startswith("test_") and name.endswith(".py"))


def load(names: list) -> unittest.TestSuite:
    loader = unittest.TestLoader()
    if not names:
        return loader.discover(TESTS, pattern="test_*.py", top_level_dir=TESTS)
    suite = unittest.TestSuite()
    for name in names:
        suite.addTests(loader.loadTestsFromName(name))  # an import error becomes a failing test
    return suite


def describe_environment() -> str:
    """One line: which Python and which redis-server this run uses."""
    py = "python %s (%s)" % (sys.version.split()[0], sys.executable)
    try:
        from support.redis_bin import RedisNotFoundError, find_redis_server, redis_version
        try:
            path = find_redis_server()
            redis = "redis-server %s (%s)" % (".".join(map(str, redis_version(path))), path)
        except (RedisNotFoundError, RuntimeError) as exc:
            redis = "redis-server: none (%s)" % exc
    except ImportError as exc:
        redis = "redis-server: unknown (%s)" % exc
    return "%s, %s" % (py, redis)


def run_here(opts: dict):
    """Run the selected tests in this process; return (counts, durations)."""
    suite = load(opts["names"])
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=opts["verbosity"], failfast=opts["failfast"],
                                     resultclass=CountingResult)
    result = runner.run(suite)
    return result.counts(), result.durations


def times_path() -> str:
    base = os.environ.get("DN_CACHE_DIR") or os.path.join(REPO, ".cache")
    quick = os.environ.get("DN_TEST_SKIP_SLOW", "") not in ("", "0")
    return os.path.join(os.path.abspath(base), QUICK_TIMES_FILE if quick else TIMES_FILE)


def load_times() -> dict:
    """Module -> seconds from the last parallel run; {} when there is none (or it is unreadable)."""
    try:
        with open(times_path()) as fh:
            times = json.load(fh)
        return {str(k): float(v) for k, v in times.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def save_times(new_times: dict) -> None:
    """Merge this run's module times into the cache (modules gone since are dropped); a cache that
    cannot be written only costs ordering."""
    existing = set(all_modules())
    times = {name: seconds for name, seconds in dict(load_times(), **new_times).items() if name in existing}
    path = times_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            json.dump(times, fh, indent=1, sort_keys=True)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


def slowest_first(modules: list, times: dict) -> list:
    """Longest-processing-time-first: with N workers the run ends soonest when the longest modules
    start first. Modules without a recorded time go first too (they may be long), by name."""
    return sorted(modules, key=lambda name: (name in times, -times.get(name, 0.0), name))


def run_parallel(opts: dict):
    """One child process per module, ``jobs`` at a time, slowest first; their output is printed whole,
    in finishing order. Returns (counts, durations)."""
    from concurrent.futures import ThreadPoolExecutor, as_completed
    import tempfile

    modules = slowest_first(opts["names"] or all_modules(), load_times())
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    durations, module_times = [], {}
    with tempfile.TemporaryDirectory(prefix="dn-run-all-") as tmp, ThreadPoolExecutor(opts["jobs"]) as pool:
        futures = [pool.submit(_run_child, name, os.path.join(tmp, "%d.json" % i), opts)
                   for i, name in enumerate(modules)]
        for future in as_completed(futures):
            name, output, summary, seconds = future.result()
            sys.stdout.write("---- %s (%.1fs): %s\n%s" % (name, seconds, summary_line(summary), output))
            sys.stdout.flush()
            for key in totals:
                totals[key] += summary[key]
            durations.extend(summary.get("durations", []))
            if "." not in name:  # a whole module, not one class or test
                module_times[name] = round(seconds, 1)
    save_times(module_times)
    return totals, durations


def _run_child(name: str, summary_path: str, opts: dict):
    argv = [sys.executable, os.path.abspath(__file__), "-j", "1", "--summary-file", summary_path, name]
    if opts["verbosity"] != 1:
        argv.append("-v" if opts["verbosity"] == 2 else "-q")
    if opts["failfast"]:
        argv.append("--failfast")
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    output = proc.stdout.decode("utf-8", "replace")
    try:
        with open(summary_path) as fh:
            summary = json.load(fh)
        head, _sep, last = output.rstrip("\n").rpartition("\n")
        if last == summary_line(summary):  # the parent prints it in the module's header instead
            output = head + "\n"
    except (OSError, ValueError):
        summary = {"passed": 0, "failed": 1, "skipped": 0}  # the child died before counting
        output += "run_all.py: %s exited %d without a summary\n" % (name, proc.returncode)
    return name, output, summary, time.monotonic() - started


def print_slowest(durations: list, count: int) -> None:
    print("slowest %d tests:" % min(count, len(durations)))
    for seconds, test_id in sorted(durations, key=lambda d: -d[0])[:count]:
        print("  %6.1fs %s" % (seconds, test_id))


def main(argv=None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    timeout_s = float(os.environ.get("DN_TEST_TIMEOUT_S") or 900)
    faulthandler.dump_traceback_later(timeout_s, exit=True)  # a hung test must not hang CI forever
    if opts["summary_file"] is None:
        print(describe_environment(), flush=True)
    started = time.monotonic()
    if opts["jobs"] > 1 and len(opts["names"] or all_modules()) > 1:
        counts, durations = run_parallel(opts)
    else:
        counts, durations = run_here(opts)
    faulthandler.cancel_dump_traceback_later()
    ran = counts["passed"] + counts["failed"]  # skipped tests did not run
    if opts["durations"]:
        print_slowest(durations, opts["durations"])
    if opts["summary_file"]:
        with open(opts["summary_file"], "w") as fh:
            json.dump(dict(counts, durations=durations), fh)
    else:
        print("%d tests, took %.1f s" % (ran + counts["skipped"], time.monotonic() - started))
        if ran == 0:
            print("run_all.py: no tests ran, which counts as a failure (check the names given)")
    print(summary_line(counts), flush=True)
    return 0 if counts["failed"] == 0 and ran > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
