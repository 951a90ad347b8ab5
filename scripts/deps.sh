#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install the Debian packages the build and the tests need, if missing,
# and those named as arguments (make check-debug's kernel build).
# Idempotent and quick when everything is there; root or sudo.

set -euo pipefail

pkgs=(
	make gcc libc6-dev bc kmod cpio xz-utils file
	linux-image-amd64 linux-headers-amd64 linux-source-6.1
	qemu-system-x86 busybox-static
	iproute2 iputils-ping nftables iperf3 python3 python3-scapy python3-cryptography sparse
	dkms dh-dkms debhelper dpkg-dev
	libreswan libnss3-tools tshark
	"$@"
)

# A kernel asked for by name (make check KVER=...): its image and headers.
if [ -n "${KVER:-}" ]; then
	pkgs+=("linux-image-$KVER" "linux-headers-$KVER")
fi

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
