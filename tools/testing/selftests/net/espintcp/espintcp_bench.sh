#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench, inside one VM boot: measure one set of ESP modules, which the
# caller has loaded:
#
#   espintcp_bench.sh ours|base|stock|upstream
#
#   ours      our espintcp, esp4, esp6: plain ESP, ESP-in-UDP, ESP-in-TCP
#   stock     the booted kernel's esp4, esp6: plain ESP, ESP-in-UDP
#   base      ours at an earlier revision (before and after a change)
#   upstream  upstream's espintcp.c, esp4.c, esp6.c built out of tree
#             (scripts/bench-ref.sh): ESP-in-TCP
#
# Between two namespaces over a veth, IPv4 and IPv6, transport mode,
# AES-GCM-128 (plain ESP: static SAs; UDP and TCP: SAs from the IKE driver):
# ping round trip (ms, mean, user to user), TCP bulk throughput (bit/s,
# iperf3), 64-byte UDP packet rate (packets/s received, iperf3), and for the
# sets with ESP-in-TCP, IKE message round trips per second over an espintcp
# connection (espintcp_rr); and through plain ESP and ESP-in-TCP, the
# throughput of 4 TCP transfers at once over 4 SA pairs (and 4 espintcp
# connections) against one alone. Each result is a line "BENCH NAME VALUE",
# e.g. "BENCH tcp4_bulk 81234567"; tools/testing/vm/bench.sh compares them
# across sets and boots. Absolute numbers mean nothing under TCG. Not a
# test: it fails only when a configuration cannot be set up or measured.
#
# ESPINTCP_BENCH_SECS sets the length of each measurement (default 5).

set -u
cd "$(dirname "$0")" || exit 1

IKE=$PWD/espintcp_ike
RR=$PWD/espintcp_rr
PSK=bench-psk-7d0e4b
SECS=${ESPINTCP_BENCH_SECS:-5}
PINGS=$((SECS * 40))	# -A: one at a time, as fast as they come back
dir=$(mktemp -d /tmp/espintcp-bench.XXXXXX)

source ./espintcp_lib.sh

case ${1:-} in
ours|base) paths="plain udp tcp" ;;
stock) paths="plain udp" ;;
upstream) paths="tcp" ;;
*) echo "usage: $0 ours|base|stock|upstream" >&2; exit 1 ;;
esac

status_is() { grep -qx "$2=$3" "$dir/$1.status" 2>/dev/null; }
listening() { ip netns exec "$B" ss -Htln "sport = :$1" | grep -q .; }
result() { echo "BENCH $1 $2"; }

# Static transport-mode SAs and policies for a <-> b, both directions.
plain_sas() {
	local key=0x000102030405060708090a0b0c0d0e0f10111213 ns

	for ns in "$A" "$B"; do
		ip -n "$ns" xfrm state add src "$a" dst "$b" proto esp spi 0x1001 \
			mode transport replay-window 64 \
			aead 'rfc4106(gcm(aes))' "$key" 128 || return 1
		ip -n "$ns" xfrm state add src "$b" dst "$a" proto esp spi 0x1002 \
			mode transport replay-window 64 \
			aead 'rfc4106(gcm(aes))' "$key" 128 || return 1
	done
	ip -n "$A" xfrm policy add src "$a" dst "$b" dir out \
		tmpl proto esp mode transport &&
	ip -n "$A" xfrm policy add src "$b" dst "$a" dir in \
		tmpl proto esp mode transport &&
	ip -n "$B" xfrm policy add src "$b" dst "$a" dir out \
		tmpl proto esp mode transport &&
	ip -n "$B" xfrm policy add src "$a" dst "$b" dir in \
		tmpl proto esp mode transport
}

# SAs from the IKE driver over TRANSPORT (udp or tcp).
ike_sas() {
	ip netns exec "$B" "$IKE" --responder --local "$b" --peer "$a" \
		--psk "$PSK" --status "$dir/r.status" 2>"$dir/r.log" &
	pids+=($!)
	wait_for "$WAIT" status_is r state listening || return 1
	# The defaults (3.5 s of UDP retries, 10 s for a TCP response) are too
	# short for the first SA of the VM under TCG (crypto instantiation and
	# self-test): bounds, not a pace.
	ip netns exec "$A" "$IKE" --initiator --local "$a" --peer "$b" \
		--psk "$PSK" --transport "$1" --status "$dir/i.status" \
		--udp-timeout 1000 --udp-tries 5 --timeout 60000 2>"$dir/i.log" &
	pids+=($!)
	wait_for "$WAIT" status_is i state established &&
		wait_for "$WAIT" status_is r state established
}

# iperf3 ARGS...: one run against a fresh server in b; JSON in $dir/iperf.json.
iperf() {
	local spid

	ip netns exec "$B" iperf3 -s -1 -B "$b" >/dev/null 2>&1 &
	spid=$!
	pids+=("$spid")
	wait_for "$WAIT" listening 5201 || { log "iperf3 server did not start"; return 1; }
	ip netns exec "$A" iperf3 -c "$b" -t "$SECS" -J "$@" >"$dir/iperf.json" ||
		{ log "iperf3 $*: failed"; return 1; }
	wait_exit "$spid" >/dev/null
}

# What the receiver got: bit/s, or packets/s of LEN-byte datagrams; from
# $dir/iperf.json or FILE.
received() {
	python3 - "${2:-$dir/iperf.json}" "${1:-0}" <<-'EOF'
	import json, sys
	end = json.load(open(sys.argv[1]))["end"]
	s = end.get("sum_received") or end["sum"]
	bps = s["bits_per_second"]
	if int(sys.argv[2]):
	    # UDP: the server's count of datagrams that arrived.
	    if "packets" in s and s.get("seconds"):
	        print(int((s["packets"] - s.get("lost_packets", 0)) / s["seconds"]))
	    else:
	        print(int(bps / 8 / int(sys.argv[2])))
	else:
	    print(int(bps))
	EOF
}

# measure FAMILY PATH: ping, bulk and packet rate through PATH's SAs.
measure() {
	local fam=$1 path=$2 rtt v

	addrs "$fam" transport direct
	topo_direct >/dev/null || return 1
	case $path in
	plain) plain_sas || { log "plain: SAs refused"; return 1; } ;;
	*) ike_sas "$path" || { log "$path: not established"; return 1; } ;;
	esac
	# User to user (-U): ping's default round trip ends at the reply's
	# receive timestamp, which says when the ESP message carrying it
	# arrived only if the module set keeps that time on the decrypted
	# packet; -U ends where the user sees the reply, whatever the set.
	rtt=$(ip netns exec "$A" ping -q -U -A -c "$PINGS" -W 5 "$b" |
		sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p')
	[ -n "$rtt" ] || { log "$path: ping failed"; return 1; }
	result "$path${fam}_rtt" "$rtt"
	iperf && v=$(received) || return 1
	result "$path${fam}_bulk" "$v"
	iperf -u -b 0 -l 64 && v=$(received 64) || return 1
	result "$path${fam}_pps" "$v"
	[ "$(sa_packets "$B")" -gt 0 ] || { log "$path: no packet went through the SAs"; return 1; }
}

# SA pairs for N transfers at once, one pair (reqid i + 1) for the TCP port
# FLOW_PORT + i, and the policies that pick them: plain ESP, or ESP-in-TCP
# over an espintcp connection of its own each (flow_sas N tcp).
FLOW_PORT=5301
flow_sas() {
	local key=0x000102030405060708090a0b0c0d0e0f10111213 i port r ns
	local cports=() fwd=() rev=()

	if [ "$2" = tcp ]; then
		conns flows 4500 "$1" || return 1
		mapfile -t cports <"$dir/flows-c.out"
	fi
	for ((i = 0; i < $1; i++)); do
		port=$((FLOW_PORT + i)) r=$((i + 1))
		if [ "$2" = tcp ]; then
			fwd=(encap espintcp "${cports[i]}" 4500 0.0.0.0)
			rev=(encap espintcp 4500 "${cports[i]}" 0.0.0.0)
		fi
		for ns in "$A" "$B"; do
			ip -n "$ns" xfrm state add src "$a" dst "$b" proto esp \
				spi $((0x3000 + 2 * i)) reqid "$r" mode transport \
				replay-window 64 aead 'rfc4106(gcm(aes))' "$key" 128 \
				"${fwd[@]}" || return 1
			ip -n "$ns" xfrm state add src "$b" dst "$a" proto esp \
				spi $((0x3001 + 2 * i)) reqid "$r" mode transport \
				replay-window 64 aead 'rfc4106(gcm(aes))' "$key" 128 \
				"${rev[@]}" || return 1
		done
		ip -n "$A" xfrm policy add src "$a" dst "$b" proto tcp dport "$port" \
			dir out tmpl proto esp mode transport reqid "$r" &&
		ip -n "$A" xfrm policy add src "$b" dst "$a" proto tcp sport "$port" \
			dir in tmpl proto esp mode transport reqid "$r" &&
		ip -n "$B" xfrm policy add src "$b" dst "$a" proto tcp sport "$port" \
			dir out tmpl proto esp mode transport reqid "$r" &&
		ip -n "$B" xfrm policy add src "$a" dst "$b" proto tcp dport "$port" \
			dir in tmpl proto esp mode transport reqid "$r" || return 1
	done
}

# flows N: N iperf3 transfers at once, each through its own SA pair; prints
# the sum of what the receivers got, bit/s.
flows() {
	local n=$1 i port spids=() cpids=() sum=0 v rc=0

	for ((i = 0; i < n; i++)); do
		port=$((FLOW_PORT + i))
		ip netns exec "$B" iperf3 -s -1 -B "$b" -p "$port" >/dev/null 2>&1 &
		spids+=($!)
	done
	# In a command substitution: cleanup() does not see these.
	for ((i = 0; i < n; i++)); do
		wait_for "$WAIT" listening $((FLOW_PORT + i)) || rc=1
	done
	[ $rc = 0 ] || { log "flows $n: iperf3 server did not start" >&2; kill "${spids[@]}"; return 1; }
	for ((i = 0; i < n; i++)); do
		ip netns exec "$A" iperf3 -c "$b" -p $((FLOW_PORT + i)) \
			-t "$SECS" -J >"$dir/flow$i.json" &
		cpids+=($!)
	done
	for i in "${cpids[@]}"; do
		wait "$i" || rc=1
	done
	[ $rc = 0 ] || { log "flows $n: iperf3 failed" >&2; kill "${spids[@]}"; return 1; }
	for i in "${spids[@]}"; do
		wait_exit "$i" >/dev/null
	done
	for ((i = 0; i < n; i++)); do
		v=$(received 0 "$dir/flow$i.json") || return 1
		sum=$((sum + v))
	done
	echo "$sum"
}

# 4 transfers at once over 4 SA pairs against one alone, in the same boot,
# through PATH (plain or tcp: 4 espintcp connections, which the caller's
# cleanup closes). How ESP scales with the CPUs (the VM has 2): a global
# lock or atomic on the per-packet path would show here.
scaling() {
	local fam=$1 path=$2 one four

	addrs "$fam" transport direct
	topo_direct >/dev/null || return 1
	flow_sas 4 "$path" || { log "flows: SAs refused"; return 1; }
	one=$(flows 1) && four=$(flows 4) || return 1
	[ "$(sa_packets "$B")" -gt 0 ] || { log "flows: no packet went through the SAs"; return 1; }
	result "$path${fam}_flows1" "$one"
	result "$path${fam}_flows4" "$four"
}

# IKE messages over an espintcp connection, no SA needed.
rr() {
	local fam=$1 spid

	addrs "$fam" transport direct
	topo_direct >/dev/null || return 1
	ip netns exec "$B" "$RR" server "$b" 4501 >"$dir/rr" 2>"$dir/rr.log" &
	spid=$!
	pids+=("$spid")
	wait_for "$WAIT" grep -q listening "$dir/rr" || return 1
	ip netns exec "$A" "$RR" client "$b" 4501 "$SECS" >"$dir/rr.out" 2>>"$dir/rr.log" &&
		wait_exit "$spid" || return 1
	result "ike${fam}_rr" "$(cat "$dir/rr.out")"
}

command -v iperf3 >/dev/null || { echo "bench: iperf3 missing"; exit 1; }
rc=0
for fam in 4 6; do
	for path in $paths; do
		if ! measure "$fam" "$path"; then
			rc=1
			log "$1: $path IPv$fam failed"
			sed 's/^/# /' "$dir"/*.log 2>/dev/null
		fi
		cleanup
	done
	for path in $paths; do
		[ "$path" != udp ] || continue
		scaling "$fam" "$path" || { rc=1; log "$1: $path, 4 flows IPv$fam failed"; }
		cleanup
	done
	if [ "$1" != stock ]; then
		rr "$fam" || { rc=1; log "$1: IKE round trips IPv$fam failed"; sed 's/^/# /' "$dir/rr.log"; }
		cleanup
	fi
done
exit $rc
