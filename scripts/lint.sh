#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make lint: checkpatch.pl --strict over every C file of ours, and sparse
# (C=2) over the modules. Reports per file; fails on any finding.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
src=$(scripts/linux-source.sh)
command -v sparse >/dev/null || scripts/deps.sh
kdir=${KDIR:-/lib/modules/$(scripts/kver.sh)/build}

# One documented exception: the ULP's socket operations are copied from the
# socket's own at runtime and so cannot be const (as in net/tls).
declare -A ignore=(
	[net/xfrm/espintcp_ulp.c]=CONST_STRUCT
)

fail=0
mapfile -t files < <(git ls-files -co --exclude-standard -- \
	'net/*.[ch]' 'include/*.h' 'tools/testing/selftests/*.[ch]' | sort -u)
for f in "${files[@]}"; do
	[ -f "$f" ] || continue
	args=(--strict --no-tree --terse --show-types -f)
	[ -n "${ignore[$f]:-}" ] && args+=(--ignore "${ignore[$f]}")
	if out=$("$src/scripts/checkpatch.pl" "${args[@]}" "$f" 2>&1) &&
	   ! grep -q ': \(ERROR\|WARNING\|CHECK\):' <<<"$out"; then
		echo "checkpatch OK    $f"
	else
		echo "checkpatch FAIL  $f"
		grep ': \(ERROR\|WARNING\|CHECK\):' <<<"$out" | sed 's/^/    /'
		fail=1
	fi
done

# sparse: rebuild everything so every file is checked.
log=$(mktemp)
make -s -C "$kdir" M="$top" clean >/dev/null
if ! make -s -C "$kdir" M="$top" C=2 CHECK="sparse" modules >"$log" 2>&1; then
	cat "$log"
	fail=1
fi
if grep -E "^$top/|^(net|include)/" "$log" | grep -qE 'warning|error'; then
	echo "sparse FAIL"
	grep -E 'warning|error' "$log" | sed 's/^/    /'
	fail=1
else
	echo "sparse OK        $(ls net/*/*.c | wc -l) files"
fi
rm -f "$log"
exit $fail
