#!/usr/bin/env bash
# A PostgreSQL server of our own for the long ledger benchmark, beside (never instead of)
# the system server on 5432, configured the way a production ledger host would be.
#
#   scripts/pg-scratch.sh start     initdb (first time) and start it on 127.0.0.1:$PORT
#   scripts/pg-scratch.sh stop      stop it and remove its folder
#   scripts/pg-scratch.sh status    running or not, and its settings
#   scripts/pg-scratch.sh url       the URL to give TASKLEDGER_TEST_DATABASE_URL
#
# Settings (docs/SCALING.md, "Sizing PostgreSQL for a ledger of years"): shared_buffers
# TASKLEDGER_SCRATCH_PG_SHARED_BUFFERS (default 25 % of RAM, the usual starting point), a
# checkpoint every 15 min or 16 GB of WAL (so each leaf of the random-UUID id index is
# logged whole once per checkpoint, not once per batch), lz4 full-page images. Everything
# lives in TASKLEDGER_SCRATCH_PG_DIR (default ${TMPDIR:-/tmp}/taskledger-pg), owned by the
# `postgres` user when run as root (initdb refuses root). Trust auth on 127.0.0.1 only.
set -euo pipefail

DIR="${TASKLEDGER_SCRATCH_PG_DIR:-${TMPDIR:-/tmp}/taskledger-pg}"
PORT="${TASKLEDGER_SCRATCH_PG_PORT:-5442}"
MEM_KB=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
SHARED_BUFFERS="${TASKLEDGER_SCRATCH_PG_SHARED_BUFFERS:-$((MEM_KB / 4 / 1024))MB}"

die() {
    echo "pg-scratch: $*" >&2
    exit 1
}

BIN=""
for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) "$(dirname "$(command -v pg_ctl 2>/dev/null || echo /nonexistent/x)")"; do
    if [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
        BIN="$candidate"
        break
    fi
done
[ -n "$BIN" ] || die "initdb/pg_ctl not found (apt-get install postgresql)"

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

running() { as_owner "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; }

start() {
    mkdir -p "$DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    if [ ! -f "$DIR/data/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 ||
            die "initdb failed, see $DIR/initdb.log"
    fi
    if running; then
        echo "pg-scratch: already running on $PORT"
        return
    fi
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 start -o "\
        -c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DIR \
        -c shared_buffers=$SHARED_BUFFERS -c effective_cache_size=$((MEM_KB / 2 / 1024))MB \
        -c max_wal_size=16GB -c checkpoint_timeout=15min -c checkpoint_completion_target=0.9 \
        -c wal_compression=lz4 -c maintenance_work_mem=1GB -c max_connections=100" >/dev/null ||
        die "start failed, see $DIR/server.log"
    echo "pg-scratch: running on 127.0.0.1:$PORT (shared_buffers $SHARED_BUFFERS)"
}

stop() {
    if [ -f "$DIR/data/PG_VERSION" ] && running; then
        as_owner "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
    fi
    rm -rf "$DIR"
    echo "pg-scratch: stopped, $DIR removed"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status)
        if [ -f "$DIR/data/PG_VERSION" ] && running; then
            echo "running on 127.0.0.1:$PORT"
            psql -h 127.0.0.1 -p "$PORT" -U postgres -Atc \
                "SELECT name || ' = ' || setting || coalesce(unit, '') FROM pg_settings
                 WHERE name IN ('shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_compression')"
        else
            echo "not running"
            exit 1
        fi
        ;;
    url) echo "postgresql://postgres@127.0.0.1:$PORT/postgres" ;;
    *)
        echo "usage: $0 start|stop|status|url" >&2
        exit 2
        ;;
esac
