#!/usr/bin/env bash
# Real SIP phones for the edge tests: baresip (Debian). pjsua2 comes from PyPI (pyproject's
# test extra, pjsua2-python). $1 is the repository root.
set -euo pipefail
if ! command -v baresip >/dev/null 2>&1; then
  echo "setup: installing baresip"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends baresip >/dev/null
fi
