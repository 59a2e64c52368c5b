#!/usr/bin/env bash
# Testbed: PostgreSQL (Debian's) on 127.0.0.1:${SCIOPS_PG_PORT:-5433}, its own cluster in
# /var/lib/sciops-testbed/pg, a database and role for the run ledger. Idempotent; run as root.
#   bash scripts/testbed/postgres.sh start|stop|conn|fresh-db NAME|drop-db NAME
#   conn prints the Airflow connection URI for AIRFLOW_CONN_SCIOPS_LEDGER.
#   fresh-db NAME drops and re-creates database NAME (owner sciops_ledger) and prints its URI:
#   the deployment tests' Airflow metadata database. drop-db NAME drops it (a benchmark's own, at its end).
set -euo pipefail
source "$(dirname "$0")/common.sh"
ACTION="${1:-start}"
STATE=/var/lib/sciops-testbed/pg
PORT="${SCIOPS_PG_PORT:-5433}"
PASSWORD_FILE=/var/lib/sciops-testbed/pg-ledger-password

log() { echo "testbed/postgres: $*"; }
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { runuser -u postgres -- "$@"; }

setup() {
    [ -n "$(bindir)" ] || {
        log "installing postgresql"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    }
    mkdir -p /var/lib/sciops-testbed
    if [ ! -f "$STATE/PG_VERSION" ]; then
        install -d -o postgres -g postgres -m 700 "$STATE"
        as_pg "$(bindir)/initdb" -D "$STATE" --auth-local=peer --auth-host=scram-sha-256 \
            -U postgres >/dev/null
    fi
    [ -f "$PASSWORD_FILE" ] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$PASSWORD_FILE")
}

start() {
    setup
    install -d -o postgres -g postgres /var/run/postgresql
    if ! as_pg "$(bindir)/pg_ctl" -D "$STATE" status >/dev/null 2>&1; then
        rm -f "$STATE/postmaster.pid"
        as_pg "$(bindir)/pg_ctl" -D "$STATE" -l "$STATE/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=/var/run/postgresql" start \
            >/dev/null || { tail -20 "$STATE/server.log"; exit 1; }
    fi
    # Local socket as the postgres superuser (peer auth) to make the ledger's role and database.
    local pw; pw=$(cat "$PASSWORD_FILE")
    as_pg psql -q -h /var/run/postgresql -p "$PORT" -d postgres -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sciops_ledger') THEN
    CREATE ROLE sciops_ledger LOGIN PASSWORD '$pw';
  ELSE
    ALTER ROLE sciops_ledger PASSWORD '$pw';
  END IF;
END \$\$;
SQL
    as_pg psql -q -h /var/run/postgresql -p "$PORT" -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'sciops_ledger'" | grep -q 1 ||
        as_pg createdb -h /var/run/postgresql -p "$PORT" -O sciops_ledger sciops_ledger
    log "ready: 127.0.0.1:$PORT, database sciops_ledger"
}

case "$ACTION" in
    start) start ;;
    stop) [ -n "$(bindir)" ] && as_pg "$(bindir)/pg_ctl" -D "$STATE" stop -m fast >/dev/null 2>&1 || true; log "stopped" ;;
    conn) echo "postgresql://sciops_ledger:$(cat "$PASSWORD_FILE")@127.0.0.1:$PORT/sciops_ledger" ;;
    fresh-db)
        name="${2:?usage: $0 fresh-db NAME}"
        [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || { echo "bad database name: $name" >&2; exit 2; }
        start >/dev/null
        as_pg dropdb -h /var/run/postgresql -p "$PORT" --if-exists --force "$name"
        as_pg createdb -h /var/run/postgresql -p "$PORT" -O sciops_ledger "$name"
        echo "postgresql://sciops_ledger:$(cat "$PASSWORD_FILE")@127.0.0.1:$PORT/$name" ;;
    drop-db)
        name="${2:?usage: $0 drop-db NAME}"
        [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || { echo "bad database name: $name" >&2; exit 2; }
        as_pg dropdb -h /var/run/postgresql -p "$PORT" --if-exists --force "$name"
        log "dropped $name" ;;
    *) echo "usage: $0 start|stop|conn|fresh-db NAME|drop-db NAME" >&2; exit 2 ;;
esac
