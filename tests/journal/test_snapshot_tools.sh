#!/bin/sh
# test_snapshot_tools.sh: the snapshot side of the journal's commands, on a journal written
# by the benchmark: replay --write-snapshot at an op, replay --snapshot from it reaches the
# full replay's digest (and applies only the later ops), inspect prints and verifies a
# snapshot file, a damaged snapshot makes replay and inspect exit 65 with a line naming the
# section, a missing one exits 66, a snapshot past --until-op exits 64, and a snapshot of
# another journal (chain head) is refused with 65. Usage: test_snapshot_tools.sh sumzero
set -u
sumzero="$1"
work=$(mktemp -d /tmp/sz_test_snapshot_tools_XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$sumzero" bench journal --ops 12 --runs 1 --dir "$work" --keep > "$work/bench.out" ||
    fail "bench journal"
dir=$(sed -n 's/^kept: \([^ ]*\) .*/\1/p' "$work/bench.out")
[ -d "$dir" ] || fail "bench did not keep its directory"
mkdir "$work/snapshots"

"$sumzero" replay "$dir" > "$work/full.out" || fail "full replay"
"$sumzero" replay --until-op 5 --write-snapshot "$work/snapshots" "$dir" > "$work/w.out" ||
    fail "replay --write-snapshot: $(cat "$work/w.out")"
snapshot="$work/snapshots/snapshot.00000000000000000005"
[ -f "$snapshot" ] || fail "no snapshot named by its op: $(ls "$work/snapshots")"
grep -q "wrote snapshot .* op=5 " "$work/w.out" || fail "write line: $(cat "$work/w.out")"
[ -z "$(ls "$work/snapshots" | grep tmp)" ] || fail "a .tmp file was left"

"$sumzero" replay --snapshot "$snapshot" --verify "$dir" > "$work/from.out" ||
    fail "replay --snapshot: $(cat "$work/from.out")"
grep -q "ops=7 " "$work/from.out" || fail "replay from op 5 did not apply exactly 7 ops"
grep -q "snapshot=.* op=5 " "$work/from.out" || fail "no snapshot line"
[ "$(grep digest= "$work/full.out")" = "$(grep digest= "$work/from.out")" ] ||
    fail "digest from the snapshot differs from the full replay's"

# A snapshot at the end, written under another name, then replayed from (0 ops after it).
"$sumzero" replay --write-snapshot "$work/last.snap" "$dir" > /dev/null || fail "write last"
"$sumzero" replay --snapshot "$work/last.snap" "$dir" > "$work/last.out" || fail "from last"
grep -q "ops=0 " "$work/last.out" || fail "replay from the last op applied ops"
[ "$(grep digest= "$work/full.out")" = "$(grep digest= "$work/last.out")" ] ||
    fail "digest from the last snapshot differs"

"$sumzero" inspect "$snapshot" > "$work/inspect.out" || fail "inspect snapshot"
grep -q "^snapshot: file=.* op=5 " "$work/inspect.out" || fail "inspect header line"
[ "$(grep -c '^section: ' "$work/inspect.out")" -eq 6 ] || fail "inspect sections"
grep -q "verify=ok" "$work/inspect.out" || fail "inspect verify"

"$sumzero" replay --until-op 3 --snapshot "$snapshot" "$dir" > /dev/null 2>&1; code=$?
[ "$code" -eq 64 ] || fail "a snapshot past --until-op exited $code"
"$sumzero" replay --snapshot "$work/snapshots/none" "$dir" > /dev/null 2>&1; code=$?
[ "$code" -eq 66 ] || fail "a missing snapshot exited $code"

# Damage: one byte in the transfers section (which starts after the header and accounts).
cp "$snapshot" "$work/damaged"
offset=$(sed -n 's/^section: name=transfers .* offset=\([0-9]*\) .*/\1/p' "$work/inspect.out")
[ -n "$offset" ] || fail "no transfers section offset"
printf '\377' | dd of="$work/damaged" bs=1 seek=$((offset + 1000)) conv=notrunc 2> /dev/null
"$sumzero" replay --snapshot "$work/damaged" "$dir" > /dev/null 2> "$work/err"; code=$?
[ "$code" -eq 65 ] || fail "replay from a damaged snapshot exited $code"
grep -q "section transfers checksum mismatch" "$work/err" || fail "replay error: $(cat "$work/err")"
"$sumzero" inspect "$work/damaged" > /dev/null 2> "$work/err"; code=$?
[ "$code" -eq 65 ] || fail "inspect of a damaged snapshot exited $code"
grep -q "transfers" "$work/err" || fail "inspect error: $(cat "$work/err")"

# A snapshot of another journal: same cluster, other ops: its chain head is not ours
# (the benchmark's journals may be identical up to op 5; then this part is skipped).
"$sumzero" bench journal --ops 9 --runs 1 --dir "$work" --keep > "$work/bench2.out" ||
    fail "second bench journal"
other=$(sed -n 's/^kept: \([^ ]*\) .*/\1/p' "$work/bench2.out")
mkdir "$work/other"
"$sumzero" replay --until-op 5 --write-snapshot "$work/other" "$other" > /dev/null ||
    fail "write the other snapshot"
head_of() { "$sumzero" inspect "$1" | sed -n 's/.* chain_head=\([0-9a-f]*\) .*/\1/p'; }
if [ "$(head_of "$work/other/snapshot.00000000000000000005")" = "$(head_of "$snapshot")" ]; then
    echo "skip: the benchmark writes identical journals; chain head check not exercised"
else
    "$sumzero" replay --snapshot "$work/other/snapshot.00000000000000000005" "$dir" \
        > /dev/null 2> "$work/err"; code=$?
    [ "$code" -eq 65 ] || fail "a snapshot of another journal exited $code"
    grep -q "chain head" "$work/err" || fail "other journal error: $(cat "$work/err")"
fi
echo "ok"
