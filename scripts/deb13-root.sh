#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build, once, a Debian 13 (trixie) root for the Debian 13 row of make
# check-kernels: debootstrap from Debian's archive into the cache, with
# trixie's kernel (image and headers), its compiler and the userspace the
# suite uses (iproute2, libreswan 5.x, nftables, python3, tshark, ...).
# The host's apt sources are never touched: debootstrap and the root's own
# apt are the only users of trixie's archive.
#
#   deb13-root.sh [-v]
#
# Prints the root's directory. ESPINTCP_DEB13_MIRROR overrides the archive
# (default http://deb.debian.org/debian). The root is rebuilt when this
# script changes; `apt-get update && apt-get upgrade` inside it (chroot) is
# the way to a newer trixie kernel.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/espintcp/deb13-root
root=$cache/root
mirror=${ESPINTCP_DEB13_MIRROR:-http://deb.debian.org/debian}
verbose=
[ "${1:-}" = -v ] && verbose=1
say() { echo "deb13-root: $*" >&2; }

pkgs=(
	linux-image-amd64 linux-headers-amd64 gcc make libc6-dev bc kmod
	iproute2 iputils-ping nftables iperf3 procps psmisc
	python3 python3-scapy python3-cryptography
	libreswan libnss3-tools tshark dkms
)
key=$( (echo format 1; sha256sum "$0") | sha256sum | cut -c1-16)

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ -f "$cache/stamp" ] && [ "$(cat "$cache/stamp")" = "$key" ]; then
	[ -n "$verbose" ] && say "cached: $root"
	echo "$root"
	exit 0
fi

"$here/deps.sh" debootstrap >&2
# Two steps: debootstrap's own resolver does not follow virtual packages
# (libreswan needs "host", python3-cryptography the cffi backend's API
# versions), the root's apt does.
if [ ! -f "$cache/base.done" ]; then
	rm -rf "$root" "$cache/stamp"
	say "debootstrap trixie from $mirror into $root (several minutes)"
	debootstrap --variant=minbase trixie "$root" "$mirror" \
		>"$cache/debootstrap.log" 2>&1 || {
		tail -20 "$cache/debootstrap.log" >&2
		say "debootstrap failed, see $cache/debootstrap.log"
		exit 1
	}
	touch "$cache/base.done"
fi
say "installing ${pkgs[*]} in the root"
# /proc for the packages' scripts, in a mount namespace of our own.
unshare -m --propagation private sh -c '
	mount -t proc proc "$1/proc" &&
	chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root DEBIAN_FRONTEND=noninteractive sh -c "
		apt-get -q update &&
		apt-get -q -y install --no-install-recommends $2"' \
	sh "$root" "${pkgs[*]}" >"$cache/apt.log" 2>&1 || {
	tail -20 "$cache/apt.log" >&2
	say "installing in the root failed, see $cache/apt.log"
	exit 1
}
# The guest mounts tmpfs and overlays over these; they must exist.
mkdir -p "$root"/{tmp,run,root,etc,var,proc,sys,dev}
echo "$key" > "$cache/stamp"
echo "$root"
