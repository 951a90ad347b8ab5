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

for m in "${mods[@]}"; do
	if insmod "./$m.ko"; then
		ok "module $m loads"
	else
		notok "module $m loads"
	fi
done

timeout=$(sed -n 's/^timeout=//p' "$st/settings" 2>/dev/null)
timeout=${timeout:-300}
# The programs' list, from the selftest Makefile (lib.mk is not needed).
mkdir -p /tmp/ksft && : > /tmp/ksft/lib.mk
progs=$(make -s --no-print-directory -C "$st" KSFT_DIR=/tmp/ksft \
	-f Makefile -f - print-tests <<'MK'
print-tests:
	@echo $(TEST_GEN_PROGS) $(TEST_PROGS)
MK
)
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
refs() {
	local m n=0

	for m in "${mods[@]}"; do
		n=$((n + $(cat "/sys/module/$m/refcnt" 2>/dev/null || echo 0)))
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
