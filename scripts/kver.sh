#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Print the kernel release to build and test against, chosen predictably:
#  1. $KVER, when set (make KVER=..., make check KVER=...);
#  2. the running kernel, when its build tree is installed (a real Debian
#     machine building for itself);
#  3. the kernel that Debian's linux-image-amd64 metapackage depends on, i.e.
#     the distribution's default generic kernel (Debian 12: the 6.1 series);
#  4. the newest generic *-amd64 kernel (not -rt-, not -cloud-) that has
#     linux-image and linux-headers installed.
# With -v, also say on stderr which rule chose it.
say() {
	[ -n "$verbose" ] && echo "kernel $1 ($2)" >&2
	echo "$1"
	exit 0
}
verbose=
[ "${1:-}" = -v ] && verbose=1

have() {
	[ -r "/boot/vmlinuz-$1" ] && [ -d "/lib/modules/$1/build" ]
}

if [ -n "${KVER:-}" ]; then
	say "$KVER" "KVER"
fi
r=$(uname -r)
if [ -d "/lib/modules/$r/build" ]; then
	say "$r" "the running kernel"
fi
dep=$(dpkg-query -W -f='${Depends}' linux-image-amd64 2>/dev/null |
	sed -n 's/.*linux-image-\([^ ,]*-amd64\).*/\1/p')
if [ -n "$dep" ] && have "$dep"; then
	say "$dep" "Debian's default kernel, from linux-image-amd64"
fi
for img in $(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | grep -vE -- '-(rt|cloud)-amd64$' | sort -rV); do
	v=${img#/boot/vmlinuz-}
	if have "$v"; then
		say "$v" "the newest generic kernel with headers"
	fi
done
echo "no kernel with headers found: apt-get install linux-image-amd64 linux-headers-amd64" >&2
exit 1
