#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check: install what is missing, build the modules and selftests, run
# them all in a VM booting Debian's stock kernel, and end with the line
# "N passed, N failed".

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh
trap 'summary 0 1 0' ERR

vmargs=()
if [ -n "${ESPINTCP_ROOT:-}" ]; then
	scripts/deps.sh
	# Another Debian root (make check-kernels' Debian 13 row): its kernel,
	# its compiler, its userspace in the guest, and the host's root next
	# to it for interoperability tests (run-vm.sh --peer-root).
	root=$(cd "$ESPINTCP_ROOT" && pwd)
	KVER=$(ls -1 "$root/lib/modules")
	export KVER
	echo "check: kernel $KVER and userspace of $root, tcg thread=${ESPINTCP_TCG:-multi}"
	scripts/in-root.sh "$root" sh -c 'make -s modules && make -s selftests KSFT_DIR="$KSFT_DIR"'
	vmargs=(--root "$root" --peer-root /)
else
	host_kernel
	echo "check: $kver_why, tcg thread=${ESPINTCP_TCG:-multi}"
	make -s modules
	make -s selftests
fi
trap - ERR

out=$(mktemp -d /tmp/espintcp-check.XXXXXX)
set +e
# The guest starts with an empty environment: pass on what selects tests.
fwd=()
for v in ESPINTCP_TESTS ESPINTCP_CASES ESPINTCP_WAIT ${!ESPINTCP_FUZZ_*}; do
	[ -z "${!v:-}" ] || fwd+=("$v=${!v}")
done
tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_VM_TIMEOUT:-3000}" --out "$out" "${vmargs[@]}" \
	-- env "${fwd[@]}" tools/testing/vm/guest-check.sh
rc=$?
set -e

guest_result check "$out" "$rc"

# Installing for real: DKMS, the package, depmod's choice (ESPINTCP_NO_DKMS=1
# skips it while developing).
if [ -z "${ESPINTCP_NO_DKMS:-}" ]; then
	tools/testing/vm/dkms-check.sh | tee "$out/dkms.log"
	result=$(grep -ao 'DKMS-RESULT [0-9]* [0-9]*' "$out/dkms.log" | tail -1 || true)
	read -r _ p f <<<"${result:-DKMS-RESULT 0 1}"
	passed=$((passed + p))
	failed=$((failed + f))
fi

summary "$passed" "$failed" "$skipped"
[ "$failed" -eq 0 ]
