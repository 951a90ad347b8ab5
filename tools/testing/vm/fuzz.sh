#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make fuzz: install what is missing, build the modules and selftests, and run
# the fuzzer (tools/testing/selftests/net/espintcp/espintcp_fuzz) for long in
# a VM booting Debian's stock kernel, with the same harness as `make check`
# (our modules loaded, unloaded at the end, dmesg checked). Ends with the
# line "N passed, N failed". Inputs of failures are copied to the directory
# printed at the end.
#
# The bounds (environment, passed into the VM):
#   ESPINTCP_FUZZ_FRAMES   stream frames per seed      (default 1000000)
#   ESPINTCP_FUZZ_CALLS    call sequences per seed     (default 100000)
#   ESPINTCP_FUZZ_CONNS    lifetime connections/seed   (default 2000)
#   ESPINTCP_FUZZ_SECONDS  time bound per seed         (default 14400)
#   ESPINTCP_FUZZ_SEEDS    seeds ("fresh": a new one)  (default fresh)
# The VM's timeout follows from them (ESPINTCP_VM_TIMEOUT overrides).
#
# fuzz.sh --debug (make fuzz-debug) runs it on the debug kernel instead,
# through check-debug.sh.

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh
trap 'summary 0 1 0' ERR

frames=${ESPINTCP_FUZZ_FRAMES:-1000000}
calls=${ESPINTCP_FUZZ_CALLS:-100000}
conns=${ESPINTCP_FUZZ_CONNS:-2000}
secs=${ESPINTCP_FUZZ_SECONDS:-14400}
seeds=${ESPINTCP_FUZZ_SEEDS:-fresh}
nseeds=$(wc -w <<<"$seeds")

# make fuzz-debug: the same run on the debug kernel, with its checkers
# (check-debug.sh, which shares the modes out over its VMs and saves the
# inputs of failures in each VM's output directory). A VM may run all
# three modes, each with the whole time bound.
if [ "${1:-}" = --debug ]; then
	trap - ERR
	export ESPINTCP_TESTS=espintcp_fuzz.sh ESPINTCP_FUZZ_FRAMES="$frames" \
		ESPINTCP_FUZZ_CALLS="$calls" ESPINTCP_FUZZ_CONNS="$conns" \
		ESPINTCP_FUZZ_SECONDS="$secs" ESPINTCP_FUZZ_SEEDS="$seeds" \
		ESPINTCP_TEST_TIMEOUT=$((nseeds * (3 * secs + 2000))) \
		ESPINTCP_DEBUG_VM_TIMEOUT="${ESPINTCP_DEBUG_VM_TIMEOUT:-$((nseeds * (3 * secs + 2000) + 600))}"
	echo "fuzz: on the debug kernel; per seed: $frames frames, $calls call sequences, $conns connections, at most ${secs}s per mode; seeds: $seeds"
	exec tools/testing/vm/check-debug.sh
fi

host_kernel
echo "fuzz: $kver_why; per seed: $frames frames, $calls call sequences, $conns connections, at most ${secs}s; seeds: $seeds"
make -s modules
make -s selftests
trap - ERR

# The per-program timeout of the guest harness, and the VM's, from the bound.
prog_timeout=$((nseeds * (secs + 2000)))
vm_timeout=${ESPINTCP_VM_TIMEOUT:-$((prog_timeout + 600))}
out=$(mktemp -d /tmp/espintcp-fuzz.XXXXXX)
set +e
tools/testing/vm/run-vm.sh --timeout "$vm_timeout" --out "$out" -- \
	env ESPINTCP_TESTS=espintcp_fuzz.sh ESPINTCP_TEST_TIMEOUT="$prog_timeout" \
	ESPINTCP_FUZZ_FRAMES="$frames" ESPINTCP_FUZZ_CALLS="$calls" \
	ESPINTCP_FUZZ_CONNS="$conns" ESPINTCP_FUZZ_SECONDS="$secs" \
	ESPINTCP_FUZZ_SEEDS="$seeds" ESPINTCP_FUZZ_OUT=/run/espintcp-vm/fuzz \
	tools/testing/vm/guest-check.sh
rc=$?
set -e

guest_result fuzz "$out" "$rc"

grep -a '^# \(stream\|calls\|lifetime\|seed\|KNOWN\)' "$out/console.log" | sed 's/\r$//' || true
if [ -d "$out/share/fuzz" ] && [ -n "$(ls -A "$out/share/fuzz")" ]; then
	echo "fuzz: inputs of failures in $out/share/fuzz:"
	ls "$out/share/fuzz"
fi
summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
