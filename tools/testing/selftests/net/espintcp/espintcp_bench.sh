#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: TCP throughput (iperf3) between two namespaces over a veth,
# without IPsec, through ESP-in-UDP and through ESP-in-TCP (our ULP and ESP
# types, SAs set up by the IKE driver), IPv4 and IPv6 transport mode, one
# after the other in one run. Absolute numbers mean nothing under TCG; the
# ratios to the ESP-in-UDP run of the same family are the result. Not a
# test: it fails only when a configuration cannot be set up.
#
# ESPINTCP_BENCH_SECS sets the length of each measurement (default 5).

set -u
cd "$(dirname "$0")" || exit 1

IKE=$PWD/espintcp_ike
PSK=bench-psk-7d0e4b
SECS=${ESPINTCP_BENCH_SECS:-5}
dir=$(mktemp -d /tmp/espintcp-bench.XXXXXX)

source ./espintcp_lib.sh

status_is() { grep -qx "$2=$3" "$dir/$1.status" 2>/dev/null; }
listening() { ip netns exec "$B" ss -Htln 'sport = :5201' | grep -q .; }

# measure FAMILY TRANSPORT: the receiver's bits per second into $dir/bps.
# Not in a command substitution: that would wait for the background jobs.
measure() {
	local fam=$1 tr=$2 spid

	addrs "$fam" transport direct
	topo_direct >/dev/null || return 1
	if [ "$tr" != none ]; then
		ip netns exec "$B" "$IKE" --responder --local "$b" --peer "$a" \
			--psk "$PSK" --status "$dir/r.status" 2>"$dir/r.log" &
		pids+=($!)
		wait_for "$WAIT" status_is r state listening || return 1
		# UDP's default 3.5 s of retries is too short for the first
		# SA of the VM under TCG (crypto instantiation and self-test).
		ip netns exec "$A" "$IKE" --initiator --local "$a" --peer "$b" \
			--psk "$PSK" --transport "$tr" --status "$dir/i.status" \
			--udp-timeout 1000 --udp-tries 5 2>"$dir/i.log" &
		pids+=($!)
		wait_for "$WAIT" status_is i state established &&
			wait_for "$WAIT" status_is r state established ||
			{ log "$tr: not established"; return 1; }
	fi
	ip netns exec "$B" iperf3 -s -1 -B "$b" >/dev/null 2>&1 &
	spid=$!
	pids+=("$spid")
	wait_for "$WAIT" listening || { log "iperf3 server did not start"; return 1; }
	ip netns exec "$A" iperf3 -c "$b" -t "$SECS" -J >"$dir/iperf.json" ||
		{ log "$tr: iperf3 failed"; return 1; }
	wait_exit "$spid" >/dev/null
	python3 -c 'import json, sys
print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]))' \
		"$dir/iperf.json" >"$dir/bps"
}

command -v iperf3 >/dev/null || { echo "bench: iperf3 missing"; exit 1; }
rc=0
printf '%-6s %-26s %12s %10s\n' family path Mbit/s vs-UDP
for fam in 4 6; do
	declare -A bps=()
	for tr in none udp tcp; do
		if measure "$fam" "$tr"; then
			bps[$tr]=$(cat "$dir/bps")
		else
			rc=1
			bps[$tr]=0
			sed 's/^/# /' "$dir"/*.log 2>/dev/null
		fi
		cleanup
	done
	for tr in none udp tcp; do
		case $tr in
		none) name="no IPsec" ;;
		udp) name="ESP-in-UDP (AES-GCM-128)" ;;
		tcp) name="ESP-in-TCP (AES-GCM-128)" ;;
		esac
		awk -v f="IPv$fam" -v n="$name" -v x="${bps[$tr]}" -v u="${bps[udp]}" \
			'BEGIN { printf "%-6s %-26s %12.1f %10s\n", f, n, x / 1e6,
				 (u > 0 ? sprintf("%.2f", x / u) : "-") }'
	done
	unset bps
done
exit $rc
