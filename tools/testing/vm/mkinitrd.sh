#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (once, cached) the VM's initramfs for kernel KVER: static busybox,
# the stock modules needed to mount the host's directories over FS (9p, or
# virtiofs for kernels built without 9p, such as Debian's cloud flavour),
# and guest-init. Prints the initramfs path.
#
#   mkinitrd.sh KVER [BASEDIR] [FS]
#
# BASEDIR is where lib/modules/KVER is when not under / (a self-built
# kernel's INSTALL_MOD_PATH); modules built into that kernel are skipped.
# FS is 9p (the default) or virtiofs.

set -euo pipefail

kver=$1
base=${2:-/}
fs=${3:-9p}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/espintcp/vm/$kver/$fs
case $fs in
9p) fsmods="9pnet_virtio 9p" ;;
virtiofs) fsmods=virtiofs ;;
*) echo "mkinitrd: unknown file system $fs" >&2; exit 1 ;;
esac
initrd=$cache/initrd.gz
busybox=/bin/busybox

# Rebuild when any input changed.
stamp=$( (sha256sum "$here/guest-init" "$0" "$busybox"; ls -l "$base/lib/modules/$kver/modules.dep") | sha256sum | cut -c1-16)
if [ -f "$initrd" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$stamp" ]; then
	echo "$initrd"
	exit 0
fi

file "$busybox" 2>/dev/null | grep -q 'statically linked' || [ -x /bin/busybox ] || {
	echo "mkinitrd: install busybox-static" >&2
	exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work" ${tmp:+"$tmp"}' EXIT
mkdir -p "$work"/{bin,dev,proc,sys,mnt,newroot,lib/modules}
cp "$busybox" "$work/bin/busybox"
for app in sh mount umount mkdir insmod cat echo chroot poweroff sleep dmesg; do
	ln -s busybox "$work/bin/$app"
done

# Modules in dependency order, as modprobe would load them.
: > "$work/modules"
for mod in virtio_pci $fsmods overlay; do
	deps=$(modprobe -d "$base" -S "$kver" --show-depends "$mod") || {
		echo "mkinitrd: $kver has no $mod" >&2
		exit 1
	}
	echo "$deps" | while read -r kw path _; do
		[ "$kw" = insmod ] || continue
		name=$(basename "$path")
		name=${name%.xz}
		grep -qx "$name" "$work/modules" && continue
		case "$path" in
		*.xz) xz -dc "$path" > "$work/lib/modules/$name" ;;
		*) cp "$path" "$work/lib/modules/$name" ;;
		esac
		echo "$name" >> "$work/modules"
	done
done

cp "$here/guest-init" "$work/init"
chmod +x "$work/init"

# The kernel runs request_module()'s modprobe in init's root: this one.
mkdir -p "$work/sbin"
printf '#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe "$@"\n' > "$work/sbin/modprobe"
chmod +x "$work/sbin/modprobe"

# Two runs for one kernel at once (make check-kernels' lanes next to make
# check) each write their own file; the renames are atomic.
mkdir -p "$cache"
tmp=$(mktemp "$cache/initrd.XXXXXX")
(cd "$work" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp"
mv "$tmp" "$initrd"
echo "$stamp" > "$tmp" && mv "$tmp" "$cache/stamp"
echo "$initrd"
