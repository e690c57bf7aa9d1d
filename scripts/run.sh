#!/usr/bin/env bash
# run.sh: the README's first command. Installs what is missing, builds a release build,
# and runs the main job: for now the state-machine benchmark (`sumzero bench core`).
# Extra arguments go to the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build
exec build/tools/sumzero bench core "$@"
