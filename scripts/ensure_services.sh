#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672) answer.
# Installs them from Debian's packages if missing, starts them if stopped, waits.
# Points elsewhere? Set TASKLEDGER_TEST_DATABASE_URL / TASKLEDGER_TEST_AMQP_URL and
# SKIP_SERVICES=1 to leave local services alone.
set -euo pipefail
[ "${SKIP_SERVICES:-0}" = "1" ] && exit 0

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing postgresql and rabbitmq-server from Debian's packages"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql rabbitmq-server >/dev/null
fi

if ! port_open 5432; then
  echo "starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
if ! port_open 5672; then
  echo "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
fi

for i in $(seq 1 90); do
  if port_open 5432 && port_open 5672; then
    # RabbitMQ opens its port a little before it accepts connections: ask it.
    if command -v rabbitmqctl >/dev/null 2>&1; then
      as_root rabbitmqctl -q await_startup >/dev/null 2>&1 || { sleep 1; continue; }
    fi
    exit 0
  fi
  sleep 1
done
echo "PostgreSQL or RabbitMQ did not come up within 90 s" >&2
exit 1
