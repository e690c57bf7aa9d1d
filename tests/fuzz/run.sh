#!/usr/bin/env bash
# run.sh: builds the frame decoder's libFuzzer target with clang (-fsanitize=fuzzer,
# address,undefined) and runs it for a while, starting from generated seeds and the
# corpus kept from earlier runs. Exits non-zero on any crash or failed check (the
# crashing input is left in the build directory); exits 77 (skip) when clang or its
# libFuzzer runtime is missing.
#   FUZZ_SECONDS     how long to run (default 30)
#   FUZZ_BUILD_DIR   where to build and keep the corpus (default build-fuzz)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
seconds=${FUZZ_SECONDS:-30}
out=${FUZZ_BUILD_DIR:-$root/build-fuzz}
clang=${CLANG:-clang}
if ! command -v "$clang" >/dev/null 2>&1; then
  echo "fuzz: $clang not found (scripts/install-deps.sh installs it): skipped"
  exit 77
fi
mkdir -p "$out/corpus" "$out/seeds"
sources=("$root/gateway/decoder.c" "$root/gateway/protocol.c" "$root/core/records.c")
flags=(-std=gnu11 -D_GNU_SOURCE -I"$root" -Wall -Wextra -Werror -Wno-unused-parameter)
if ! "$clang" "${flags[@]}" -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all "$root/tests/fuzz/fuzz_decoder.c" "${sources[@]}" -lxxhash \
    -o "$out/fuzz_decoder" 2>"$out/build.log"; then
  if grep -q -i "fuzzer" "$out/build.log" && grep -q -E "cannot find|not found" "$out/build.log"; then
    echo "fuzz: clang has no libFuzzer runtime: skipped"
    exit 77
  fi
  cat "$out/build.log" >&2
  exit 1
fi
"$clang" "${flags[@]}" -O1 "$root/tests/fuzz/seeds.c" "$root/gateway/protocol.c" \
  "$root/core/records.c" -lxxhash -o "$out/seeds_write"
"$out/seeds_write" "$out/seeds"

cd "$out"
echo "fuzz: running fuzz_decoder for ${seconds}s"
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
  ./fuzz_decoder -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus seeds >fuzz.log 2>&1 || status=$?
grep -E "^#[0-9]+ +(INITED|DONE)|stat::|ERROR|SUMMARY|runtime error|check failed" fuzz.log || true
if [ "$status" -ne 0 ]; then
  echo "fuzz: fuzz_decoder failed (status $status); see $out/fuzz.log and the crash-* file" >&2
  exit 1
fi
