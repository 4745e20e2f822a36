#!/bin/sh
# Creates the cluster on first start, then runs PostgreSQL in the foreground.
# Honours POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / POSTGRES_HOST_AUTH_METHOD like the
# official image; extra arguments go to postgres (e.g. `-c work_mem=64MB`).
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
POSTGRES_USER="${POSTGRES_USER:-postgres}"
POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"
socket_dir=/var/run/postgresql

# Doubles single quotes for a postgresql.conf string, double quotes for an SQL identifier.
conf_string() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/''/g")"; }
sql_identifier() { printf '"%s"' "$(printf '%s' "$1" | sed 's/"/""/g')"; }

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --no-locale --no-sync -D "$PGDATA"
    rm -f "$pwfile"
    host_auth="${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}"
  else
    initdb -U "$POSTGRES_USER" -E UTF8 --no-locale --no-sync -D "$PGDATA"
    host_auth="${POSTGRES_HOST_AUTH_METHOD:-trust}"
  fi

  # Single-user mode, not a temporary server: the wait strategy counts
  # "ready to accept connections" and only the final server may print it.
  if [ "$POSTGRES_DB" != postgres ]; then
    echo "CREATE DATABASE $(sql_identifier "$POSTGRES_DB")" | postgres --single -D "$PGDATA" postgres > /dev/null
  fi

  # pg_cron's own connections come in over the socket (cron.host), so they need no password.
  cat > "$PGDATA/pg_hba.conf" <<HBA
local all all trust
host  all all all $host_auth
HBA

  cat >> "$PGDATA/postgresql.conf" <<CONF

# order-automation: pg_cron and throwaway-database settings
listen_addresses = '*'
unix_socket_directories = '$socket_dir'
shared_preload_libraries = 'pg_cron'
cron.database_name = $(conf_string "$POSTGRES_DB")
cron.host = '$socket_dir'
cron.use_background_workers = off
max_connections = 200
max_locks_per_transaction = 256
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
fi

exec postgres -D "$PGDATA" "$@"
