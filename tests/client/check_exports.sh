#!/bin/sh
# check_exports.sh LIBRARY: libsumzero.so exports only sumzero_* names, all under the
# SUMZERO_0 version node, and its soname is versioned (libsumzero.so.0).
set -eu
library="$1"
command -v nm >/dev/null 2>&1 || { echo "nm not found"; exit 77; }
exports=$(nm -D --defined-only "$library" | awk '{print $3}')
bad=$(printf '%s\n' "$exports" | grep -v -e '^sumzero_.*@@SUMZERO_0$' -e '^SUMZERO_0$' || true)
if [ -n "$bad" ]; then
    echo "exported beyond the public API:"; printf '%s\n' "$bad"; exit 1
fi
for name in sumzero_client_open sumzero_client_close sumzero_submit sumzero_create_transfers \
            sumzero_get_account_balances sumzero_error_message; do
    printf '%s\n' "$exports" | grep -q "^$name@@SUMZERO_0$" || { echo "missing $name"; exit 1; }
done
soname=$(objdump -p "$library" | awk '$1 == "SONAME" {print $2}')
[ "$soname" = "libsumzero.so.0" ] || { echo "soname is '$soname'"; exit 1; }
echo "ok: $(printf '%s\n' "$exports" | grep -c '^sumzero_') symbols, soname $soname"
