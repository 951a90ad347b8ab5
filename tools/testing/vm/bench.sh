#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: A/B measurements of ESP module sets on Debian's stock kernel,
# in alternating VM boots, then one table of ratios with their spread:
#
#   ours      our espintcp, esp4, esp6
#   stock     the booted kernel's own esp4, esp6 (plain ESP, ESP-in-UDP)
#   upstream  upstream's espintcp.c, esp4.c, esp6.c from linux-source-6.1,
#             built unmodified out of tree as *_ref.ko (scripts/bench-ref.sh):
#             the yardstick for ESP-in-TCP, never shipped
#   base      ours at git revision ESPINTCP_BENCH_BASE, when that is set: the
#             before of a change, measured in the same run as the after
#
# Each round boots the VM once per set (the order reversed every other
# round) and runs espintcp_bench.sh there; each ratio is formed within a
# round, so the host's slow and fast phases cancel, and the table shows the
# median over rounds with the range. Absolute numbers mean nothing under
# TCG. ESPINTCP_BENCH_ROUNDS (default 5), ESPINTCP_BENCH_SECS (per
# measurement, default 5), ESPINTCP_BENCH_SETS (default "ours stock
# upstream") change that.

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh

host_kernel
echo "${0##*/}: $kver_why"
rounds=${ESPINTCP_BENCH_ROUNDS:-5}
sets=${ESPINTCP_BENCH_SETS:-ours stock upstream}
base=${ESPINTCP_BENCH_BASE:-}
[ -z "$base" ] || [[ " $sets " == *" base "* ]] || sets="$sets base"
make -s modules
make -s selftests

# The yardstick's modules where the guest can read them: in this tree,
# which it sees read-only at the same path (it cannot see the cache).
ref=$top/.bench-ref
rm -rf "$ref"
trap 'rm -rf "$ref" "${basetree:-}"' EXIT
if [[ " $sets " == *" base "* ]]; then
	rev=$(git rev-parse --short "${base:?set ESPINTCP_BENCH_BASE to a revision for the base set}")
	basetree=$(mktemp -d /tmp/espintcp-bench-base.XXXXXX)
	git archive "$rev" | tar -x -C "$basetree"
	make -s -C "$basetree" KVER="$KVER" modules >/dev/null
	mkdir -p "$ref/base"
	cp "$basetree"/*.ko "$ref/base/"
	echo "bench: base is $rev"
fi
if [[ " $sets " == *" upstream "* ]]; then
	if dir=$(scripts/bench-ref.sh "$KVER"); then
		mkdir -p "$ref"
		cp "$dir"/*_ref.ko "$ref/"
	else
		echo "bench: no upstream set on $KVER; its ratios are not measured"
		sets=${sets//upstream/}
	fi
fi

# The guest's command for a set: load it, then measure.
load() {
	local k='/lib/modules/$(uname -r)/kernel/net'

	case $1 in
	ours) echo 'insmod ./espintcp.ko && insmod ./esp4.ko && insmod ./esp6.ko' ;;
	base) echo 'for m in espintcp esp4 esp6; do insmod .bench-ref/base/$m.ko || exit 1; done' ;;
	stock) echo "insmod $k/ipv4/esp4.ko* && insmod $k/ipv6/esp6.ko*" ;;
	upstream) echo 'for m in espintcp esp4 esp6; do insmod .bench-ref/${m}_ref.ko || exit 1; done' ;;
	esac
}

out=$(mktemp -d /tmp/espintcp-bench.XXXXXX)
: >"$out/results"
failed=0
order=$sets
for r in $(seq "$rounds"); do
	for set in $order; do
		echo "bench: round $r of $rounds: $set"
		if tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_VM_TIMEOUT:-1800}" \
			--out "$out/$r-$set" -- bash -c "modprobe xfrm_algo && $(load "$set") &&
			ESPINTCP_BENCH_SECS=${ESPINTCP_BENCH_SECS:-5} \
			tools/testing/selftests/net/espintcp/espintcp_bench.sh $set" \
			>"$out/$r-$set.log" 2>&1; then
			:
		else
			failed=$((failed + 1))
			echo "bench: round $r, $set failed:"
			grep -a '^#\|^run-vm' "$out/$r-$set.log" | tail -20
		fi
		sed -n "s/^BENCH /$r $set /p" "$out/$r-$set.log" | tr -d '\r' >>"$out/results"
	done
	order=$(tr ' ' '\n' <<<"$order" | tac | xargs)
done

echo
echo "bench: $KVER, $rounds rounds, sets: $sets; logs in $out"
tools/testing/vm/bench-table.py "$out/results"
[ "$failed" -eq 0 ] || { echo "bench: $failed boots failed"; exit 1; }
