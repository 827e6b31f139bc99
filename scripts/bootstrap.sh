#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: find Python 3.11/3.12 (installing
# Debian's python3 + venv only when missing), create .venv, install medledger into it.
# Usage: source scripts/bootstrap.sh [extra]   (extra: "dev" installs the test tools too)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

find_python() {
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}

apt_install() {
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "medledger needs: $* (install them, then run this again)" >&2; exit 1
  fi
  echo "installing Debian packages: $*" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python_bin=$(find_python) || { apt_install python3 python3-venv; python_bin=$(find_python) || {
  echo "no Python 3.11 or 3.12 found; medledger needs one (plyvel ships wheels up to 3.12)" >&2; exit 1; }; }
if [ ! -x .venv/bin/python ]; then
  if ! "$python_bin" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$python_bin" -m venv .venv
  fi
fi
extra=${1:-}
spec="."
[ -n "$extra" ] && spec=".[$extra]"
echo "installing medledger into .venv ($("$python_bin" --version))" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
# Strict editable mode links the layer folders under the `medledger` namespace, which mypy follows.
rm -rf build
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec" \
     --config-settings editable_mode=strict >"$log" 2>&1; then
  cat "$log" >&2; rm -f "$log"; echo "pip install failed" >&2; exit 1
fi
rm -f "$log"
# The event tests and the demo run a real MQTT broker (docs/adr/0015-ledger-events.md): Debian's
# mosquitto, installed only when missing, for scripts/demo.sh as for scripts/test.sh (the test
# fixture does the same when run on its own).
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
  apt_install mosquitto
fi
# The web app's browser tests drive Debian's Chromium with Playwright (its own browser download is
# not used): installed only when missing.
if [ "$extra" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
# The patient's web app (web/, docs/adr/0018-web-app-foundation.md): Node.js and npm from Debian
# only when missing, the pinned dependencies with `npm ci` (package-lock.json) and the Vite build
# into web/dist, which every health node serves at /app/. Each step runs again only when what it
# depends on changed (the lock file; the sources), so a second set-up costs a few hashes.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt_install nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 18 ]; then
  echo "the web app needs Node.js 18 or newer (found $(node --version)); install it, then run this again" >&2
  exit 1
fi
web_stamp() { (cd web && sha256sum "$@" | sha256sum | cut -d' ' -f1); }
lock_hash=$(web_stamp package.json package-lock.json)
if [ "$(cat web/node_modules/.medledger-lock 2>/dev/null || true)" != "$lock_hash" ]; then
  echo "installing the web app's dependencies (npm ci, Node.js $(node --version))" >&2
  log=$(mktemp)
  if ! (cd web && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "npm ci failed in web/" >&2; exit 1
  fi
  rm -f "$log"
  echo "$lock_hash" > web/node_modules/.medledger-lock
fi
source_hash=$(web_stamp $(cd web && find index.html vite.config.ts tsconfig.json package-lock.json src public \
  -type f 2>/dev/null | LC_ALL=C sort))
if [ "$(cat web/dist/.medledger-build 2>/dev/null || true)" != "$source_hash" ]; then
  echo "building the web app (web/dist, served at /app/)" >&2
  log=$(mktemp)
  if ! (cd web && npm run build) >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "the web app's build failed" >&2; exit 1
  fi
  rm -f "$log"
  echo "$source_hash" > web/dist/.medledger-build
fi
