# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Shared by the host-side scripts that boot our modules in a VM (check.sh,
# check-debug.sh, fuzz.sh, scale.sh, demo.sh, bench.sh): sourced, never run.

# host_kernel: install what is missing and choose the kernel to build for
# and boot (scripts/kver.sh), exported as KVER so that every later step
# uses it; kver_why says why it was chosen.
host_kernel() {
	scripts/deps.sh
	kver_why=$(scripts/kver.sh -v 2>&1 >/dev/null)
	KVER=$(scripts/kver.sh)
	export KVER
}

# The last line of every run.
summary() {
	echo "${1:-0} passed, ${2:-1} failed, ${3:-0} skipped"
}

# guest_result WHO OUT RC: guest-check.sh's counts, from its GUEST-RESULT line
# in OUT/console.log, into passed, failed and skipped. run-vm.sh's exit
# status RC adds a failure, said in WHO's name, when the VM timed out (124),
# the guest kernel crashed or warned (125), or the guest left no result.
guest_result() {
	local who=$1 out=$2 rc=$3 result

	result=$(grep -ao 'GUEST-RESULT [0-9]* [0-9]* [0-9]*' "$out/console.log" | tail -1 || true)
	read -r _ passed failed skipped <<<"${result:-GUEST-RESULT 0 0 0}"
	case $rc in
	0|1) ;;
	124) echo "$who: the VM timed out"; failed=$((failed + 1)) ;;
	125) echo "$who: the guest kernel crashed or warned (see $out/console.log)"
	     failed=$((failed + 1)) ;;
	*) [ -n "$result" ] ||
		{ echo "$who: no result from the guest (exit $rc)"; failed=$((failed + 1)); } ;;
	esac
	[ -n "$result" ] || [ "$failed" -gt 0 ] || failed=1
}
