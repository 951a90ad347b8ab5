#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the VM (see check.sh): load our modules, run every selftest,
# unload, check dmesg. Prints one TAP-like line per test case and
# "GUEST-RESULT <passed> <failed> <skipped>" at the end.
#
# Before each step, and each case of a kselftest harness program, it writes
# "espintcp-test: start STEP" to the kernel log, so that a report in dmesg
# can be put down to the test that was running (make check-debug). On a
# kernel with kmemleak, what boot left is cleared before our modules load,
# and a scan after they are removed must find nothing (also left in
# /run/espintcp-vm/kmemleak).
#
# ESPINTCP_MARK_LEVEL is the markers' log level (default 5: not on the
# console); ESPINTCP_TEST_TIMEOUT overrides the selftests' settings timeout (seconds
# per program); ESPINTCP_TESTS="prog ..." runs only these programs.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top" || exit 1
st=tools/testing/selftests/net/espintcp
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); echo "ok - $*"; }
notok() { fail=$((fail + 1)); echo "not ok - $*"; }
mark() {
	echo "<${ESPINTCP_MARK_LEVEL:-5}>espintcp-test: start $*" > /dev/kmsg 2>/dev/null || true
}

kmemleak=/sys/kernel/debug/kmemleak
if [ -w "$kmemleak" ]; then
	# Report what boot left, and forget it: only later leaks count.
	mark "kmemleak clear"
	echo scan > "$kmemleak"
	echo clear > "$kmemleak"
fi

mods=()
for m in espintcp esp4 esp6; do
	[ -f "$m.ko" ] && mods+=("$m")
done

# Stock ESP types must not be there before ours.
for m in esp4 esp6; do
	if grep -q "^$m " /proc/modules; then
		notok "stock $m is not loaded"
	else
		ok "stock $m is not loaded"
	fi
done

# The distribution's esp4/esp6 and ours exclude each other (same names):
# neither loads while the other is there, and nothing warns.
coexist() {
	local m=$1 stock

	stock=$(modinfo -n "$m") || return 1
	case $stock in /lib/modules/*/kernel/*) ;; *) return 1 ;; esac
	modprobe "$m" || return 1
	if insmod "./$m.ko" 2>/dev/null; then
		rmmod "$m"
		return 1
	fi
	rmmod "$m" || return 1
	insmod "./$m.ko" || return 1
	if insmod "$stock" 2>/dev/null; then
		rmmod "$m"
		return 1
	fi
	rmmod "$m"
}

mark "module loading"
# A kernel with its own espintcp (CONFIG_INET_ESPINTCP), played by a test
# module that registers the name first: ours refuses to load, says why, and
# the name is the stand-in's again once ours gave up.
standin() {
	local ko=$st/inject/espintcp_standin.ko err ulps

	insmod "$ko" || return 1
	if err=$(insmod ./espintcp.ko 2>&1); then
		rmmod espintcp
		rmmod espintcp_standin
		echo "# espintcp loaded next to another espintcp ULP"
		return 1
	fi
	echo "# insmod: $err"
	ulps=$(cat /proc/sys/net/ipv4/tcp_available_ulp)
	rmmod espintcp_standin || return 1
	echo "# ULPs with the stand-in: $ulps; after: $(cat /proc/sys/net/ipv4/tcp_available_ulp)"
	[ "$(grep -ow espintcp <<<"$ulps" | wc -l)" -eq 1 ] &&
		! grep -qw espintcp /proc/sys/net/ipv4/tcp_available_ulp &&
		grep -q 'File exists' <<<"$err" &&
		dmesg | grep -q 'espintcp: the kernel already has a TCP ULP "espintcp"'
}
if [[ " ${mods[*]} " == *" espintcp "* ]]; then
	if standin; then
		ok "espintcp refuses to load where the kernel has its own"
	else
		notok "espintcp refuses to load where the kernel has its own"
	fi
fi

for m in "${mods[@]}"; do
	case $m in
	esp4|esp6)
		if coexist "$m"; then
			ok "$m: stock and ours exclude each other"
		else
			notok "$m: stock and ours exclude each other"
		fi
		;;
	esac
	if insmod "./$m.ko"; then
		ok "module $m loads"
	else
		notok "module $m loads"
	fi
done

# References to our modules, but those of a module using another's symbols.
refs() {
	local m h n=0

	for m in "${mods[@]}"; do
		n=$((n + $(cat "/sys/module/$m/refcnt" 2>/dev/null || echo 0)))
		for h in /sys/module/"$m"/holders/*; do
			[ -e "$h" ] && n=$((n - 1))
		done
	done
	echo $n
}

# The first SA with an algorithm makes the crypto API build it (templates,
# modules, self-tests). On a loaded debug kernel under TCG that can outlast
# the 60 s the lookup waits for it, and "ip xfrm state add" then says
# "Requested AEAD algorithm not found": the first test to use it would fail
# for the machine's sake, not ours. Build the suite's algorithms once here,
# in a namespace of their own, retrying; a lookup that keeps failing is left
# to the tests to report.
warm_crypto() {
	local ns=espintcp-warmup spi=256 n=0 a i k32 k20 refs0
	local -a algs

	k20=0x000102030405060708090a0b0c0d0e0f10111213
	k32=0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
	algs=("aead rfc4106(gcm(aes)) $k20 128"
	      "aead rfc4309(ccm(aes)) ${k20%??} 128"
	      "aead rfc7539esp(chacha20,poly1305) ${k32}20212223 128"
	      "enc cbc(aes) ${k20%????????} auth-trunc hmac(sha1) $k20 96"
	      "enc cbc(aes) ${k20%????????} auth-trunc hmac(sha256) $k32 128"
	      "enc rfc3686(ctr(aes)) $k20 auth-trunc hmac(sha512) $k32${k32#0x} 256")
	refs0=$(refs)
	ip netns add "$ns" || return
	for a in "${algs[@]}"; do
		spi=$((spi + 1))
		for ((i = 0; i < 5; i++)); do
			# shellcheck disable=SC2086 # the words of one algorithm
			ip -n "$ns" xfrm state add src 192.0.2.1 dst 192.0.2.2 \
				proto esp spi "$spi" mode transport $a 2>/dev/null && break
		done
		[ "$i" -lt 5 ] && n=$((n + 1))
		[ "$i" -eq 0 ] || echo "# crypto warm-up: ${a%% 0x*}: $i failed attempts"
	done
	echo "# crypto warm-up: $n of ${#algs[@]} algorithms ready"
	ip netns del "$ns"
	# The namespace's SAs go asynchronously, each holding esp4: wait for
	# them (bounded), so that the first program finds our modules as the
	# loading left them.
	for ((i = 0; i < 300 && $(refs) > refs0; i++)); do
		sleep 0.2
	done
}
mark "crypto warm-up"
t0=$SECONDS
warm_crypto
echo "# crypto warm-up: $((SECONDS - t0)) s"

timeout=$(sed -n 's/^timeout=//p' "$st/settings" 2>/dev/null)
timeout=${ESPINTCP_TEST_TIMEOUT:-${timeout:-300}}
# The programs' list, from the selftest Makefile (lib.mk is not needed).
mkdir -p /tmp/ksft && : > /tmp/ksft/lib.mk
progs=$(make -s --no-print-directory -C "$st" KSFT_DIR=/tmp/ksft \
	-f Makefile -f - print-tests <<'MK'
print-tests:
	@echo $(TEST_GEN_PROGS) $(TEST_PROGS)
MK
)
# ESPINTCP_TESTS="prog ..." runs only these (while developing).
progs=${ESPINTCP_TESTS:-$progs}
[ -n "$progs" ] || notok "selftests found in $st"

# Test-only modules built on ours (the selftests' injector): a program
# loads them when it needs them; none outlives it, so that the next one
# (the fuzzer's rmmod rounds) finds only ours holding espintcp.
unload_test_modules() {
	local h

	for h in /sys/module/espintcp/holders/*; do
		[ -e "$h" ] || continue
		h=${h##*/}
		case " ${mods[*]} " in *" $h "*) continue ;; esac
		rmmod "$h" || notok "test module $h unloads"
	done
}

# A program cleans up after itself, failed tests included: a namespace or
# an SA it leaves behind would hold esp4/esp6 and skew the next program.
# Reported as a failure, then removed.
leftovers() {
	local ns states n

	ns=$(ip netns list 2>/dev/null | cut -d' ' -f1 | tr '\n' ' ')
	states=$(ip xfrm state list 2>/dev/null | grep -c '^src')
	if [ -n "$ns" ]; then
		notok "$1 left network namespaces: $ns"
		for n in $ns; do
			ip netns del "$n"
		done
	fi
	if [ "$states" -ne 0 ]; then
		notok "$1 left $states SAs in the initial namespace"
		ip xfrm state flush
		ip xfrm policy flush
	fi
}

for p in $progs; do
	log=/tmp/selftest-$p.log
	mark "$p"
	t0=$SECONDS
	# Each kselftest harness case is marked too ("#  RUN   f.v.case ...").
	(cd "$st" && timeout -k 5 "$timeout" "./$p") 2>&1 |
		while IFS= read -r line || [ -n "$line" ]; do
			printf '%s\n' "$line"
			case $line in
			"#  RUN "*)
				line=${line#\#  RUN}
				line=${line#"${line%%[! ]*}"}
				mark "$p: ${line% ...}" ;;
			esac
		done >"$log"
	rc=${PIPESTATUS[0]}
	cat "$log"
	echo "# $p: $((SECONDS - t0)) s"
	np=$(grep -cE '^ok [0-9]+' "$log" | tr -d ' ')
	ns=$(grep -cE '^ok [0-9]+ .*# SKIP' "$log" | tr -d ' ')
	nf=$(grep -cE '^not ok [0-9]+' "$log" | tr -d ' ')
	# The TAP plan, "1..N": every planned test must report.
	plan=$(grep -m1 -oE '^1\.\.[0-9]+' "$log" | cut -d. -f3)
	pass=$((pass + np - ns))
	skip=$((skip + ns))
	fail=$((fail + nf))
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		notok "$p timed out after ${timeout}s"
	elif { [ "$rc" -eq 0 ] || [ "$rc" -eq 4 ]; } &&
	     [ "$np" -eq 0 ] && [ "$nf" -eq 0 ] &&
	     grep -qE '^1\.\.0 # SKIP' "$log"; then
		# A whole program skipped (kselftest's "1..0 # SKIP reason",
		# exit 4): one skip, its reason said here and in the log.
		skip=$((skip + 1))
		echo "# $p skipped: $(grep -m1 -E '^1\.\.0 # SKIP' "$log" | cut -d' ' -f4-)"
	elif [ "$rc" -ne 0 ] && [ "$nf" -eq 0 ]; then
		notok "$p exited with status $rc"
	elif [ "$np" -eq 0 ] && [ "$nf" -eq 0 ]; then
		notok "$p reported no test"
	elif [ -z "$plan" ]; then
		notok "$p printed no TAP plan"
	elif [ $((np + nf)) -ne "$plan" ]; then
		notok "$p reported $((np + nf)) of its $plan planned tests"
	fi
	leftovers "$p"
	unload_test_modules
done

mark "module unloading"
unload_test_modules

# Sockets still closing (FIN_WAIT, LAST_ACK) hold the ULP: poll, bounded.
for ((i = 0; i < 600 && $(refs) > 0; i++)); do
	sleep 0.2
done
for ((i = ${#mods[@]} - 1; i >= 0; i--)); do
	m=${mods[$i]}
	if rmmod "$m"; then
		ok "module $m unloads"
	else
		notok "module $m unloads (refcnt $(cat "/sys/module/$m/refcnt"))"
	fi
done

if [ -w "$kmemleak" ]; then
	# Objects count as leaked once unreferenced for 5s; the second scan
	# drops transient ones.
	mark "kmemleak scan"
	sleep 6
	echo scan > "$kmemleak"
	echo scan > "$kmemleak"
	leaks=$(cat "$kmemleak")
	[ -d /run/espintcp-vm ] && echo "$leaks" > /run/espintcp-vm/kmemleak
	if [ -n "$leaks" ]; then
		notok "kmemleak: nothing leaked"
		echo "$leaks" | head -100
	else
		ok "kmemleak: nothing leaked"
	fi
fi

splat='Oops|BUG:|WARNING:|KASAN|UBSAN:|refcount_t|general protection|Call Trace'
if dmesg | grep -qE "$splat"; then
	notok "dmesg clean"
	dmesg | grep -E -A5 "$splat" | head -60
else
	ok "dmesg clean"
fi

echo "GUEST-RESULT $pass $fail $skip"
[ "$fail" -eq 0 ]
