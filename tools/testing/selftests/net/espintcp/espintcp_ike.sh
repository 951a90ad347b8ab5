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
PSK=selftest-psk-5f1c2a

dir=$(mktemp -d /tmp/espintcp-ike.XXXXXX)

source ./espintcp_lib.sh

status_is() { grep -qx "$2=$3" "$dir/$1.status" 2>/dev/null; }

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

run_cases "${cases[@]}"
