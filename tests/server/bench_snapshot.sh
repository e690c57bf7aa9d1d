#!/bin/sh
# bench_snapshot.sh: snapshots in a running server, at the size of issue 5 (not a test: run
# by hand, on a quiet machine). A real `sumzero start` is loaded by `sumzero bench` with
# ACCOUNTS accounts and TRANSFERS transfers; then it prints:
#   - the snapshot's size, the child's time to write it, the ledger's pause (fork), taken
#     at rest and again under paced load;
#   - batch latency p50/p99/p100 of the same paced load without and during a snapshot;
#   - restart time (process start to listening) from the snapshot plus a journal tail of
#     TAIL transfers (page cache warm, then dropped when root may), and by full replay of the journal (snapshots moved aside);
#   - the data directory's size. Everything is deleted at the end.
# Usage: bench_snapshot.sh path/to/sumzero [ACCOUNTS [TRANSFERS [DIR]]]
#        (defaults 1000000 20000000 and a directory under the current one: ~15 GB free)
#        env SUMZERO_BENCH_RATE (400000/s), SUMZERO_BENCH_PACED (2000000 per paced run),
#        SUMZERO_BENCH_TAIL (400000)
set -u
sumzero="$1"
accounts="${2:-1000000}"
transfers="${3:-20000000}"
parent="${4:-.}"
rate="${SUMZERO_BENCH_RATE:-400000}"        # transfers/s of the paced load
paced="${SUMZERO_BENCH_PACED:-2000000}"     # transfers of each paced run
tail="${SUMZERO_BENCH_TAIL:-400000}"        # transfers in the journal after the snapshot
address=127.0.0.1:3917
work=$(mktemp -d "$parent/sz_bench_snapshot_XXXXXX") || exit 1
data="$work/data"
server_pid=
trap '[ -n "$server_pid" ] && kill -KILL "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$work/server.log" ] && tail -20 "$work/server.log" >&2; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Room for the load, the paced runs and a full batch's worst case.
accounts_max=$((accounts + 100000))
transfers_max=$((transfers + 2 * paced + tail + 1000000))
flags="--data $data --address $address --metrics-address none \
    --accounts-max $accounts_max --transfers-max $transfers_max \
    --pending-max $((transfers_max / 8)) --history-max 1048576 \
    --snapshot-every-seconds 0 --snapshot-keep 2"

# Starts the server; start_ms is how long it took to listen.
start() {
    : > "$work/server.log"
    started=$(now_ms)
    "$sumzero" start $flags > /dev/null 2>> "$work/server.log" &
    server_pid=$!
    while ! grep -q "msg=listening" "$work/server.log"; do
        kill -0 "$server_pid" 2>/dev/null || fail "the server exited"
        sleep 0.01
    done
    start_ms=$(($(now_ms) - started))
}

stop() {
    kill -TERM "$server_pid"
    wait "$server_pid" || fail "the server's exit status"
    server_pid=
}

# Waits for the n-th snapshot_written line and prints it.
snapshot_wait() {
    while [ "$(grep -c 'msg=snapshot_written' "$work/server.log")" -lt "$1" ]; do
        grep -q "msg=snapshot_failed" "$work/server.log" && fail "a snapshot failed"
        sleep 0.05
    done
    grep 'msg=snapshot_written' "$work/server.log" | sed -n "${1}p"
}

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

paced_run() {
    "$sumzero" bench --addresses "$address" --accounts 1000 --transfers "${2:-$paced}" \
        --rate "$rate" --lookups 0 --seed "$1" > "$work/paced.out" 2>&1 ||
        fail "paced bench: $(tail -3 "$work/paced.out")"
    grep -q "^result = ok$" "$work/paced.out" || fail "paced bench: $(tail -3 "$work/paced.out")"
    echo "$(sed -n 's/^batch latency p50 = //p' "$work/paced.out")" \
         "$(sed -n 's/^batch latency p99 = //p' "$work/paced.out")" \
         "$(sed -n 's/^batch latency p100 = //p' "$work/paced.out")"
}

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ledger: $accounts accounts, $transfers transfers (capacities $accounts_max, $transfers_max)"
start
echo "start (empty, memory prefaulted): ${start_ms} ms"
"$sumzero" bench --addresses "$address" --accounts "$accounts" --transfers "$transfers" \
    --lookups 0 > "$work/load.out" 2>&1 || fail "load: $(tail -3 "$work/load.out")"
grep -q "^result = ok$" "$work/load.out" || fail "load: $(tail -5 "$work/load.out")"
echo "load: $(sed -n 's/^load accepted = //p' "$work/load.out")"

kill -USR1 "$server_pid"
line=$(snapshot_wait 1)
echo "snapshot at rest: size $(field "$line" size) bytes, write $(field "$line" write_ms) ms," \
     "total $(field "$line" duration_ms) ms, pause (fork) $(field "$line" pause_us) us"

echo "paced load ($paced transfers at $rate/s), batch latency p50 p99 p100:"
echo "  without a snapshot: $(paced_run 1)"
# The snapshot starts a moment into the run and lasts through most of it.
( sleep 1; kill -USR1 "$server_pid" ) > /dev/null 2>&1 &
during=$(paced_run 2)
line=$(snapshot_wait 2)
echo "  during a snapshot:  $during"
echo "snapshot under load: size $(field "$line" size) bytes, write $(field "$line" write_ms) ms," \
     "total $(field "$line" duration_ms) ms, pause (fork) $(field "$line" pause_us) us"
# A journal tail after the newest snapshot (besides the rest of the run above), for the
# restart: another snapshot first, so the tail is only this run.
kill -USR1 "$server_pid"
snapshot_wait 3 > /dev/null
paced_run 3 "$tail" > /dev/null
echo "data directory: $(du -sh "$data" | cut -f1) (snapshots $(du -sh "$data/snapshots" | cut -f1))"

stop
start
kill_ms=$start_ms
recovered=$(grep 'msg=recovered' "$work/server.log")
echo "restart from snapshot + journal tail: ${kill_ms} ms to listening" \
     "(recovery $(field "$recovered" duration_ms) ms of which loading the snapshot" \
     "$(field "$recovered" snapshot_load_ms) ms; snapshot_op $(field "$recovered" snapshot_op)," \
     "replayed_ops $(field "$recovered" replayed_ops))"
digest_snapshot=$(field "$recovered" digest)
stop
# The same restart with the page cache dropped (as after a reboot); needs root.
if sync && echo 3 2>/dev/null > /proc/sys/vm/drop_caches; then
    start
    recovered=$(grep 'msg=recovered' "$work/server.log")
    echo "restart from snapshot + journal tail, page cache dropped: ${start_ms} ms to" \
         "listening (loading the snapshot $(field "$recovered" snapshot_load_ms) ms)"
    [ "$(field "$recovered" digest)" = "$digest_snapshot" ] || fail "the digests differ"
    stop
fi
mv "$data/snapshots" "$data/snapshots.aside"
start
replay_ms=$start_ms
recovered=$(grep 'msg=recovered' "$work/server.log")
echo "restart by full replay: ${replay_ms} ms to listening" \
     "(recovery $(field "$recovered" duration_ms) ms, replayed_ops $(field "$recovered" replayed_ops))"
[ "$(field "$recovered" digest)" = "$digest_snapshot" ] || fail "the digests differ"
echo "digest (both restarts): $digest_snapshot"
stop
