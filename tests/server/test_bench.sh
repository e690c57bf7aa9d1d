#!/bin/sh
# test_bench.sh: `sumzero bench` runs end to end against the server it starts: small runs of
# each distribution, several clients, a paced rate and a running server given by
# --addresses all exit 0 with "result = ok" (every transfer applied, every lookup checked
# field by field, debits = credits = transfers); the server it started exits 0 after
# SIGTERM and its temporary directory is removed; bad flags exit 64.
# Usage: test_bench.sh path/to/sumzero
set -u
sumzero="$1"
work=$(mktemp -d /tmp/sz_test_bench_XXXXXX)
server_pid=
mkdir "$work/runs" || exit 1
trap '[ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$work/out" ] && cat "$work/out" >&2; exit 1; }

run() {
    "$sumzero" bench --dir "$work/runs" --accounts 1000 --transfers 60000 --batch-size 2000 \
        --lookups 5000 "$@" > "$work/out" 2>&1 || fail "bench $* exited $?"
    grep -q "^result = ok$" "$work/out" || fail "bench $*: no 'result = ok'"
    grep -q "^server exit status = 0$" "$work/out" || fail "bench $*: server exit status"
    grep -q "^batch latency p99 = " "$work/out" || fail "bench $*: no p99"
    grep -q "^lookup_transfers rate = " "$work/out" || fail "bench $*: no lookup rate"
}

run --distribution uniform
run --distribution zipfian --zipf-exponent 1.2
run --distribution hot --clients 3 --pipeline 2
run --rate 200000 --pipeline 4
[ -z "$(ls "$work/runs")" ] || fail "bench left its data directory behind: $(ls "$work/runs")"

# Against a running server: two runs, fresh ids each time (their own random prefix).
"$sumzero" start --data "$work/data" --address 127.0.0.1:0 --metrics-address none \
    --prefault no 2> "$work/server.log" &
server_pid=$!
address=
for _ in $(seq 1 500); do
    address=$(sed -n 's/.*msg=listening address=\([^ ]*\).*/\1/p' "$work/server.log")
    [ -n "$address" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "server exited: $(cat "$work/server.log")"
    sleep 0.02
done
[ -n "$address" ] || fail "server did not listen"
for _ in 1 2; do
    "$sumzero" bench --addresses "$address" --accounts 100 --transfers 20000 --lookups 1000 \
        > "$work/out" 2>&1 || fail "bench --addresses exited $?"
    grep -q "^result = ok$" "$work/out" || fail "bench --addresses: no 'result = ok'"
done
kill -TERM "$server_pid"
wait "$server_pid"; code=$?
server_pid=
[ "$code" -eq 0 ] || fail "server exit status $code after SIGTERM"

"$sumzero" bench --batch-size 9000 > "$work/out" 2>&1; code=$?
[ "$code" -eq 64 ] || fail "--batch-size 9000 exited $code, not 64"
"$sumzero" bench --distribution pareto > "$work/out" 2>&1; code=$?
[ "$code" -eq 64 ] || fail "--distribution pareto exited $code, not 64"
echo "ok"
