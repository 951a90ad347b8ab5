#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the VM (see check.sh): load our modules, run every selftest,
# unload, check dmesg. Prints one TAP-like line per test case and
# "GUEST-RESULT <passed> <failed> <skipped>" at the end.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
st=tools/testing/selftests/net/espintcp
pass=0 fail=0 skip=0

ok() { pass=$((pass + 1)); echo "ok - $*"; }
notok() { fail=$((fail + 1)); echo "not ok - $*"; }

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

for p in $progs; do
	log=/tmp/selftest-$p.log
	(cd "$st" && timeout -k 5 "$timeout" "./$p") >"$log" 2>&1
	rc=$?
	cat "$log"
	np=$(grep -cE '^ok [0-9]+' "$log" | tr -d ' ')
	ns=$(grep -cE '^ok [0-9]+ .*# SKIP' "$log" | tr -d ' ')
	nf=$(grep -cE '^not ok [0-9]+' "$log" | tr -d ' ')
	pass=$((pass + np - ns))
	skip=$((skip + ns))
	fail=$((fail + nf))
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		notok "$p timed out after ${timeout}s"
	elif [ "$rc" -ne 0 ] && [ "$nf" -eq 0 ]; then
		notok "$p exited with status $rc"
	elif [ "$np" -eq 0 ] && [ "$nf" -eq 0 ]; then
		notok "$p reported no test"
	fi
done

# Test-only modules built on ours (the selftests' injector) go first.
for h in /sys/module/espintcp/holders/*; do
	[ -e "$h" ] || continue
	h=${h##*/}
	case " ${mods[*]} " in *" $h "*) continue ;; esac
	rmmod "$h" || notok "test module $h unloads"
done

# Sockets still closing (FIN_WAIT, LAST_ACK) hold the ULP: poll, bounded.
# A module using another's symbols holds a reference too: not counted.
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

splat='Oops|BUG:|WARNING:|KASAN|refcount_t|general protection|Call Trace'
if dmesg | grep -qE "$splat"; then
	notok "dmesg clean"
	dmesg | grep -E -A5 "$splat" | head -60
else
	ok "dmesg clean"
fi

echo "GUEST-RESULT $pass $fail $skip"
[ "$fail" -eq 0 ]
