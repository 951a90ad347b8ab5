#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the VM (see demo.sh): two hosts in network namespaces, UDP
# blocked between them, the selftests' IKE driver brings up ESP over TCP with
# our modules on Debian's stock kernel. Prints what happens; exits 0 when the
# tunnel came up, carried traffic and was torn down cleanly.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
st=$top/tools/testing/selftests/net/espintcp
A=demo-initiator
B=demo-responder
run=$(mktemp -d /tmp/espintcp-demo.XXXXXX)

step() { printf '\n=== %s\n' "$*"; }
show() {
	printf '$ %s\n' "$*"
	"$@" 2>&1 | grep -v 'Failed to find cgroup2 mount' | sed 's/^/  /'
}
die() { printf '\nDEMO FAILED: %s\n' "$*"; exit 1; }

# A bound, not a timing: generous for TCG next to other VMs.
wait_status() {	# FILE KEY VALUE, for up to five minutes
	local i

	for ((i = 0; i < 3000; i++)); do
		grep -qx "$2=$3" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

step "Debian's stock kernel $(uname -r): no espintcp of its own"
grep -q '^CONFIG_INET_ESPINTCP=' "/boot/config-$(uname -r)" 2>/dev/null &&
	echo "  (this kernel has CONFIG_INET_ESPINTCP)" ||
	echo "  CONFIG_INET_ESPINTCP is not set: TCP encapsulation needs our modules"

cd "$top" || exit 1
[ -x "$st/espintcp_ike" ] || die "no IKE driver in $st: make selftests first"
if [ -n "${ESPINTCP_AUTOLOAD:-}" ]; then
	# Installed (DKMS): nothing is loaded by hand. The ULP comes with the
	# first setsockopt(TCP_ULP), esp4 with the first ESP SA.
	step "Installed modules, loaded on demand"
	for m in espintcp esp4 esp6; do
		f=$(modinfo -n $m) || die "$m is not installed"
		echo "  modprobe $m -> $f"
		case $f in */updates/*) ;; *) die "$m: depmod does not choose ours" ;; esac
	done
else
	step "Loading our modules (espintcp ULP, ESP types esp4/esp6)"
	for m in espintcp esp4 esp6; do
		insmod "./$m.ko" || die "cannot load $m.ko"
	done
	grep -E '^(espintcp|esp4|esp6) ' /proc/modules | cut -d' ' -f1-4 | sed 's/^/  /'
fi

step "Two hosts: $A (10.74.0.1) and $B (10.74.0.2); UDP 4500 blocked"
ip netns add $A && ip netns add $B || die "netns"
ip -n $A link add veth0 type veth peer name veth0 netns $B
for ns in $A $B; do
	ip -n $ns link set lo up
	ip -n $ns link set veth0 up
done
ip -n $A addr add 10.74.0.1/24 dev veth0
ip -n $B addr add 10.74.0.2/24 dev veth0
ip netns exec $A ping -q -c 1 -W 10 10.74.0.2 >/dev/null || die "no link"
ip netns exec $B nft -f - <<'NFT' || die "cannot block UDP"
table inet demo {
	chain inbound {
		type filter hook input priority 0; udp dport 4500 drop;
	}
}
NFT
show ip netns exec $B nft list ruleset

step "IKE: UDP first, TCP when UDP stays silent (RFC 9329)"
ip netns exec $B "$st/espintcp_ike" --responder --local 10.74.0.2 \
	--peer 10.74.0.1 --psk demo-secret --status "$run/r" 2>"$run/r.log" &
rpid=$!
wait_status "$run/r" state listening ||
	die "responder did not start: $(tail -5 "$run/r.log")"
ip netns exec $A "$st/espintcp_ike" --initiator --local 10.74.0.1 \
	--peer 10.74.0.2 --psk demo-secret --transport fallback \
	--udp-timeout 300 --udp-tries 2 --timeout 60000 \
	--status "$run/i" 2>"$run/i.log" &
ipid=$!
wait_status "$run/i" state established ||
	{ tail -n +1 "$run"/[ir].log; die "no tunnel"; }
wait_status "$run/r" state established || die "responder not established"
echo "  initiator:"; sed 's/^/    /' "$run/i.log"
echo "  responder:"; sed 's/^/    /' "$run/r.log"
grep -qx transport=tcp "$run/i" || die "not over TCP"

if [ -n "${ESPINTCP_AUTOLOAD:-}" ]; then
	for m in espintcp esp4; do
		[ "$(cat /sys/module/$m/srcversion 2>/dev/null)" = \
		  "$(modinfo -F srcversion $m)" ] || die "$m: not ours, or not loaded"
		echo "  $m loaded on demand: $(modinfo -n $m)"
	done
fi

step "Traffic through the tunnel"
show ip netns exec $A ping -c 3 -i 0.3 -W 10 10.74.0.2 || die "ping failed"

step "The TCP connection carrying IKE and ESP, with the espintcp ULP"
show ip netns exec $A ss -tnie state established
echo "  counters of the ULP (Debian's ss prints only its name):"
ip netns exec $A "$st/espintcp_diag" 4500 | sed 's/^/    /'

step "The SAs: encap type espintcp with the connection's ports"
show ip -n $A -s xfrm state
show ip -n $A xfrm policy

step "Teardown: the initiator deletes the IKE SA"
kill -TERM $ipid
wait $ipid || die "initiator exit status $?"
wait $rpid || die "responder exit status $?"
sed -n '$p' "$run/i.log" | sed 's/^/  /'
for ns in $A $B; do
	[ -z "$(ip -n $ns xfrm state)$(ip -n $ns xfrm policy)" ] ||
		die "$ns: SAs or policies left"
done
echo "  no SA, no policy left"
ip netns del $A
ip netns del $B

step "Unloading the modules"
for ((i = 0; i < 300; i++)); do
	for m in esp6 esp4 espintcp; do
		! grep -q "^$m " /proc/modules || rmmod $m 2>/dev/null
	done
	grep -qE '^(espintcp|esp4|esp6) ' /proc/modules || break
	sleep 0.1
done
grep -qE '^(espintcp|esp4|esp6) ' /proc/modules && die "modules still loaded"
echo "  done"
if dmesg | grep -qE 'Oops|BUG:|WARNING:|KASAN|refcount_t'; then
	die "kernel warnings in dmesg"
fi
printf '\nDEMO OK: IKE and ESP over TCP on a stock Debian kernel\n'
