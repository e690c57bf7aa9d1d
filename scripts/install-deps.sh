#!/usr/bin/env bash
# install-deps.sh: installs, through apt-get, every Debian 12 package sumzero needs to
# build, test and benchmark. Used by both README commands and by .ci/run. Does nothing
# (and needs no network) when everything is already installed.
set -euo pipefail

packages=(
  build-essential pkg-config meson ninja-build python3 binutils
  liburing-dev libxxhash-dev libcriterion-dev
  librdkafka-dev libpq-dev libmimalloc-dev
  clang llvm
  postgresql kcat
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >&2
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
