#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make dkms-install / dkms-remove: register the modules with DKMS from this
# tree (as the espintcp-dkms package does), build and install them for KVER
# (default: every kernel DKMS knows, AUTOINSTALL covers later ones), or
# remove them again. Root (or sudo).
#
#   scripts/dkms.sh install [KVER]
#   scripts/dkms.sh add          (register only; the tests use it)
#   scripts/dkms.sh remove

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
ver=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
src=/usr/src/espintcp-$ver
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
command -v dkms >/dev/null || {
	echo "dkms: not installed (apt-get install dkms)"
	exit 1
}

# Register the sources of this tree with DKMS.
add() {
	$sudo rm -rf "$src"
	$sudo mkdir -p "$src"
	# Sources only, never objects of an earlier build in this tree.
	{ echo Kbuild; echo scripts/compat.mk; find include net -name '*.[ch]'; } |
		$sudo cp --parents -t "$src" $(cat)
	sed "s/#MODULE_VERSION#/$ver/" dkms.conf | $sudo tee "$src/dkms.conf" >/dev/null
	$sudo dkms add -m espintcp -v "$ver"
}

case ${1:-} in
add)
	add
	;;
install)
	kver=${2:-}
	add
	if [ -n "$kver" ]; then
		$sudo dkms install -m espintcp -v "$ver" -k "$kver"
	else
		$sudo dkms install -m espintcp -v "$ver"
	fi
	;;
remove)
	if dkms status -m espintcp -v "$ver" | grep -q .; then
		$sudo dkms remove -m espintcp -v "$ver" --all
	fi
	$sudo rm -rf "$src"
	;;
*)
	echo "usage: $0 install [KVER] | add | remove" >&2
	exit 1
	;;
esac
