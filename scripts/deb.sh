#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make deb: build the espintcp-dkms package with dpkg-buildpackage from a
# clean copy of the sources, and put it in ${DEB_OUT:-..}.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
ver=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
out=${DEB_OUT:-$top/..}
for t in dpkg-buildpackage dh_dkms; do
	command -v $t >/dev/null || {
		echo "deb: $t missing (apt-get install dpkg-dev debhelper dh-dkms)"
		exit 1
	}
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/espintcp-$ver"
{ echo Kbuild; echo dkms.conf; echo scripts/compat.mk; find debian -type f
  find include net -name '*.[ch]'; } | cp --parents -t "$tmp/espintcp-$ver" $(cat)
(cd "$tmp/espintcp-$ver" && dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1) || {
	cat "$tmp/build.log"
	exit 1
}
mkdir -p "$out"
cp "$tmp/espintcp-dkms_${ver}_all.deb" "$out/"
echo "$out/espintcp-dkms_${ver}_all.deb"
