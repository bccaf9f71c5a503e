#!/usr/bin/env bash
# Installs the CouchDB-API server the store tests run against when no real CouchDB is given.
# Called by tests/services/setup.sh with the repository root as $1. Idempotent.
#
# pouchdb-server 4.2.0 is the CouchDB-compatible server npm can install on a bare Debian machine
# (Apache CouchDB is in neither Debian 12, PyPI nor npm). `--ignore-scripts` skips the sqlite3
# native build that only its --sqlite mode needs; the in-memory backend works without it.
# The tests start the server themselves (tests/couchdb_server.py), so this only installs it.
set -euo pipefail
root=${1:-$(cd "$(dirname "$0")/../../.." && pwd)}
prefix="$root/var/test-tools/pouchdb"
server_bin="$prefix/node_modules/pouchdb-server/bin/pouchdb-server"

if [ -n "${MIRLITON_TEST_COUCHDB_URL:-}" ]; then
  echo "setup: CouchDB given by MIRLITON_TEST_COUCHDB_URL, not installing pouchdb-server"
  exit 0
fi
if [ -f "$server_bin" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm is missing (setup.sh installs nodejs and npm)" >&2
  exit 1
fi
echo "setup: installing pouchdb-server 4.2.0 into $prefix"
mkdir -p "$prefix"
# A package.json of its own keeps npm from walking up into the repository looking for one.
[ -f "$prefix/package.json" ] || echo '{"name": "mirliton-test-pouchdb", "private": true}' > "$prefix/package.json"
(cd "$prefix" && npm install --ignore-scripts --no-audit --no-fund --loglevel=error pouchdb-server@4.2.0 >/dev/null)
test -f "$server_bin"
echo "setup: pouchdb-server installed"
