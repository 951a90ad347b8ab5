# SPDX-License-Identifier: GPL-2.0
#
# Shared by the espintcp shell selftests: namespaces and topologies, UDP
# blocking, bounded waits, traffic checks. The sourcing script sets $dir (a
# scratch directory) and may append to pids (background jobs to stop).

tag=$$
A=espt-a-$tag
B=espt-b-$tag
R=espt-r-$tag
WAIT=${ESPINTCP_WAIT:-60}	# seconds any expected state may take (TCG)
BULK=$PWD/espintcp_bulk
CONNS=$PWD/espintcp_conns
pids=()
declare -A hfd	# hold(): the write end of each holder's standard input

log() { echo "# $*"; }

# Stop background jobs, delete the namespaces.
cleanup() {
	local p fd

	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	pids=()
	for p in "${!hfd[@]}"; do
		fd=${hfd[$p]}
		exec {fd}>&-
		rm -f "$dir/$p.in"
	done
	hfd=()
	for ns in "$A" "$B" "$R"; do
		ip netns del "$ns" 2>/dev/null
	done
}
trap 'cleanup; rm -rf "$dir"' EXIT

# Poll for a state (never a fixed sleep): wait_for SECONDS CMD...
wait_for() {
	local deadline=$((SECONDS + $1))

	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.1
	done
}

# Exit status of background job $1, waiting at most $WAIT seconds.
exited() { ! kill -0 "$1" 2>/dev/null; }
wait_exit() {
	wait_for "$WAIT" exited "$1" || { log "pid $1 did not exit"; return 255; }
	wait "$1"
}

# Two hosts over veth: a (10.74.0.1, fd00:74::1) and b (.2, ::2), with
# inner addresses for tunnel mode (10.74.1.1, 10.74.2.1, fd00:74:1::1,
# fd00:74:2::1).
topo_direct() {
	ip netns add "$A" && ip netns add "$B" || return 1
	ip -n "$A" link add veth0 address 02:00:00:00:74:01 type veth \
		peer name veth0 address 02:00:00:00:74:02 netns "$B" || return 1
	for ns in "$A" "$B"; do
		ip -n "$ns" link set lo up
		ip -n "$ns" link set veth0 up
	done
	ip -n "$A" addr add 10.74.0.1/24 dev veth0
	ip -n "$A" addr add fd00:74::1/64 dev veth0 nodad
	ip -n "$B" addr add 10.74.0.2/24 dev veth0
	ip -n "$B" addr add fd00:74::2/64 dev veth0 nodad
	ip -n "$A" addr add 10.74.1.1/32 dev lo
	ip -n "$A" addr add fd00:74:1::1/128 dev lo
	ip -n "$B" addr add 10.74.2.1/32 dev lo
	ip -n "$B" addr add fd00:74:2::1/128 dev lo
	ip -n "$A" route add 10.74.2.1/32 dev veth0 src 10.74.1.1
	ip -n "$A" route add fd00:74:2::1/128 dev veth0 src fd00:74:1::1
	ip -n "$B" route add 10.74.1.1/32 dev veth0 src 10.74.2.1
	ip -n "$B" route add fd00:74:1::1/128 dev veth0 src fd00:74:2::1
	# Neither ARP nor ND may depend on the policies.
	ip -n "$A" neigh replace 10.74.0.2 lladdr 02:00:00:00:74:02 dev veth0 nud permanent
	ip -n "$A" neigh replace fd00:74::2 lladdr 02:00:00:00:74:02 dev veth0 nud permanent
	ip -n "$B" neigh replace 10.74.0.1 lladdr 02:00:00:00:74:01 dev veth0 nud permanent
	ip -n "$B" neigh replace fd00:74::1 lladdr 02:00:00:00:74:01 dev veth0 nud permanent
}

# a (10.75.1.2) -- r (10.75.1.1 | 10.75.2.1, masquerade) -- b (10.75.2.2);
# b knows r only: everything from a reaches it from r's address.
topo_nat() {
	ip netns add "$A" && ip netns add "$B" && ip netns add "$R" || return 1
	ip -n "$A" link add veth0 address 02:00:00:00:75:01 type veth \
		peer name veth0 address 02:00:00:00:75:02 netns "$R" || return 1
	ip -n "$B" link add veth0 address 02:00:00:00:75:04 type veth \
		peer name veth1 address 02:00:00:00:75:03 netns "$R" || return 1
	for ns in "$A" "$B" "$R"; do
		ip -n "$ns" link set lo up
	done
	ip -n "$A" link set veth0 up
	ip -n "$B" link set veth0 up
	ip -n "$R" link set veth0 up
	ip -n "$R" link set veth1 up
	ip -n "$A" addr add 10.75.1.2/24 dev veth0
	ip -n "$A" addr add fd00:75:1::2/64 dev veth0 nodad
	ip -n "$R" addr add 10.75.1.1/24 dev veth0
	ip -n "$R" addr add fd00:75:1::1/64 dev veth0 nodad
	ip -n "$R" addr add 10.75.2.1/24 dev veth1
	ip -n "$R" addr add fd00:75:2::1/64 dev veth1 nodad
	ip -n "$B" addr add 10.75.2.2/24 dev veth0
	ip -n "$B" addr add fd00:75:2::2/64 dev veth0 nodad
	ip -n "$A" route add default via 10.75.1.1
	ip -n "$A" -6 route add default via fd00:75:1::1
	ip netns exec "$R" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward;
		echo 1 > /proc/sys/net/ipv6/conf/all/forwarding' || return 1
	ip -n "$A" neigh replace 10.75.1.1 lladdr 02:00:00:00:75:02 dev veth0 nud permanent
	ip -n "$A" neigh replace fd00:75:1::1 lladdr 02:00:00:00:75:02 dev veth0 nud permanent
	ip -n "$R" neigh replace 10.75.1.2 lladdr 02:00:00:00:75:01 dev veth0 nud permanent
	ip -n "$R" neigh replace fd00:75:1::2 lladdr 02:00:00:00:75:01 dev veth0 nud permanent
	ip -n "$R" neigh replace 10.75.2.2 lladdr 02:00:00:00:75:04 dev veth1 nud permanent
	ip -n "$R" neigh replace fd00:75:2::2 lladdr 02:00:00:00:75:04 dev veth1 nud permanent
	ip -n "$B" neigh replace 10.75.2.1 lladdr 02:00:00:00:75:03 dev veth0 nud permanent
	ip -n "$B" neigh replace fd00:75:2::1 lladdr 02:00:00:00:75:03 dev veth0 nud permanent
	ip netns exec "$R" nft -f - <<-EOF
	table inet espt-nat {
		chain post {
			type nat hook postrouting priority srcnat;
			oifname "veth1" masquerade
		}
	}
	EOF
}

# Drop IKE and ESP over UDP (ports 500 and 4500) at host $1, input and
# forward.
block_udp() {
	ip netns exec "$1" nft -f - <<-EOF
	table inet espt-block {
		chain inbound { type filter hook input priority 0; udp dport { 500, 4500 } drop; }
		chain forwarded { type filter hook forward priority 0; udp dport { 500, 4500 } drop; }
	}
	EOF
}

unblock_udp() { ip netns exec "$1" nft delete table inet espt-block; }

# Addresses of the current case: family 4|6, mode transport|tunnel, topo.
addrs() {
	local fam=$1 mode=$2 topo=$3

	if [ "$topo" = nat ]; then
		if [ "$fam" = 4 ]; then
			a=10.75.1.2 b=10.75.2.2 a_seen=10.75.2.1
		else
			a=fd00:75:1::2 b=fd00:75:2::2 a_seen=fd00:75:2::1
		fi
	elif [ "$fam" = 4 ]; then
		a=10.74.0.1 b=10.74.0.2 a_seen=$a
	else
		a=fd00:74::1 b=fd00:74::2 a_seen=$a
	fi
	ai=$a bi=$b tun_a=() tun_b=()
	if [ "$mode" = tunnel ]; then
		if [ "$fam" = 4 ]; then
			ai=10.74.1.1 bi=10.74.2.1
		else
			ai=fd00:74:1::1 bi=fd00:74:2::1
		fi
		tun_a=(--tunnel "$ai" "$bi")
		tun_b=(--tunnel "$bi" "$ai")
	fi
}

# Packets of all SAs of namespace $1 (the "lifetime current" lines).
sa_packets() {
	ip -n "$1" -s xfrm state |
		sed -n 's/^[[:space:]]*[0-9]*(bytes), \([0-9]*\)(packets)$/\1/p' |
		awk '{ n += $1 } END { print n + 0 }'
}

traffic() {
	local before bpid

	before=$(sa_packets "$B")
	ip netns exec "$A" ping -q -c 2 -i 0.2 -W 10 "$bi" >/dev/null || {
		log "ping $bi failed"; return 1; }
	ip netns exec "$B" "$BULK" recv "$bi" 5001 200000 >"$dir/bulk" &
	bpid=$!
	wait_for "$WAIT" grep -q listening "$dir/bulk" || return 1
	ip netns exec "$A" "$BULK" send "$bi" 5001 200000 || return 1
	wait_exit "$bpid" || { log "transfer corrupted or incomplete"; return 1; }
	[ "$(sa_packets "$B")" -gt "$before" ] || { log "SA counters did not rise"; return 1; }
}

encap_is() {
	ip -n "$1" xfrm state | grep -q "type $2" ||
		{ log "$1: no $2 SA"; ip -n "$1" xfrm state | sed 's/^/# /'; return 1; }
}

ulp_sockets() { ip netns exec "$1" ss -Htnie 2>/dev/null | grep -c espintcp; }

has_line() { grep -qx "$2" "$dir/$1.out"; }

# hold NAME NS ARGS...: espintcp_conns ARGS in NS, holding its connections
# until release NAME (or cleanup, which stops it). Its output in
# $dir/NAME.out.
hold() {
	local name=$1 ns=$2 fd

	shift 2
	mkfifo "$dir/$name.in" || return 1
	ip netns exec "$ns" "$CONNS" "$@" <"$dir/$name.in" >"$dir/$name.out" \
		2>"$dir/$name.log" &
	pids+=($!)
	exec {fd}>"$dir/$name.in"
	hfd[$name]=$fd
}

release() {
	local fd=${hfd[$1]}

	echo >&"$fd"
	exec {fd}>&-
	unset "hfd[$1]"
	rm -f "$dir/$1.in"
}

# conns NAME PORT COUNT: COUNT espintcp connections from a to b:PORT, held
# until release NAME-c and NAME-s; the ports of a's ends, a line each, in
# $dir/NAME-c.out.
conns() {
	local bound=$((WAIT + $3 / 20))	# setting up many under TCG: a bound

	hold "$1-s" "$B" server "$b" "$2" "$3" &&
		wait_for "$WAIT" has_line "$1-s" listening &&
		hold "$1-c" "$A" client "$b" "$2" "$3" || return 1
	wait_for "$bound" has_line "$1-c" ready &&
		wait_for "$bound" has_line "$1-s" ready ||
		{ log "$1: connections not set up"; cat "$dir/$1"-?.log; return 1; }
}

# run_cases "CMD|name" ...: TAP lines, a fresh scratch state per case;
# returns non-zero when a case failed.
run_cases() {
	local c num=0 failed=0

	echo "TAP version 13"
	echo "1..$#"
	for c in "$@"; do
		num=$((num + 1))
		# ESPINTCP_CASES=REGEX runs only matching cases (development).
		if ! [[ ${c#*|} =~ ${ESPINTCP_CASES:-.} ]]; then
			echo "ok $num ${c#*|} # SKIP not selected"
			continue
		fi
		log "${c#*|}"
		EXTRA=()
		rm -rf "${dir:?}"/*
		if eval "${c%|*}"; then
			echo "ok $num ${c#*|}"
		else
			echo "not ok $num ${c#*|}"
			failed=$((failed + 1))
		fi
		cleanup
	done
	[ $failed -eq 0 ]
}
