#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make scale: espintcp_scale.sh with 10,000 connections in a VM booting
# Debian's stock kernel, with the harness of `make check` (our modules
# loaded, unloaded at the end, dmesg checked): each connection with its SA
# pair, set up and torn down with nothing left, memory per idle connection,
# and one transfer's throughput with them present against without. Prints
# the results and whether the goals of the performance issue hold, then
# "N passed, N failed".
#
#   ESPINTCP_SCALE_CONNS   connections (default 10000)
#   ESPINTCP_SCALE_BYTES   bytes of each transfer (default 16000000)

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh
trap 'summary 0 1 0' ERR

conns=${ESPINTCP_SCALE_CONNS:-10000}
bytes=${ESPINTCP_SCALE_BYTES:-16000000}

host_kernel
echo "scale: $kver_why; $conns connections"
make -s modules
make -s selftests
trap - ERR

out=$(mktemp -d /tmp/espintcp-scale.XXXXXX)
set +e
tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_VM_TIMEOUT:-7200}" --out "$out" -- \
	env ESPINTCP_TESTS=espintcp_scale.sh ESPINTCP_TEST_TIMEOUT=6000 \
	ESPINTCP_SCALE_CONNS="$conns" ESPINTCP_SCALE_BYTES="$bytes" \
	tools/testing/vm/guest-check.sh
rc=$?
set -e

guest_result scale "$out" "$rc"

sed -n 's/^BENCH \(scale_[a-z_]*\) \([0-9.]*\).*/\1 \2/p' "$out/console.log" | tr -d '\r' |
	awk '
	{ v[$1] = $2; printf "%-22s %s\n", $1, $2 }
	END {
		if (!("scale_flow_ratio" in v))
			exit
		printf "\none flow among %d idle connections / alone: %.2f (goal >= 0.95: %s)\n",
			v["scale_conns"], v["scale_flow_ratio"],
			(v["scale_flow_ratio"] >= 0.95 ? "holds" : "MISSED")
		printf "  (alone: the mean of before they came and after they are gone;\n"
		printf "  against before alone: %.2f; after / before: %.2f)\n",
			v["scale_flow_before_ratio"], v["scale_flow_after_ratio"]
		printf "memory per idle connection, both ends: %.1f KiB, %.1f KiB with its SA pair\n",
			v["scale_mem_conn"] / 1024, v["scale_mem_conn_sa"] / 1024
	}'
summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
