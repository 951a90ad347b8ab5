#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The espintcp fuzzer (espintcp_fuzz) as a selftest. By default a short run
# for `make check`: a fixed seed and a fresh one, every mode, about a minute
# in all under TCG. Longer runs (`make fuzz`, the debug-kernel runner) set:
#
#   ESPINTCP_FUZZ_SECONDS  time bound per seed, all modes (default 25)
#   ESPINTCP_FUZZ_FRAMES   stream frames per seed (default 1000000: time-bound)
#   ESPINTCP_FUZZ_CALLS    call sequences per seed (default 100000: time-bound)
#   ESPINTCP_FUZZ_CONNS    lifetime connections per seed (default 200)
#   ESPINTCP_FUZZ_SEEDS    seeds to run, "fresh" for a new one (default "1 fresh")
#   ESPINTCP_FUZZ_MODES    modes (default all)
#   ESPINTCP_FUZZ_OUT      where failing inputs are saved (default: the VM's
#                          result share when in the test VM, else /tmp)

set -u
cd "$(dirname "$0")" || exit 1
top=$(cd ../../../../.. && pwd)

secs=${ESPINTCP_FUZZ_SECONDS:-25}
frames=${ESPINTCP_FUZZ_FRAMES:-1000000}
calls=${ESPINTCP_FUZZ_CALLS:-100000}
conns=${ESPINTCP_FUZZ_CONNS:-200}
seeds=${ESPINTCP_FUZZ_SEEDS:-1 fresh}
modes=${ESPINTCP_FUZZ_MODES:-all}
if [ -z "${ESPINTCP_FUZZ_OUT:-}" ]; then
	# In the test VM, the result share survives the guest.
	if [ -n "${IN_ESPINTCP_VM:-}" ] && [ -w /run/espintcp-vm ]; then
		ESPINTCP_FUZZ_OUT=/run/espintcp-vm/fuzz
	else
		ESPINTCP_FUZZ_OUT=/tmp
	fi
fi
export ESPINTCP_FUZZ_OUT

# Our modules' directory, for the rmmod checks (they reload from there).
ko=()
[ -f "$top/espintcp.ko" ] && ko=(--ko-dir "$top")

# Each run of the fuzzer is a TAP stream of its own: join them into one,
# numbered through, with one plan at the end.
# (Through a file: the test VM has no /dev/fd for process substitution.)
out=$(mktemp) || exit 1
trap 'rm -f "$out"' EXIT
n=0
rc=0
echo "TAP version 13"
for s in $seeds; do
	seed=()
	[ "$s" = fresh ] || seed=(--seed "$s")
	for m in $modes; do
		./espintcp_fuzz "$m" "${seed[@]}" --seconds "$secs" \
			--frames "$frames" --calls "$calls" --conns "$conns" \
			"${ko[@]}" >"$out" 2>&1 || rc=1
		while IFS= read -r line; do
			case $line in
			"TAP version "*|1..*) ;;
			"ok "*|"not ok "*)
				n=$((n + 1))
				ok=${line%% [0-9]*}
				echo "$ok $n ${line#"$ok" [0-9]* }"
				;;
			*) echo "$line" ;;
			esac
		done <"$out"
	done
done
echo "1..$n"
exit $rc
