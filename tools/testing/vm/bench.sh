#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench: install what is missing, build, boot Debian's stock kernel in a
# VM, load our modules and print throughput ratios measured in one run (see
# tools/testing/selftests/net/espintcp/espintcp_bench.sh).

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

scripts/deps.sh
why=$(scripts/kver.sh -v 2>&1 >/dev/null)
KVER=$(scripts/kver.sh)
export KVER
echo "${0##*/}: $why"
make -s modules
make -s selftests
out=$(mktemp -d /tmp/espintcp-bench.XXXXXX)
tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_VM_TIMEOUT:-1800}" --out "$out" -- \
	bash -c 'for m in espintcp esp4 esp6; do insmod ./$m.ko || exit 1; done
		tools/testing/selftests/net/espintcp/espintcp_bench.sh'
