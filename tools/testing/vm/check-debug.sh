#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check-debug: build (once, cached) Debian's 6.1 kernel with KASAN,
# kmemleak, lockdep, UBSAN, debug objects and DEBUG_NET
# (scripts/debug-kernel.sh), build our modules and the selftests against it,
# and run the whole suite in the VM on that kernel, as make check does. Any
# report of the kernel's checkers fails the run, naming the test that was
# running when it came (guest-check.sh marks each step in the kernel log).
# Ends with "N passed, N failed, N skipped" like make check.
#
# ESPINTCP_TEST_TIMEOUT   seconds per selftest program (default 14400)
# ESPINTCP_TIMEOUT_SCALE  factor on the harness's per-test timeouts (alarm(),
#                         through tools/testing/vm/timeout-scale.c; default 5)
# ESPINTCP_DEBUG_VM_TIMEOUT  seconds for the whole VM run (default 43200)
# ESPINTCP_TESTS, ESPINTCP_FUZZ_*  passed to the guest (ESPINTCP_TESTS="prog
#                         ..." runs only these; ESPINTCP_FUZZ_SECONDS=N a
#                         longer fuzzer run)
# ESPINTCP_TCG            as for make check (single or multi)
# ESPINTCP_DEBUG_KERNEL   a directory laid out as debug-kernel.sh's result, to
#                         use instead of building (another build of the kernel)

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh
trap 'summary 0 1 0' ERR

scripts/deps.sh flex bison libelf-dev
t0=$(date +%s)
dir=${ESPINTCP_DEBUG_KERNEL:-$(scripts/debug-kernel.sh -v)}
release=$(cat "$dir/release")
t1=$(date +%s)
echo "check-debug: kernel $release ($dir), ready in $((t1 - t0))s, tcg thread=${ESPINTCP_TCG:-multi}"

# Our modules and the test module, against the debug kernel's tree. (make
# check builds them again for the stock kernel.)
make -s modules KVER="$release" KDIR="$dir/obj" UBSAN_SANITIZE=y
make -s selftests KVER="$release" KDIR="$dir/obj" UBSAN_SANITIZE=y
shim=tools/testing/vm/timeout-scale.so
gcc -Wall -O2 -shared -fPIC -o "$shim" tools/testing/vm/timeout-scale.c -ldl
trap - ERR

# The guest's environment is empty: pass what the suite reads.
env=("ESPINTCP_TEST_TIMEOUT=${ESPINTCP_TEST_TIMEOUT:-14400}" ESPINTCP_MARK_LEVEL=3
     "ESPINTCP_TIMEOUT_SCALE=${ESPINTCP_TIMEOUT_SCALE:-5}" "LD_PRELOAD=$top/$shim")
while IFS='=' read -r name _; do
	case $name in
	ESPINTCP_TESTS|ESPINTCP_FUZZ_*) env+=("$name=${!name}") ;;
	esac
done < <(env)

out=$(mktemp -d /tmp/espintcp-check-debug.XXXXXX)
# A large log buffer, so that nothing is lost between the markers and the
# reports; lockups and RCU stalls need more patience under TCG with KASAN,
# and on a loaded host the IO-APIC timer check fails ("IO-APIC + timer
# doesn't work!") before the slow kernel gets its first tick.
append="log_buf_len=16M rcupdate.rcu_cpu_stall_timeout=300 watchdog_thresh=60 no_timer_check"
set +e
tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_DEBUG_VM_TIMEOUT:-43200}" \
	--kernel "$dir/vmlinuz" --modules "$dir/mod" --mem 3G --append "$append" \
	--out "$out" -- env "${env[@]}" tools/testing/vm/guest-check.sh
rc=$?
set -e
t2=$(date +%s)

# A warning (run-vm's 125) is judged below, with the checkers' reports.
guest_result check-debug "$out" "$([ "$rc" -eq 125 ] && echo 0 || echo "$rc")"

# The checkers' reports, each put down to the last "espintcp-test: start"
# marker before it ("boot" before the first one).
report='KASAN|UBSAN:|BUG:|WARNING:|suspicious RCU usage|possible circular locking|'
report+='sleeping function called from invalid context|refcount_t|ODEBUG:|'
report+='unreferenced object|general protection|Oops|Kernel panic|Call Trace'
log=$out/dmesg
[ -s "$log" ] || log=$out/console.log
reports=$(awk -v re="$report" '
	{ sub(/^\[[ 0-9.]*\] /, "") }
	/espintcp-test: start / { sub(/.*espintcp-test: start /, ""); test = $0; next }
	$0 ~ re && !/ODEBUG: selftest passed/ { print (test == "" ? "boot" : test) "\t" NR "\t" $0 }
' "$log")
if [ -s "$out/share/kmemleak" ]; then
	while IFS= read -r line; do
		reports+=${reports:+$'\n'}"kmemleak scan after the modules were removed	0	$line"
	done < <(grep -a 'unreferenced object\|comm "' "$out/share/kmemleak")
fi

if [ -z "$reports" ] && [ "$rc" -eq 125 ]; then
	reports="unknown	0	run-vm.sh saw a warning in the guest (see above)"
fi
if [ -n "$reports" ]; then
	failed=$((failed + 1))
	IFS=$'\t' read -r test line first <<<"$(head -1 <<<"$reports")"
	echo "check-debug: FAIL: the kernel reported a problem while \"$test\" was running:"
	echo "check-debug:   $first"
	if [ "$line" -gt 0 ]; then
		sed -n "${line},$((line + 40))p" "$log" | sed 's/^/    /'
	else
		head -40 "$out/share/kmemleak" | sed 's/^/    /'
	fi
	echo "check-debug: every report line, by test:"
	cut -f1,3 <<<"$reports" | sed 's/\t/: /; s/^/  /' | head -100
else
	echo "check-debug: no report from KASAN, kmemleak, lockdep, RCU, UBSAN, debug objects or refcount_t"
fi
echo "check-debug: kernel ready in $((t1 - t0))s, VM run $((t2 - t1))s; console and dmesg in $out"

summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
