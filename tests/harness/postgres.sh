#!/usr/bin/env bash
# postgres.sh: a throwaway PostgreSQL 15 for tests and benchmarks: initdb in a directory of
# its own, run as a non-root user (the `postgres` user Debian's package creates, when we
# are root), listening on a free loopback port with its unix socket in that directory.
#
#   postgres.sh start DIR     initdb DIR (if new) and start; prints the libpq conninfo
#   postgres.sh stop DIR      fast shutdown (the data stays; `start DIR` again resumes it
#                             on the same port)
#   postgres.sh remove DIR    stop if running, then delete DIR
#
# Exits 77 (skip) when the Postgres binaries are missing; 1 on any other failure.
# Env: SUMZERO_PG_BIN (default /usr/lib/postgresql/15/bin), SUMZERO_PG_OPTIONS (extra
# server options, e.g. "-c fsync=off" for tests that never crash Postgres itself).
set -euo pipefail

bin=${SUMZERO_PG_BIN:-/usr/lib/postgresql/15/bin}
command=${1:-}
dir=${2:-}
if [ -z "$command" ] || [ -z "$dir" ]; then
  echo "usage: postgres.sh start|stop|remove DIR" >&2
  exit 64
fi
if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/pg_ctl" ]; then
  echo "postgres.sh: no PostgreSQL binaries in $bin (install postgresql-15)" >&2
  exit 77
fi

# Postgres refuses to run as root: run its tools as the postgres user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

conninfo() {
  echo "host=127.0.0.1 port=$(cat "$dir/port") user=postgres dbname=postgres"
}

case "$command" in
start)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
  chmod 700 "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
  fi
  port=$(cat "$dir/port")
  # Small and polite on a shared 2-core machine; WAL sized for bulk COPY.
  options="-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=20"
  options="$options -c shared_buffers=256MB -c max_wal_size=2GB -c checkpoint_timeout=15min"
  options="$options ${SUMZERO_PG_OPTIONS:-}"
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -o "$options" -w -t 60 \
      start >/dev/null; then
    tail -n 20 "$dir/postgres.log" >&2 || true
    exit 1
  fi
  conninfo
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null
  fi
  ;;
remove)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t 60 stop >/dev/null || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "postgres.sh: unknown command '$command'" >&2
  exit 64
  ;;
esac
