#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Debian 12's own libreswan (4.10, unmodified) over TCP with our modules on
# the stock kernel: two pluto daemons in two namespaces, each with its own
# configuration, secrets, NSS database and run directory. IKEv2 with a
# pre-shared key; the responder has listen-tcp=yes, the initiator
# enable-tcp=yes, or enable-tcp=fallback with UDP blocked by nftables.
# Host-to-host and subnet-to-subnet, IPv4 and IPv6.
#
# Checked: pluto's own status, the TCP connection on port 4500 with the
# espintcp ULP, SAs with "encap type espintcp", traffic with content
# verified, SA counters, a child SA rekey with traffic flowing, a clean
# teardown; and every frame of a capture decodes with our RFC 9329 Lua
# dissector (tools/wireshark/espintcp.lua) as IKE or ESP, nothing malformed.
#
# Interoperability: when another Debian root is mounted at
# $ESPINTCP_PEER_ROOT (default /run/espintcp-peer, run-vm.sh --peer-root),
# the same cases run again with one pluto from that root (chroot) and the
# other from this one, each side initiating: on make check-kernels' Debian
# 13 row, trixie's libreswan 5.x against bookworm's 4.10.

set -u
cd "$(dirname "$0")" || exit 1

PLUTO=/usr/libexec/ipsec/pluto
LUA=$(cd ../../../.. && pwd)/wireshark/espintcp.lua
PSK=selftest-libreswan-psk-0123456789abcdef
dir=$(mktemp -d /tmp/espintcp-libreswan.XXXXXX)
peer=${ESPINTCP_PEER_ROOT:-/run/espintcp-peer}
# The root each host's libreswan comes from: "" is this one.
root_a=
root_b=

source ./espintcp_lib.sh

# lsw HOST CMD...: CMD from HOST's libreswan (its root's, via chroot).
lsw() {
	local r=root_$1

	shift
	if [ -n "${!r}" ]; then
		chroot "${!r}" "$@"
	else
		"$@"
	fi
}

# roots ROOT_A ROOT_B CMD...: CMD with these roots for hosts a and b.
# shellcheck disable=SC2034 # read through ${!r} in lsw(), whack()
roots() {
	root_a=$1
	root_b=$2
	shift 2
	"$@"
	local rc=$?

	root_a=
	root_b=
	return $rc
}

# lsw_conf HOST ME PEER MODE ENABLE_TCP [MYNET PEERNET]
lsw_conf() {
	local h=$1 me=$2 peer=$3 mode=$4 tcp=$5 d=$dir/$1 c lp rp

	mkdir -p "$d/nss" "$d/run"
	{
		printf 'config setup\n\tlisten-tcp=yes\n\n'
		printf 'conn t\n\tauthby=secret\n\tikev2=insist\n'
		printf '\tleft=%s\n\tright=%s\n\ttype=%s\n' "$me" "$peer" "$mode"
		[ $# -lt 7 ] || printf '\tleftsubnet=%s\n\trightsubnet=%s\n' "$6" "$7"
		printf '\tenable-tcp=%s\n\ttcp-remoteport=4500\n' "$tcp"
		# Give up on UDP quickly when it is blocked.
		printf '\tretransmit-interval=500\n\tretransmit-timeout=10s\n'
		# Routes are the topology's business, not the updown script's.
		printf '\tleftupdown=/bin/true\n\tauto=add\n\n'
		# Host to host, the policy also covers IKE's own TCP
		# connection. pluto exempts its sockets, but not the
		# segments the kernel sends for a closed connection (TIME_WAIT,
		# RST): once the peer has deleted the SA they hit the trap
		# and pluto 4.10 blocks for minutes in an on-demand connect().
		# The remedy, as README tells users: a passthrough for TCP 4500.
		for c in "in tcp/4500 tcp" "out tcp tcp/4500"; do
			read -r c lp rp <<<"$c"
			printf 'conn tcp-%s\n\ttype=passthrough\n\tauthby=never\n' "$c"
			printf '\tleft=%s\n\tright=%s\n' "$me" "$peer"
			printf '\tleftprotoport=%s\n\trightprotoport=%s\n' "$lp" "$rp"
			printf '\tauto=route\n\n'
		done
	} >"$d/ipsec.conf"
	printf '%s %s : PSK "%s"\n' "$me" "$peer" "$PSK" >"$d/ipsec.secrets"
	lsw "$h" ipsec initnss --nssdir "$d/nss" >"$d/initnss.log" 2>&1
}

lsw_start() {	# HOST NS
	local d=$dir/$1 c r=root_$1
	local root=${!r}

	log "$1: $(lsw "$1" ipsec --version)"
	ip netns exec "$2" ${root:+chroot "$root"} "$PLUTO" --config "$d/ipsec.conf" --nssdir "$d/nss" \
		--rundir "$d/run" --secretsfile "$d/ipsec.secrets" \
		--nofork --stderrlog 2>"$d/pluto.log" &
	pids+=($!)
	eval "pluto_$1=$!"
	wait_for "$WAIT" [ -S "$d/run/pluto.ctl" ] || { log "$1: pluto did not start"; return 1; }
	for c in t tcp-in tcp-out; do
		timeout 60 ip netns exec "$2" ${root:+chroot "$root"} ipsec addconn --config "$d/ipsec.conf" \
			--ctlsocket "$d/run/pluto.ctl" "$c" >>"$d/addconn.log" 2>&1 ||
			{ log "$1: addconn $c failed"; sed 's/^/# /' "$d/addconn.log"; return 1; }
	done
	for c in tcp-in tcp-out; do
		whack "$1" "$2" --name "$c" --route >>"$d/addconn.log" 2>&1 ||
			{ log "$1: route $c failed"; sed 's/^/# /' "$d/addconn.log"; return 1; }
	done
}

whack() {	# HOST NS ARGS...
	local h=$1 ns=$2 r=root_$1

	shift 2
	timeout 120 ip netns exec "$ns" ${!r:+chroot "${!r}"} ipsec whack \
		--rundir "$dir/$h/run" "$@"
}

spis() { ip -n "$1" xfrm state | sed -n 's/.*proto esp spi \(0x[0-9a-f]*\).*/\1/p'; }
new_spi() { spis "$1" | grep -qvxF -f "$dir/old.spis"; }
child_up() { whack a "$A" --trafficstatus 2>/dev/null | grep -q '"t".*type=ESP'; }
no_sa() { [ -z "$(ip -n "$1" xfrm state)" ]; }
no_ulp() { [ "$(ulp_sockets "$1")" -eq 0 ]; }
# pluto 4.10 installs bypass policies for IPv6 neighbour discovery at start
# and leaves them behind at exit; anything else is a leftover.
policies() {
	ip -n "$1" xfrm policy | grep -v '^[[:space:]]' |
		grep -vE '^src ::/0 dst ::/0 proto ipv6-icmp type 13[56] *$'
}

# One capture per host of what it sends ("outbound"), where the frames are
# in the order its TCP wrote them. A capture of both directions on one side
# sees the peer's segments as that side's CPUs receive them: veth hands
# each to the per-CPU backlog of the CPU that sent it, so two segments sent
# from two CPUs may arrive out of order, as they may in any TCP over veth.
capture_start() {
	local h ns

	caps=()
	for h in a b; do
		ns=$A
		[ $h = a ] || ns=$B
		ip netns exec "$ns" dumpcap -q -i veth0 -f outbound \
			-w "$dir/cap-$h.pcapng" 2>"$dir/dumpcap-$h.log" &
		caps+=($!)
		pids+=($!)
		wait_for "$WAIT" grep -q "Capturing on" "$dir/dumpcap-$h.log" ||
			{ log "$h: dumpcap did not start"; return 1; }
	done
}

# Every frame with TCP payload on port 4500 decodes as the prefix, IKE or
# ESP (or is part of a message reassembled later, hence two passes and
# reassembly of out-of-order segments; or is a retransmission, which
# Wireshark does not dissect again: TCG is slow enough for TCP to
# retransmit now and then; or follows segments the capture lost, which
# dumpcap's log then counts); nothing is malformed, no expert error.
dissect_ok() {
	local h pid rc=0

	for pid in "${caps[@]}"; do
		kill -INT "$pid"
		wait_exit "$pid" >/dev/null
	done
	for h in a b; do
		log "$h sent:"
		dissect_one "$dir/cap-$h.pcapng" "$dir/frames-$h.tsv" || rc=1
		grep -ai "dropped" "$dir/dumpcap-$h.log" | sed 's/^/# dumpcap: /'
	done
	return "$rc"
}

# dissect_one CAPTURE TSV: the check above for one host's frames.
dissect_one() {
	local cap=$1 out=$2

	# Unprivileged: Wireshark 4.4 (Debian 13) runs no Lua script as root.
	chmod o+x "$dir" && chmod o+r "$cap" || return 1
	setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=/nonexistent \
		tshark -2 -r "$cap" -X "lua_script:$LUA" -Y 'tcp.port == 4500' \
		-o tcp.reassemble_out_of_order:TRUE \
		-T fields -E separator=/t -E occurrence=f -e frame.number \
		-e tcp.len -e frame.protocols -e tcp.reassembled_in \
		-e rfc9329.prefix -e _ws.malformed -e _ws.expert.severity \
		-e tcp.analysis.retransmission \
		-e tcp.analysis.spurious_retransmission \
		-e tcp.analysis.lost_segment -e tcp.analysis.out_of_order \
		-e tcp.analysis.keep_alive -e tcp.stream -e tcp.seq \
		>"$out" 2>"$dir/tshark.log" ||
		{ log "tshark failed"; sed 's/^/# /' "$dir/tshark.log"; return 1; }
	awk -F'\t' '
		$3 ~ /:isakmp/ { ike++ }
		$3 ~ /:esp/ { esp++ }
		# A host sends its stream in order: a segment starting below
		# what it sent before re-sends bytes, whatever Wireshark calls
		# it (a retransmission soon after the original is "out of
		# order" to its heuristics).
		$2 > 0 {
			resent = $14 < sent[$13]
			if ($14 + $2 > sent[$13])
				sent[$13] = $14 + $2
		}
		$2 > 0 && $3 !~ /:(isakmp|esp)/ && $4 == "" && $5 == "" {
			if ($8 != "" || $9 != "" || resent) {
				retx++
				next
			}
			if ($10 != "") {
				print "# frame " $1 " follows segments not captured"
				gap++
				next
			}
			print "# frame " $1 " not decoded: " $3 \
			      ($11 != "" ? " (out of order)" : "") \
			      ($12 != "" ? " (keep-alive)" : ""); bad++
		}
		# PI_ERROR is 0x00800000
		$6 != "" || ($7 != "" && $7 >= 8388608) {
			print "# frame " $1 " malformed: " $3; bad++
		}
		END {
			printf "# %d frames: %d IKE, %d ESP, %d retransmitted, %d after a capture gap, %d bad\n",
			       NR, ike, esp, retx, gap, bad
			exit !(ike > 0 && esp > 0 && bad == 0)
		}' "$out"
}

# lsw_case FAMILY MODE ENABLE_TCP [BLOCK]
lsw_case() {
	local fam=$1 mode=$2 tcp=$3 block=${4:-} nets_a=() nets_b=()

	addrs "$fam" "$mode" direct
	topo_direct || return 1
	[ -z "$block" ] || block_udp "$block" || return 1
	if [ "$mode" = tunnel ]; then
		local p=32

		[ "$fam" = 4 ] || p=128
		nets_a=("$ai/$p" "$bi/$p")
		nets_b=("$bi/$p" "$ai/$p")
	fi
	lsw_conf a "$a" "$b" "$mode" "$tcp" "${nets_a[@]}" &&
		lsw_conf b "$b" "$a" "$mode" "$tcp" "${nets_b[@]}" || return 1
	capture_start || return 1
	lsw_start a "$A" && lsw_start b "$B" || return 1

	# whack's status is not the connection's: with enable-tcp=fallback
	# it reports the UDP attempt's timeout while TCP carries on.
	whack a "$A" --name t --initiate >"$dir/initiate.log" 2>&1
	wait_for "$WAIT" child_up || {
		log "no child SA in pluto's status"
		sed 's/^/# /' "$dir/initiate.log"
		tail -20 "$dir/a/pluto.log" | sed 's/^/# /'
		return 1
	}
	# 4.10 says STATE_V2_ESTABLISHED_IKE_SA, 5.x ESTABLISHED_IKE_SA.
	whack a "$A" --showstates | grep -q '"t".*ESTABLISHED_IKE_SA' ||
		{ log "no IKE SA in pluto's status"; return 1; }
	grep -q 'established Child SA.*{ESPinTCP' "$dir/a/pluto.log" ||
		{ log "child SA not ESPinTCP"; grep 'Child SA' "$dir/a/pluto.log" | sed 's/^/# /'; return 1; }
	[ "$(ulp_sockets "$A")" -ge 1 ] && [ "$(ulp_sockets "$B")" -ge 1 ] ||
		{ log "no espintcp socket on port 4500"; return 1; }
	ip netns exec "$A" ss -Htni 'dport = :4500' | grep -q . || { log "no TCP to 4500"; return 1; }
	encap_is "$A" espintcp && encap_is "$B" espintcp || return 1
	traffic || return 1

	spis "$A" >"$dir/old.spis"
	# 4.10 says --rekey-ipsec, 5.x --rekey-child.
	local rekey=--rekey-child
	whack a "$A" --help 2>&1 | grep -q -- --rekey-child || rekey=--rekey-ipsec
	whack a "$A" --name t "$rekey" >"$dir/rekey.log" 2>&1
	wait_for "$WAIT" new_spi "$A" ||
		{ log "rekey: no new SPI"; sed 's/^/# /' "$dir/rekey.log"; return 1; }
	traffic || return 1

	# Teardown: pluto's delete reaches the peer, no SA is left on
	# either side; then both daemons exit and take their policies.
	whack a "$A" --name t --delete >"$dir/delete.log" 2>&1
	wait_for "$WAIT" no_sa "$A" && wait_for "$WAIT" no_sa "$B" ||
		{ log "SAs left after delete"; ip -n "$B" xfrm state | sed 's/^/# /'; return 1; }
	for h in a b; do
		local ns=$A pid=$pluto_a

		[ $h = a ] || { ns=$B; pid=$pluto_b; }
		whack "$h" "$ns" --shutdown >/dev/null 2>&1
		wait_exit "$pid" >/dev/null || {
			log "$h: pluto does not exit; in the kernel at:"
			sed 's/^/# /' "/proc/$pid/stack" 2>/dev/null
			tail -5 "$dir/$h/pluto.log" | sed 's/^/# /'
			return 1
		}
	done
	for ns in "$A" "$B"; do
		[ -z "$(policies "$ns")" ] ||
			{ log "$ns: policies left"; policies "$ns" | sed 's/^/# /'; return 1; }
		wait_for "$WAIT" no_ulp "$ns" || { log "$ns: espintcp socket left"; return 1; }
	done
	dissect_ok
}

[ -x "$PLUTO" ] && command -v tshark >/dev/null && [ -r "$LUA" ] && [ -x "$BULK" ] ||
	{ echo "1..0 # SKIP libreswan, tshark, $LUA or espintcp_bulk missing"; exit 4; }

local_cases=(
	"lsw_case 4 transport yes|ipv4_host_to_host_tcp"
	"lsw_case 6 tunnel yes|ipv6_subnet_to_subnet_tcp"
	"lsw_case 4 tunnel fallback $B|ipv4_subnet_to_subnet_fallback_udp_blocked"
	"lsw_case 6 transport fallback $B|ipv6_host_to_host_fallback_udp_blocked"
)
cases=("${local_cases[@]/|/|libreswan_}")
if [ -x "$peer$PLUTO" ]; then
	mine=$(ipsec --version | sed -n 's/^Libreswan \([0-9.]*\).*/\1/p')
	theirs=$(chroot "$peer" ipsec --version | sed -n 's/^Libreswan \([0-9.]*\).*/\1/p')
	log "interop: libreswan ${mine:-?} here, ${theirs:-?} in $peer"
	# The peer's pluto reads and writes the scratch directory too.
	mkdir -p "$peer$dir" && mount --bind "$dir" "$peer$dir" ||
		{ echo "1..0 # SKIP cannot share $dir with $peer"; exit 4; }
	trap 'cleanup; umount "$peer$dir"; rm -rf "$dir"' EXIT
	for c in "${local_cases[@]}"; do
		cases+=("roots '' $peer ${c%|*}|libreswan_${mine}_to_${theirs}_${c#*|}"
			"roots $peer '' ${c%|*}|libreswan_${theirs}_to_${mine}_${c#*|}")
	done
fi
run_cases "${cases[@]}"
