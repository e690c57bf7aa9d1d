#!/usr/bin/env bash
# test.sh: the README's test command. Installs what is missing, builds (meson, release
# optimisation with the debug invariant checks on), runs every test, and prints one line
# "N passed, N failed[, N skipped]" counting each Criterion test case (and each other
# test program as one). Exits non-zero if anything failed or if no test ran.
#   SUMZERO_BUILD_DIR   build directory (default build-test)
#   SUMZERO_MESON_ARGS  extra `meson setup` arguments (CI adds sanitizers)
#   SUMZERO_SUITES      space-separated meson suites to run (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

build=${SUMZERO_BUILD_DIR:-build-test}
# shellcheck disable=SC2206
meson_args=(--buildtype=release -Ddebug_assertions=true ${SUMZERO_MESON_ARGS:-})
if [ -d "$build" ]; then
  meson setup --reconfigure "$build" "${meson_args[@]}" >/dev/null
else
  meson setup "$build" "${meson_args[@]}" >/dev/null
fi
ninja -C "$build"

suite_args=()
for suite in ${SUMZERO_SUITES:-}; do suite_args+=(--suite "$suite"); done
status=0
meson test -C "$build" --print-errorlogs --num-processes 2 "${suite_args[@]}" || status=$?

python3 - "$build/meson-logs/testlog.json" <<'PY' || status=1
import json, re, sys
passed = failed = skipped = 0
synthesis = re.compile(r"Tested: (\d+) \| Passing: (\d+) \| Failing: (\d+) \| Crashing: (\d+)")
with open(sys.argv[1]) as log:
    for line in log:
        test = json.loads(line)
        text = re.sub(r"\x1b\[[0-9;]*m", "", (test.get("stdout") or "") + (test.get("stderr") or ""))
        found = synthesis.findall(text)
        result = test["result"]
        if result == "SKIP":
            skipped += 1
        elif found:
            tested, passing, failing, crashing = map(int, found[-1])
            passed += passing
            failed += failing + crashing
            # A program that failed beyond its assertions (a leak, a crash at exit).
            if result != "OK" and failing + crashing == 0:
                failed += 1
        elif result == "OK":
            passed += 1
        else:
            failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
PY
exit $status
