#!/usr/bin/env bash
# run.sh: the README's first command. Installs what is missing, builds a release build,
# and runs the main job: the server, `sumzero start` (formats ./data if it is new, listens
# on 127.0.0.1:3000, metrics on 127.0.0.1:9100; Ctrl-C drains and stops it).
# Extra arguments go to `sumzero start` (see `build/tools/sumzero start --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
exec build/tools/sumzero start "$@"
