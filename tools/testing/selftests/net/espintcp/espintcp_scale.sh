#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Many espintcp connections, each with its SA pair (transport mode,
# AES-GCM-128, idle: no policy uses them), next to one connection whose SAs
# carry a bulk transfer. Between two namespaces over a veth, IPv4.
#
# Fails unless the N connections and their SAs are set up, and torn down
# with nothing left: no espintcp socket, no SA, no module reference of
# theirs. Reports, as "BENCH NAME VALUE" lines (make scale tabulates them):
#
#   scale_conns              N
#   scale_setup_us           per connection, both ends, until attached
#   scale_sa_us              per SA pair (two SAs in each namespace)
#   scale_teardown_us        per connection with its SAs, until all is gone
#   scale_mem_conn           bytes of MemAvailable per idle connection,
#                            both ends, without SAs
#   scale_mem_conn_sa        the same with its SA pair
#   scale_flow_ratio         throughput of the one connection's transfers
#                            (best of three) with the N idle connections
#                            present / without them (the mean of before
#                            they came and after they are gone)
#   scale_flow_before_ratio  with them / before they came
#   scale_flow_after_ratio   alone after they are gone / before they came
#                            (the drift between the two)
#
# and fails if scale_mem_conn_sa exceeds ESPINTCP_SCALE_MAX_KB KiB (a
# bound, not a goal: an idle connection must not grow queues or buffers).
#
#   ESPINTCP_SCALE_CONNS   N (default 300, the size make check runs;
#                          make scale runs 10000)
#   ESPINTCP_SCALE_BYTES   bytes of each transfer (default 4000000)
#   ESPINTCP_SCALE_MAX_KB  default 256

set -u
cd "$(dirname "$0")" || exit 1

N=${ESPINTCP_SCALE_CONNS:-300}
BYTES=${ESPINTCP_SCALE_BYTES:-4000000}
MAX_KB=${ESPINTCP_SCALE_MAX_KB:-256}
KEY=0x000102030405060708090a0b0c0d0e0f10111213
dir=$(mktemp -d /tmp/espintcp-scale.XXXXXX)

source ./espintcp_lib.sh

# Setting up and tearing down N connections under TCG: a bound, not a pace.
NWAIT=$((WAIT + N / 20))

result() { echo "BENCH $1 $2"; log "$1 $2"; }
now_us() { echo $(($(date +%s%N) / 1000)); }
mem_bytes() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	echo $(($(sed -n 's/^MemAvailable: *\([0-9]*\) kB$/\1/p' /proc/meminfo) * 1024))
}
mod_refs() { awk '$1 == "espintcp" { print $3 }' /proc/modules; }
sa_count() { ip -n "$1" xfrm state list | grep -c '^src'; }

# sa_lines PORTFILE SERVERPORT SPI REQID: "ip -batch" lines for an SA pair
# per connection, the same in both namespaces.
sa_lines() {
	awk -v a="$a" -v b="$b" -v sp="$2" -v spi="$3" -v reqid="$4" \
		-v key="$KEY" '
	/^[0-9]+$/ {
		alg = "aead rfc4106(gcm(aes)) " key " 128"
		printf "xfrm state add src %s dst %s proto esp spi %d reqid %d mode transport %s encap espintcp %d %d 0.0.0.0\n",
			a, b, spi, reqid, alg, $1, sp
		printf "xfrm state add src %s dst %s proto esp spi %d reqid %d mode transport %s encap espintcp %d %d 0.0.0.0\n",
			b, a, spi + 1, reqid, alg, sp, $1
		spi += 2
	}' "$1"
}

# What outside the flow's own path can slow it down, logged before each
# measurement: TCP's global memory accounting (pages charged against the
# pressure thresholds, which clamp every socket's buffers), and free blocks
# of 32 KiB and more (what TCP's and our page fragments come from; order-0
# pages when fragmentation leaves none).
memstate() {
	log "TCP pages charged $(awk '$1 == "TCP:" { print $NF }' /proc/net/sockstat)" \
		"(tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem)), free blocks of order >= 3:" \
		"$(awk '{ for (i = 8; i <= NF; i++) n += $i } END { print n }' /proc/buddyinfo)"
}

# Bits per second of the best of three transfers: another VM or a host
# task only ever slows one down.
best_transfer() {
	local i bps best=0

	for i in 1 2 3; do
		bps=$(transfer) || return 1
		[ "$bps" -le "$best" ] || best=$bps
	done
	echo "$best"
}

# Bits per second of one transfer of $BYTES to b:5201, through the flow's
# SAs, as the receiver timed it (accept to EOF: the processes' start-up,
# which is all page cache and exec, is not the flow's).
transfer() {
	local rpid us t0

	ip netns exec "$B" "$BULK" recv "$b" 5201 "$BYTES" >"$dir/bulk" &
	rpid=$!
	pids+=("$rpid")
	wait_for "$WAIT" grep -q listening "$dir/bulk" || return 1
	t0=$(now_us)
	ip netns exec "$A" "$BULK" send "$b" 5201 "$BYTES" || return 1
	wait_exit "$rpid" >/dev/null || { log "transfer corrupted or incomplete"; return 1; }
	us=$(sed -n 's/^received [0-9]* bytes in \([0-9]*\) us$/\1/p' "$dir/bulk")
	[ "${us:-0}" -gt 0 ] || { log "no transfer time: $(cat "$dir/bulk")"; return 1; }
	log "transfer: $us us in the receiver, $(($(now_us) - t0)) us with both starts" >&2
	echo $((BYTES * 8 * 1000000 / us))
}

scale() {
	local m0 m1 m2 refs t0 t1 t2 bps0 bps1 bps2 packets ns

	addrs 4 transport direct
	topo_direct >/dev/null || return 1

	# The flow: one connection, its SAs (reqid 1) and policies for
	# port 5201 only.
	conns flow 4500 1 || return 1
	sa_lines "$dir/flow-c.out" 4500 256 1 >"$dir/flow.batch"
	for ns in "$A" "$B"; do
		ip -n "$ns" -batch "$dir/flow.batch" || return 1
	done
	ip -n "$A" xfrm policy add src "$a" dst "$b" proto tcp dport 5201 \
		dir out tmpl src "$a" dst "$b" proto esp reqid 1 mode transport &&
	ip -n "$B" xfrm policy add src "$b" dst "$a" proto tcp sport 5201 \
		dir out tmpl src "$b" dst "$a" proto esp reqid 1 mode transport ||
		return 1
	memstate
	bps0=$(best_transfer) || return 1
	packets=$(sa_packets "$B")
	[ "$packets" -gt 0 ] || { log "the transfer did not go through its SAs"; return 1; }

	refs=$(mod_refs)
	m0=$(mem_bytes)
	t0=$(now_us)
	conns idle 4501 "$N" || return 1
	t1=$(now_us)
	m1=$(mem_bytes)
	sa_lines "$dir/idle-c.out" 4501 65536 2 >"$dir/idle.batch"
	for ns in "$A" "$B"; do
		ip -n "$ns" -batch "$dir/idle.batch" || return 1
	done
	t2=$(now_us)
	m2=$(mem_bytes)
	result scale_conns "$N"
	result scale_setup_us $(((t1 - t0) / N))
	result scale_sa_us $(((t2 - t1) / N))
	result scale_mem_conn $(((m0 - m1) / N))
	result scale_mem_conn_sa $(((m0 - m2) / N))
	for ns in "$A" "$B"; do
		[ "$(ulp_sockets "$ns")" -eq $((N + 1)) ] &&
			[ "$(sa_count "$ns")" -eq $((2 * N + 2)) ] ||
			{ log "$ns: not all connections or SAs are there"; return 1; }
	done

	memstate
	bps1=$(best_transfer) || return 1

	# Teardown: nothing of the idle connections may be left.
	t0=$(now_us)
	release idle-c
	release idle-s
	# (deleteall with a filter gives up on this many SAs)
	awk '{ print "xfrm state delete src", $5, "dst", $7, "proto esp spi", $11 }' \
		"$dir/idle.batch" >"$dir/idle-del.batch"
	for ns in "$A" "$B"; do
		ip -n "$ns" -batch "$dir/idle-del.batch" || return 1
	done
	for ns in "$A" "$B"; do
		wait_for "$NWAIT" eval '[ "$(ulp_sockets "$ns")" -eq 1 ]' &&
			wait_for "$WAIT" eval '[ "$(sa_count "$ns")" -eq 2 ]' ||
			{ log "$ns: idle connections or SAs left"; return 1; }
	done
	wait_for "$NWAIT" eval '[ "$(mod_refs)" -eq "$refs" ]' ||
		{ log "espintcp: $(mod_refs) references, $refs before"; return 1; }
	t1=$(now_us)
	result scale_teardown_us $(((t1 - t0) / N))

	[ $(((m0 - m2) / 1024 / N)) -le "$MAX_KB" ] ||
		{ log "more than $MAX_KB KiB per idle connection"; return 1; }
	# The flow alone again: what the machine drifted by since the first
	# measurement (TCG, other load on the host, what the idle connections
	# left behind) is not their presence. The ratio is against the mean
	# of the two alone, as in any A-B-A measurement; both ends are shown.
	memstate
	bps2=$(best_transfer) || return 1
	result scale_flow_ratio "$(awk -v x="$bps1" -v y="$bps0" -v z="$bps2" \
		'BEGIN { printf "%.3f", 2 * x / (y + z) }')"
	result scale_flow_before_ratio "$(awk -v x="$bps1" -v y="$bps0" 'BEGIN { printf "%.3f", x / y }')"
	result scale_flow_after_ratio "$(awk -v x="$bps2" -v y="$bps0" 'BEGIN { printf "%.3f", x / y }')"
}

run_cases "scale|scale_$N"
