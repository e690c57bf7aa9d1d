#!/usr/bin/env bash
# check_prefetch.sh: proves the built state machine still prefetches. gcc silently drops
# __builtin_prefetch in helpers it does not inline, which would halve the apply rate with
# a million accounts without failing any functional test; so this disassembles the two
# create loops of the built library and requires prefetch instructions in each.
set -euo pipefail
library=$1
for function in sz_ledger_create_transfers sz_ledger_create_accounts; do
  count=$(objdump -d --disassemble="$function" "$library" | grep -c 'prefetch' || true)
  echo "$function: $count prefetch instructions"
  if [ "$count" -lt 2 ]; then
    echo "FAIL: $function in $library has no prefetch instructions" >&2
    exit 1
  fi
done
