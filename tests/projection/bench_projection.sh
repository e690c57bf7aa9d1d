#!/usr/bin/env bash
# bench_projection.sh: the projection benchmarks, printing their figures.
#  1. rate: a journal of TRANSFERS plain transfers (bench_projection --write-journal) is
#     projected by `sumzero project --journal` into a fresh Postgres: transfers/s.
#  2. lag: a server under `sumzero bench --rate RATE` for SECONDS, with `sumzero project
#     --address` following its subscription: the lag behind the leader's clock
#     (from the projector's progress lines) over the run, and whether it grows.
# Usage: bench_projection.sh BUILD_DIR [TRANSFERS [RATE [SECONDS]]]
# Postgres comes from tests/harness/postgres.sh (exit 77 without its binaries).
set -euo pipefail

build=$(cd "${1:?usage: bench_projection.sh BUILD_DIR [TRANSFERS [RATE [SECONDS]]]}" && pwd)
transfers=${2:-3000000}
rate=${3:-50000}
seconds=${4:-30}
here=$(cd "$(dirname "$0")" && pwd)
harness=$here/../harness/postgres.sh
sumzero=$build/tools/sumzero
work=$(mktemp -d /tmp/sz-bench-projection.XXXXXX)
pg=/tmp/sz-pg-bench.$$
server_pid=""
project_pid=""
cleanup() {
  [ -n "$project_pid" ] && kill "$project_pid" 2>/dev/null || true
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  "$harness" remove "$pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

set +e
conninfo=$("$harness" start "$pg")
status=$?
set -e
[ $status -eq 77 ] && exit 77
[ $status -ne 0 ] && { echo "bench_projection: Postgres did not start" >&2; exit 1; }
echo "bench: load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# 1. The rate from a journal (TRANSFERS 0 skips it).
if [ "$transfers" -gt 0 ]; then
mkdir -p "$work/journal"
"$build/tests/projection/bench_projection" --transfers "$transfers" --accounts 100000 \
  --write-journal "$work/journal" >/dev/null
capacity=$((transfers + 100000))
"$sumzero" project --journal "$work/journal" --postgres "$conninfo" --accounts-max 200000 \
  --transfers-max "$capacity" --pending-max 65536 2>"$work/rate.log" | tee "$work/rate.out"
rate_line=$(grep -o 'transfers_per_second=[0-9]*' "$work/rate.out" | tail -1)
echo "bench: projection rate from a journal of $transfers transfers: ${rate_line#*=} transfers/s"
psql "$conninfo" -qc "DROP SCHEMA sumzero CASCADE" >/dev/null 2>&1
rm -rf "$work/journal"
fi

# 2. The lag while following a server under load.
total=$((rate * seconds))
"$sumzero" start --data "$work/data" --address 127.0.0.1:0 --metrics-address none \
  --segment-size 268435456 --accounts-max 20000 --transfers-max $((total + 100000)) \
  --prefault no 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q 'msg=listening' "$work/server.log" && break
  sleep 0.1
done
address=$(grep -o 'address=[0-9.]*:[0-9]*' "$work/server.log" | head -1 | cut -d= -f2)
"$sumzero" project --address "$address" --postgres "$conninfo" \
  --accounts-max 20000 --transfers-max $((total + 100000)) --pending-max 65536 \
  --batch-ms 200 2>"$work/lag.log" >/dev/null &
project_pid=$!
"$sumzero" bench --addresses "$address" --accounts 10000 --transfers "$total" --rate "$rate" \
  --lookups 0 >"$work/load.out" 2>&1 || true
sleep 3
kill -INT "$project_pid"; wait "$project_pid" || true; project_pid=""
kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""
grep -E 'transfers/s|throughput' "$work/load.out" | head -3 | sed 's/^/bench: load: /'
awk -F'lag_ms=' '/msg=progress/ { split($2, parts, " "); lag = parts[1] + 0; n++;
    values[n] = lag; if (lag > max) max = lag; sum += lag }
  END { if (n == 0) { print "bench: lag: no progress lines"; exit }
        half = int(n / 2); first = 0; second = 0;
        for (i = 1; i <= half; i++) first += values[i];
        for (i = half + 1; i <= n; i++) second += values[i];
        printf "bench: lag while following the load (%d progress lines): mean %.0f ms, max %.0f ms; " \
               "first half mean %.0f ms, second half mean %.0f ms (%d samples)\n", \
               n, sum / n, max, first / (half ? half : 1), second / (n - half ? n - half : 1), n }' \
  "$work/lag.log"
grep 'msg=progress' "$work/lag.log" | grep -o 'lag_ms=[0-9.]*' | cut -d= -f2 | tr '\n' ' ' |
  sed 's/^/bench: lag series (ms, one a second): /'; echo
echo "bench: load average after: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores, shared)"
