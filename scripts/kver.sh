#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Print the kernel release to build and test against: the running kernel when
# its build tree is installed, else the newest Debian *-amd64 kernel that has
# both linux-image and linux-headers installed.
r=$(uname -r)
if [ -d "/lib/modules/$r/build" ]; then
	echo "$r"
	exit 0
fi
for img in $(ls -1 /boot/vmlinuz-*-amd64 2>/dev/null | sort -rV); do
	v=${img#/boot/vmlinuz-}
	if [ -d "/lib/modules/$v/build" ]; then
		echo "$v"
		exit 0
	fi
done
exit 1
