#!/bin/sh
# test_tools.sh: the journal's commands on a journal written by the benchmark: format
# refuses a formatted directory, replay --verify and inspect accept the journal, replay
# --until-op stops there, and a flipped byte in the middle makes replay and inspect exit
# 65 with a line naming the file, offset and op. Usage: test_tools.sh path/to/sumzero
set -u
sumzero="$1"
work=$(mktemp -d /tmp/sz_test_tools_XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$sumzero" bench journal --ops 12 --runs 1 --dir "$work" --keep > "$work/bench.out" ||
    fail "bench journal"
dir=$(sed -n 's/^kept: \([^ ]*\) .*/\1/p' "$work/bench.out")
[ -d "$dir" ] || fail "bench did not keep its directory"

"$sumzero" format "$dir" 2> "$work/err"; code=$?
[ "$code" -eq 73 ] || fail "format of a formatted directory exited $code"

"$sumzero" replay --verify "$dir" > "$work/replay.out" || fail "replay --verify"
grep -q "ops=12 " "$work/replay.out" || fail "replay did not apply 12 ops"
grep -q "transfers_applied=90090 " "$work/replay.out" || fail "replay transfer count"
"$sumzero" replay --verify "$dir" > "$work/replay2.out" || fail "second replay"
[ "$(grep digest "$work/replay.out")" = "$(grep digest "$work/replay2.out")" ] ||
    fail "two replays gave different digests"
"$sumzero" replay --until-op 5 "$dir" | grep -q "op_last=5 " || fail "replay --until-op"

"$sumzero" inspect "$dir" > "$work/inspect.out" || fail "inspect"
[ "$(grep -c '^op=' "$work/inspect.out")" -eq 12 ] || fail "inspect did not list 12 entries"
grep -q "chain=ok" "$work/inspect.out" || fail "inspect chain"
"$sumzero" inspect --op 3 "$dir" | grep -q "transfer id=" || fail "inspect --op"
"$sumzero" inspect --op 99 "$dir" 2> /dev/null; code=$?
[ "$code" -eq 66 ] || fail "inspect of a missing op exited $code"

# Op 4 starts at 3 MiB: flip a byte inside its body.
printf '\377' | dd of="$dir/journal.000000" bs=1 seek=$((3 * 1048576 + 5000)) conv=notrunc \
    2> /dev/null
"$sumzero" replay "$dir" > /dev/null 2> "$work/err"; code=$?
[ "$code" -eq 65 ] || fail "replay of a corrupt journal exited $code"
grep -q "journal.000000 offset 3145728 op 4" "$work/err" || fail "replay error: $(cat "$work/err")"
"$sumzero" inspect "$dir" > /dev/null 2>&1; code=$?
[ "$code" -eq 65 ] || fail "inspect of a corrupt journal exited $code"

"$sumzero" replay "$work/nothing" > /dev/null 2>&1; code=$?
[ "$code" -ne 0 ] || fail "replay of a missing directory succeeded"
"$sumzero" replay > /dev/null 2>&1; code=$?
[ "$code" -eq 64 ] || fail "replay without a directory exited $code"
echo "ok"
