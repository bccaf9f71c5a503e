#!/usr/bin/env bash
# Installs and starts the outside services and peers the test suite uses. Idempotent: on a
# prepared machine it only checks. Run by `make test`; safe to run by hand.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

need_apt=()
command -v sipp >/dev/null 2>&1 || need_apt+=(sip-tester)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v rabbitmqctl >/dev/null 2>&1 || need_apt+=(rabbitmq-server)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# RabbitMQ: started by this kind of machine; start it when it is not running.
if [ -z "${MIRLITON_TEST_AMQP_URL:-}" ]; then
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "setup: starting RabbitMQ"
    rabbitmq-server -detached
    for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
  fi
  rabbitmqctl -q await_startup >/dev/null 2>&1 || true
fi

# Optional extra setup steps for other services live beside this file.
for extra in "$here"/setup.d/*.sh; do
  [ -e "$extra" ] || continue
  bash "$extra" "$root"
done
echo "setup: services ready"
