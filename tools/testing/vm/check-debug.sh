#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check-debug: build (once, cached) Debian's 6.1 kernel, or its 6.12
# with ESPINTCP_DEBUG_SERIES=6.12, with KASAN, kmemleak, lockdep, UBSAN,
# debug objects and DEBUG_NET (scripts/debug-kernel.sh), build our modules
# and the selftests against it,
# and run the whole suite in the VM on that kernel, as make check does. Any
# report of the kernel's checkers fails the run, naming the test that was
# running when it came (guest-check.sh marks each step in the kernel log).
# Ends with "N passed, N failed, N skipped" like make check.
#
# ESPINTCP_TEST_TIMEOUT   seconds per selftest program (default 14400)
# ESPINTCP_TIMEOUT_SCALE  factor on the harness's per-test timeouts (alarm(),
#                         through tools/testing/vm/timeout-scale.c; default 5)
# ESPINTCP_DEBUG_VM_TIMEOUT  seconds for the whole VM run (default 43200)
# ESPINTCP_DEBUG_VMS     VMs run side by side, the programs shared out over
#                         them (default: the host's CPUs, at most 4); each
#                         loads, unloads and scans for leaks on its own
# ESPINTCP_TESTS, ESPINTCP_CASES, ESPINTCP_FUZZ_*  passed to the guest
#                         (ESPINTCP_TESTS="prog ..." runs only these;
#                         ESPINTCP_CASES=REGEX only their matching cases;
#                         ESPINTCP_FUZZ_SECONDS=N a longer fuzzer run)
# ESPINTCP_TCG            as for make check (single or multi)
# ESPINTCP_DEBUG_APPEND   added to the guest kernel's command line (e.g.
#                         loglevel=7: the stacks of lockups and hung tasks,
#                         printed below the console's level, on the console)
# ESPINTCP_DEBUG_KERNEL   a directory laid out as debug-kernel.sh's result, to
#                         use instead of building (another build of the kernel)
# ESPINTCP_DEBUG_SERIES   6.1 (default) or 6.12: which of Debian 12's kernels
#                         (linux-source-6.1 or linux-source-6.12, installed if
#                         missing; each has its own cache)

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh
trap 'summary 0 1 0' ERR

scripts/deps.sh flex bison libelf-dev
# A 6.12 guest under multi-threaded TCG once died patching a static key
# (run-vm.sh): single-threaded there unless ESPINTCP_TCG says otherwise, as
# make check-kernels does.
if [ "${ESPINTCP_DEBUG_SERIES:-6.1}" = 6.12 ]; then
	export ESPINTCP_TCG=${ESPINTCP_TCG:-single}
fi
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
	ESPINTCP_FUZZ_*|ESPINTCP_CASES) env+=("$name=${!name}") ;;
	esac
done < <(env)

# A large log buffer, so that nothing is lost between the markers and the
# reports; lockups and RCU stalls need more patience under TCG with KASAN,
# and on a loaded host the IO-APIC timer check fails ("IO-APIC + timer
# doesn't work!") before the slow kernel gets its first tick.
append="log_buf_len=16M rcupdate.rcu_cpu_stall_timeout=300 watchdog_thresh=60 no_timer_check"
append+="${ESPINTCP_DEBUG_APPEND:+ $ESPINTCP_DEBUG_APPEND}"

# No 5-level paging: while identify_cpu() re-reads the boot CPU's features
# with interrupts on, X86_FEATURE_LA57 reads as clear, and KASAN, which sizes
# its shadow by pgtable_l5_enabled(), takes an interrupt handler's access to
# the 5-level direct map for a wild one. A 6.12 guest reported that once at
# 4 s into boot ("BUG: KASAN: wild-memory-access in do_raw_spin_lock" from
# handle_edge_irq, RIP in cpu_detect), long before our modules. Without LA57
# in the guest's CPUID the kernel pages with 4 levels throughout.
cpu=max,la57=off

# The programs, as guest-check.sh lists them, shared out over the VMs: the
# longest first, each to the VM with the least work so far, by the minutes
# each took on the debug kernel in the whole-suite run of 2026-12-06 (two VMs
# side by side, 6.1; guest-check.sh prints the seconds). A program not in the
# table counts 10.
st=tools/testing/selftests/net/espintcp
ksft=$(mktemp -d)
: > "$ksft/lib.mk"
progs=${ESPINTCP_TESTS:-$(make -s --no-print-directory -C "$st" KSFT_DIR="$ksft" \
	-f Makefile -f - print-tests <<'MK'
print-tests:
	@echo $(TEST_GEN_PROGS) $(TEST_PROGS)
MK
)}
rm -rf "$ksft"
# With more than one VM the fuzzer's modes are units of their own
# (espintcp_fuzz.sh:MODE), unless ESPINTCP_FUZZ_MODES names them, so that a
# long run (make fuzz-debug) is shared out too. Each mode alone then gets
# ESPINTCP_FUZZ_SECONDS per seed.
nvms=${ESPINTCP_DEBUG_VMS:-$(nproc)}
[ "$nvms" -gt 4 ] && nvms=4
if [ "$nvms" -gt 1 ] && [ -z "${ESPINTCP_FUZZ_MODES:-}" ]; then
	units=""
	for p in $progs; do
		if [ "$p" = espintcp_fuzz.sh ]; then
			units+=" $p:stream $p:calls $p:lifetime"
		else
			units+=" $p"
		fi
	done
else
	units=$progs
fi
minutes() {
	case $1 in
	espintcp_xfrm) echo 98 ;;
	espintcp_ulp) echo 39 ;;
	espintcp_libreswan.sh) echo 34 ;;
	espintcp_ike.sh) echo 17 ;;
	espintcp_scale.sh) echo 9 ;;
	espintcp_esp_interop.py) echo 7 ;;
	espintcp_sa_attrs.py) echo 1 ;;
	# The fuzzer's modes end at their count or ESPINTCP_FUZZ_SECONDS per
	# seed, whichever comes first (the defaults of espintcp_fuzz.sh), at
	# rates measured here with two VMs side by side (stream: 165 frames a
	# second next to more VMs, 307 alone; calls 27, lifetime 3 a second).
	espintcp_fuzz.sh:stream) fuzz_minutes "${ESPINTCP_FUZZ_FRAMES:-1000000}" 250 ;;
	espintcp_fuzz.sh:calls) fuzz_minutes "${ESPINTCP_FUZZ_CALLS:-100000}" 27 ;;
	espintcp_fuzz.sh:lifetime) fuzz_minutes "${ESPINTCP_FUZZ_CONNS:-200}" 3 ;;
	espintcp_fuzz.sh)
		echo $(($(minutes espintcp_fuzz.sh:stream) + $(minutes espintcp_fuzz.sh:calls) +
			$(minutes espintcp_fuzz.sh:lifetime))) ;;
	*) echo 10 ;;
	esac
}
# fuzz_minutes COUNT PER_SECOND: one mode's minutes, with its setup.
fuzz_minutes() {
	local secs=${ESPINTCP_FUZZ_SECONDS:-25} t=$(($1 / $2))

	[ "$t" -le "$secs" ] || t=$secs
	echo $((t * $(wc -w <<<"${ESPINTCP_FUZZ_SEEDS:-1 fresh}") / 60 + 3))
}
[ "$nvms" -gt "$(wc -w <<<"$units")" ] && nvms=$(wc -w <<<"$units")
[ "$nvms" -ge 1 ] || nvms=1
declare -a group load modes
for ((v = 0; v < nvms; v++)); do
	group[v]="" load[v]=0 modes[v]=""
done
while read -r _ u; do
	best=0
	for ((v = 1; v < nvms; v++)); do
		[ "${load[v]}" -lt "${load[best]}" ] && best=$v
	done
	load[best]=$((load[best] + $(minutes "$u")))
	p=${u%%:*}
	if [ "$p" != "$u" ]; then
		modes[best]+="${modes[best]:+ }${u#*:}"
		[[ " ${group[best]} " == *" $p "* ]] && continue
	fi
	group[best]+="${group[best]:+ }$p"
done < <(for u in $units; do echo "$(minutes "$u") $u"; done | sort -rn -s -k1,1)
# Each VM runs its programs in the suite's order.
for ((v = 0; v < nvms; v++)); do
	ordered=""
	for p in $progs; do
		[[ " ${group[v]} " == *" $p "* ]] && ordered+="${ordered:+ }$p"
	done
	group[v]=$ordered
done

# One VM per group, all at once; each loads our modules, runs its programs,
# unloads and scans for leaks on its own. Their consoles go to their output
# directories and are shown in turn once all have ended.
run_vm() {
	local v=$1 out=$2

	tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_DEBUG_VM_TIMEOUT:-43200}" \
		--kernel "$dir/vmlinuz" --modules "$dir/mod" --mem 3G --cpu "$cpu" \
		--append "$append" --out "$out" -- \
		env "${env[@]}" ESPINTCP_TESTS="${group[v]}" \
		${modes[v]:+ESPINTCP_FUZZ_MODES="${modes[v]}"} \
		tools/testing/vm/guest-check.sh
}
declare -a outs pids
for ((v = 0; v < nvms; v++)); do
	outs[v]=$(mktemp -d /tmp/espintcp-check-debug.XXXXXX)
	echo "check-debug: VM $((v + 1)) of $nvms: ${group[v]}${modes[v]:+ (fuzzer: ${modes[v]})} (about ${load[v]} min; console in ${outs[v]}/console.log)"
	if [ "$nvms" -eq 1 ]; then
		run_vm "$v" "${outs[v]}" &
	else
		run_vm "$v" "${outs[v]}" >"${outs[v]}/run.log" 2>&1 &
	fi
	pids[v]=$!
done
declare -a rcs
for ((v = 0; v < nvms; v++)); do
	set +e
	wait "${pids[v]}"
	rcs[v]=$?
	set -e
done
t2=$(date +%s)

# The checkers' reports, each put down to the last "espintcp-test: start"
# marker before it ("boot" before the first one).
report='KASAN|UBSAN:|BUG:|WARNING:|suspicious RCU usage|possible circular locking|'
report+='sleeping function called from invalid context|refcount_t|ODEBUG:|'
report+='unreferenced object|general protection|Oops|Kernel panic|Call Trace|'
report+='blocked for more than|Out of memory'
reports_of() {
	local out=$1 log=$1/dmesg line r

	[ -s "$log" ] || log=$out/console.log
	# (Not "log" for the file's name: awk has a function of that name.)
	r=$(awk -v re="$report" -v file="$log" '
		{ sub(/^\[[ 0-9.]*\] /, "") }
		/espintcp-test: start / { sub(/.*espintcp-test: start /, ""); test = $0; next }
		$0 ~ re && !/ODEBUG: selftest passed/ { print file "\t" (test == "" ? "boot" : test) "\t" NR "\t" $0 }
	' "$log") || return 1
	if [ -s "$out/share/kmemleak" ]; then
		while IFS= read -r line; do
			r+=${r:+$'\n'}"$out/share/kmemleak	kmemleak scan after the modules were removed	0	$line"
		done < <(grep -a 'unreferenced object\|comm "' "$out/share/kmemleak")
	fi
	if [ -z "$r" ] && [ "$2" -eq 125 ]; then
		r="$out/console.log	unknown	0	run-vm.sh saw a warning in the guest (see above)"
	fi
	[ -z "$r" ] || echo "$r"
}

total_p=0 total_f=0 total_s=0 reports=""
for ((v = 0; v < nvms; v++)); do
	out=${outs[v]} rc=${rcs[v]}
	if [ "$nvms" -gt 1 ]; then
		echo "check-debug: VM $((v + 1)) of $nvms: ${group[v]}"
		cat "$out/run.log"
	fi
	# A warning (run-vm's 125) is judged below, with the checkers' reports.
	guest_result "check-debug VM $((v + 1))" "$out" "$([ "$rc" -eq 125 ] && echo 0 || echo "$rc")"
	total_p=$((total_p + passed)) total_f=$((total_f + failed)) total_s=$((total_s + skipped))
	if [ -d "$out/share/fuzz" ] && [ -n "$(ls -A "$out/share/fuzz")" ]; then
		echo "check-debug: inputs of the fuzzer's failures in $out/share/fuzz:"
		ls "$out/share/fuzz"
	fi
	# A scan that fails is a failed run, never a clean one.
	r=$(reports_of "$out" "$rc") ||
		r="$out/console.log	scan	0	check-debug could not scan $out for reports"
	[ -z "$r" ] || reports+=${reports:+$'\n'}$r
done
passed=$total_p failed=$total_f skipped=$total_s

if [ -n "$reports" ]; then
	failed=$((failed + 1))
	IFS=$'\t' read -r log test line first <<<"$(head -1 <<<"$reports")"
	echo "check-debug: FAIL: the kernel reported a problem while \"$test\" was running:"
	echo "check-debug:   $first"
	if [ "$line" -gt 0 ]; then
		sed -n "${line},$((line + 40))p" "$log" | sed 's/^/    /'
	else
		head -40 "$log" | sed 's/^/    /'
	fi
	echo "check-debug: every report line, by test:"
	cut -f2,4 <<<"$reports" | sed 's/\t/: /; s/^/  /' | head -100
else
	echo "check-debug: no report from KASAN, kmemleak, lockdep, RCU, UBSAN, debug objects or refcount_t"
fi
echo "check-debug: kernel ready in $((t1 - t0))s, $nvms VMs ran $((t2 - t1))s; consoles and dmesg in ${outs[*]}"

summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
