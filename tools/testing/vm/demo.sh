#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make demo: install what is missing, build, boot Debian's stock kernel in a
# VM and show an IKE/ESP tunnel coming up over TCP (see guest-demo.sh).

set -euo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"

. tools/testing/vm/lib.sh

host_kernel
echo "${0##*/}: $kver_why"
make -s modules
make -s selftests
out=$(mktemp -d /tmp/espintcp-demo.XXXXXX)
tools/testing/vm/run-vm.sh --timeout "${ESPINTCP_VM_TIMEOUT:-900}" \
	--out "$out" -- tools/testing/vm/guest-demo.sh
