#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# End to end: the IKE driver (espintcp_ike) brings up ESP between network
# namespaces over UDP, or over TCP with the espintcp ULP when UDP is blocked,
# directly or through a NAT (nftables masquerade), IPv4 and IPv6, transport
# and tunnel mode. Traffic is checked end to end (ping and a content-checked
# transfer), counters must rise, and teardown must leave no SA, no policy and
# no espintcp socket behind.

set -u
cd "$(dirname "$0")" || exit 1

IKE=$PWD/espintcp_ike
BULK=$PWD/espintcp_bulk
PSK=selftest-psk-5f1c2a
WAIT=${ESPINTCP_WAIT:-60}	# seconds any expected state may take (TCG)

tag=$$
A=espt-a-$tag
B=espt-b-$tag
R=espt-r-$tag
dir=$(mktemp -d /tmp/espintcp-ike.XXXXXX)
num=0
failed=0
pids=()

log() { echo "# $*"; }

cleanup() {
	local p

	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	pids=()
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

status_is() { grep -qx "$2=$3" "$dir/$1.status" 2>/dev/null; }

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

# Drop IKE/ESP over UDP port 4500 at host $1 (input and forward).
block_udp() {
	ip netns exec "$1" nft -f - <<-EOF
	table inet espt-block {
		chain inbound { type filter hook input priority 0; udp dport 4500 drop; }
		chain forwarded { type filter hook forward priority 0; udp dport 4500 drop; }
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

start_responder() {
	ip netns exec "$B" "$IKE" --responder --local "$b" --peer "$a_seen" \
		--psk "${RPSK:-$PSK}" "${tun_b[@]}" --status "$dir/r.status" \
		"$@" 2>"$dir/r.log" &
	rpid=$!
	pids+=("$rpid")
	wait_for "$WAIT" status_is r state listening
}

start_initiator() {
	ip netns exec "$A" "$IKE" --initiator --local "$a" --peer "$b" \
		--psk "$PSK" "${tun_a[@]}" --status "$dir/i.status" \
		"$@" 2>"$dir/i.log" &
	ipid=$!
	pids+=("$ipid")
}

established() {
	wait_for "$WAIT" status_is i state established &&
		wait_for "$WAIT" status_is r state established
}

sa_packets() {
	ip -n "$1" -s xfrm state | awk '/\(packets\)/ { gsub(/[^0-9,]/, "");
		split($0, f, ","); n += f[2] } END { print n + 0 }'
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

# Both drivers exit 0 on SIGTERM; nothing of theirs remains.
teardown_clean() {
	local ns rc

	kill -TERM "$ipid"
	wait_exit "$ipid"; rc=$?
	[ $rc -eq 0 ] || { log "initiator exited $rc"; return 1; }
	wait_exit "$rpid"; rc=$?
	[ $rc -eq 0 ] || { log "responder exited $rc"; return 1; }
	pids=()
	for ns in "$A" "$B"; do
		[ -z "$(ip -n "$ns" xfrm state)" ] || { log "$ns: SAs left"; return 1; }
		[ -z "$(ip -n "$ns" xfrm policy)" ] || { log "$ns: policies left"; return 1; }
		wait_for "$WAIT" [ "$(ulp_sockets "$ns")" -eq 0 ] ||
			{ log "$ns: espintcp sockets left"; return 1; }
	done
}

# up FAMILY MODE TOPO TRANSPORT [BLOCK]: set up and bring the tunnel up.
up() {
	local fam=$1 mode=$2 topo=$3 tr=$4 block=${5:-}

	addrs "$fam" "$mode" "$topo"
	"topo_$topo" || return 1
	[ -z "$block" ] || block_udp "$block" || return 1
	start_responder || { log "responder did not start"; return 1; }
	# Where UDP must work, give it time (TCG, first use of the crypto
	# modules); where it is blocked, only the time to give up matters.
	if [ -n "$block" ]; then
		udp=(--udp-timeout 300 --udp-tries 2)
	else
		udp=(--udp-timeout 1000 --udp-tries 5)
	fi
	start_initiator --transport "$tr" "${udp[@]}" "${EXTRA[@]}"
	established || { log "not established"; sed 's/^/# /' "$dir"/*.log; return 1; }
}

# ---- cases ----

basic() {	# FAMILY MODE TOPO TRANSPORT BLOCK EXPECT
	up "$1" "$2" "$3" "$4" "$5" || return 1
	status_is i transport "$6" || { log "not over $6"; return 1; }
	traffic || return 1
	if [ "$6" = tcp ]; then
		encap_is "$A" espintcp && encap_is "$B" espintcp || return 1
		[ "$(ulp_sockets "$A")" -eq 1 ] || { log "no espintcp socket"; return 1; }
	fi
	teardown_clean
}

case_reconnect() {
	up 4 transport direct tcp || return 1
	kill -USR2 "$ipid"
	wait_for "$WAIT" status_is i reconnects 1 &&
		wait_for "$WAIT" status_is r reconnects 1 ||
		{ log "no reconnect"; return 1; }
	traffic && teardown_clean
}

case_rekey() {
	local old

	up 6 tunnel direct tcp || return 1
	old=$(sed -n 's/^spi_in=//p' "$dir/i.status")
	kill -USR1 "$ipid"
	wait_for "$WAIT" status_is i rekeys 1 && wait_for "$WAIT" status_is r rekeys 1 ||
		{ log "no rekey"; return 1; }
	! status_is i spi_in "$old" || { log "SPI unchanged"; return 1; }
	[ "$(ip -n "$A" xfrm state | grep -c '^src')" -eq 2 ] ||
		{ log "old SAs left"; return 1; }
	traffic && teardown_clean
}

case_tcp_to_udp() {
	EXTRA=(--probe-udp 300)
	up 4 transport direct fallback "$B" || return 1
	status_is i transport tcp || { log "not over tcp"; return 1; }
	unblock_udp "$B"
	wait_for "$WAIT" status_is i transport udp &&
		wait_for "$WAIT" status_is r transport udp ||
		{ log "did not move back to UDP"; return 1; }
	encap_is "$A" espinudp && encap_is "$B" espinudp || return 1
	wait_for "$WAIT" [ "$(ulp_sockets "$A")" -eq 0 ] || { log "TCP left open"; return 1; }
	traffic && teardown_clean
}

case_unreachable() {
	local rc

	up_fail 4 udp "$B"
	wait_exit "$ipid"; rc=$?
	[ $rc -eq 2 ] || { log "initiator exited $rc, not 2"; return 1; }
}

up_fail() {	# FAMILY TRANSPORT [BLOCK]
	addrs "$1" transport direct
	topo_direct || return 1
	[ -z "${3:-}" ] || block_udp "$3"
	start_responder --prefix-timeout 500 || return 1
	start_initiator --transport "$2" --udp-timeout 200 --udp-tries 2 --timeout 3000
}

case_prefix_timeout() {
	local rc

	addrs 4 transport direct
	topo_direct || return 1
	start_responder --prefix-timeout 500 || return 1
	# A connection that never sends IKETCP, held until the responder gives up.
	ip netns exec "$A" bash -c "exec 3<>/dev/tcp/$b/4500; cat <&3 >/dev/null" &
	wait_exit "$rpid"; rc=$?
	pids=()
	[ $rc -eq 3 ] || { log "responder exited $rc, not 3"; return 1; }
	grep -q IKETCP "$dir/r.log" || { log "no clear message"; return 1; }
}

case_bad_psk() {
	local rc

	RPSK=other-psk up_fail 4 tcp
	wait_exit "$rpid"; rc=$?
	[ $rc -eq 6 ] || { log "responder exited $rc, not 6"; return 1; }
	wait_exit "$ipid"; rc=$?
	[ $rc -eq 2 ] || { log "initiator exited $rc, not 2"; return 1; }
	pids=()
	[ -z "$(ip -n "$A" xfrm state)$(ip -n "$B" xfrm state)" ] || { log "SAs left"; return 1; }
}

case_netlink_refused() {
	local rc

	addrs 4 transport direct
	topo_direct || return 1
	# Someone else's policy for the same traffic: EEXIST.
	ip -n "$A" xfrm policy add src "$a/32" dst "$b/32" dir out action block
	start_responder || return 1
	start_initiator --transport tcp
	wait_exit "$ipid"; rc=$?
	[ $rc -eq 5 ] || { log "initiator exited $rc, not 5"; return 1; }
	grep -q "cannot install policy" "$dir/i.log" || { log "no clear message"; return 1; }
}

cases=(
	"basic 4 transport direct udp '' udp|udp4_transport"
	"basic 4 transport direct tcp '' tcp|tcp4_transport"
	"basic 4 tunnel direct fallback $B tcp|fallback4_tunnel_udp_blocked"
	"basic 6 transport direct fallback $B tcp|fallback6_transport_udp_blocked"
	"basic 6 tunnel direct udp '' udp|udp6_tunnel"
	"basic 4 transport nat fallback $R tcp|nat4_fallback_udp_blocked"
	"basic 6 transport nat tcp '' tcp|nat6_tcp"
	"case_reconnect|reconnect_from_new_port"
	"case_rekey|rekey_child_sa"
	"case_tcp_to_udp|tcp_back_to_udp"
	"case_unreachable|error_peer_unreachable"
	"case_prefix_timeout|error_prefix_timeout"
	"case_bad_psk|error_authentication"
	"case_netlink_refused|error_netlink_refused"
)

[ -x "$IKE" ] && [ -x "$BULK" ] || { echo "1..0 # SKIP build espintcp_ike first"; exit 4; }

echo "TAP version 13"
echo "1..${#cases[@]}"
for c in "${cases[@]}"; do
	num=$((num + 1))
	name=${c#*|}
	log "$name"
	EXTRA=()
	rm -f "$dir"/*
	if eval "${c%|*}"; then
		echo "ok $num $name"
	else
		echo "not ok $num $name"
		failed=$((failed + 1))
	fi
	cleanup
done
[ $failed -eq 0 ]
