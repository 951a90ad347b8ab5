#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run a command as root inside Debian's stock kernel under qemu (TCG).
#
#   run-vm.sh [--timeout SECS] [--kver KVER] [--out DIR]
#             [--kernel IMAGE --modules DIR] [--root DIR] [--peer-root DIR]
#             [--mem SIZE] [--cpu MODEL] [--append ARGS] -- COMMAND...
#
# The guest boots /boot/vmlinuz-KVER with a small cached initramfs (busybox
# and the stock 9p/virtio modules), mounts the host's / read-only over 9p
# with tmpfs over /tmp, /run, /root and overlays over /etc and /var, and runs
# COMMAND with bash in the directory run-vm.sh was called from.
#
# A kernel without 9p (Debian's cloud flavour) gets the same directories
# over virtiofs instead, served by qemu's virtiofsd; the read-only ones from
# a read-only bind mount, since virtiofsd cannot refuse writes itself.
# ESPINTCP_VM_FS=9p or virtiofs forces the choice.
#
# --kernel boots another image instead (make check-debug's): --modules DIR
# then holds its lib/modules/RELEASE/, which the guest sees as /lib/modules.
# --root boots another Debian root instead of the host's (the Debian 13 row
# of make check-kernels): the guest's / is DIR, read-only as the host's
# would be, and the kernel is DIR/boot/vmlinuz-KVER with DIR/lib/modules,
# KVER being --kver or the one release under DIR/lib/modules. The caller's
# directory must be at the same path under DIR (created when missing).
# --peer-root DIR shows another root to the guest at /run/espintcp-peer, with
# a writable overlay and /proc, /sys, /dev bound in, for chroot: a second
# userspace (libreswan interop) next to the booted one.
# --mem is the guest's memory (default 2G); --cpu is qemu's -cpu (default
# max); --append adds to the kernel's command line.
#
# Exit status: COMMAND's own; 124 when the guest timed out; 125 when the
# guest kernel crashed or printed a warning (Oops, BUG, WARNING, KASAN,
# refcount_t); 126 when the VM could not be set up. The guest's full dmesg
# is left in OUT/dmesg and the serial console in OUT/console.log.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../../.." && pwd)

timeout=600
kver=
out=
kernel=
moddir=
modbase=
root=/
peer=
mem=2G
cpu=max
append=
while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) timeout=$2; shift 2 ;;
	--kver) kver=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--kernel) kernel=$2; shift 2 ;;
	--modules) moddir=$2; shift 2 ;;
	--root) root=$2; shift 2 ;;
	--peer-root) peer=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--cpu) cpu=$2; shift 2 ;;
	--append) append=$2; shift 2 ;;
	--) shift; break ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--timeout S] [--kver KVER] [--out DIR] [--kernel IMAGE --modules DIR] [--root DIR] [--peer-root DIR] [--mem SIZE] [--cpu MODEL] [--append ARGS] -- COMMAND..." >&2; exit 126; }
root=$(cd "$root" && pwd) || exit 126
[ -z "$peer" ] || peer=$(cd "$peer" && pwd) || exit 126

if [ "$root" != / ]; then
	[ -z "$kernel" ] || { echo "run-vm: --root boots its own kernel, not --kernel" >&2; exit 126; }
	if [ -z "$kver" ]; then
		kver=$(ls -1 "$root/lib/modules")
		[ "$(wc -l <<<"$kver")" -eq 1 ] || { echo "run-vm: $root has kernels $(tr "\n" " " <<<"$kver"); pick one with --kver" >&2; exit 126; }
	fi
	kernel=$root/boot/vmlinuz-$kver
	[ -r "$kernel" ] || { echo "run-vm: $kernel missing" >&2; exit 126; }
	modbase=$root
	# The guest mounts the caller's directory here: the root is read-only
	# in the guest, not for us.
	mkdir -p "$root$PWD" || exit 126
elif [ -n "$kernel" ]; then
	# A self-built kernel: its release is the one directory under
	# DIR/lib/modules.
	[ -r "$kernel" ] && [ -n "$moddir" ] || { echo "run-vm: --kernel needs a readable IMAGE and --modules DIR" >&2; exit 126; }
	modbase=$(cd "$moddir" && pwd) || exit 126
	moddir=$modbase/lib/modules
	[ -d "$moddir" ] || { echo "run-vm: no lib/modules in $modbase" >&2; exit 126; }
	kver=$(ls -1 "$moddir" | head -1)
	[ -f "$moddir/$kver/modules.dep" ] || { echo "run-vm: no modules.dep under $moddir" >&2; exit 126; }
else
	kver=${kver:-$("$top/scripts/kver.sh")} || { echo "run-vm: no kernel found" >&2; exit 126; }
	kernel=/boot/vmlinuz-$kver
	[ -r "$kernel" ] || { echo "run-vm: $kernel missing (apt-get install linux-image-amd64)" >&2; exit 126; }
fi

out=${out:-$(mktemp -d /tmp/espintcp-vm.XXXXXX)}
mkdir -p "$out"
share="$out/share"
rm -rf "$share"
mkdir -p "$share"

fs=${ESPINTCP_VM_FS:-}
if [ -z "$fs" ]; then
	fs=virtiofs
	modprobe -d "${modbase:-/}" -S "$kver" --show-depends 9p >/dev/null 2>&1 && fs=9p
fi
case $fs in
9p|virtiofs) ;;
*) echo "run-vm: ESPINTCP_VM_FS must be 9p or virtiofs" >&2; exit 126 ;;
esac
initrd=$("$here/mkinitrd.sh" "$kver" "${modbase:-/}" "$fs") || exit 126

# The command, run by the guest in the caller's directory, which is shared
# on its own (read-only) so that it is visible even under the guest's /tmp.
echo "$PWD" > "$share/workdir"
{
	printf 'cd %q || exit 126\n' "$PWD"
	printf '%q ' "$@"
	echo
} > "$share/cmd"

# ESPINTCP_TCG=single runs TCG on one host thread: slower, but immune to
# multi-threaded TCG's own races (seen once: an int3 Oops while a static key
# was patched on a 6.12 guest). An Oops that survives single is ours.
tcg=${ESPINTCP_TCG:-multi}
case $tcg in
single|multi) ;;
*) echo "run-vm: ESPINTCP_TCG must be single or multi" >&2; exit 126 ;;
esac

# share TAG DIR ro|rw: export DIR to the guest, which mounts it by TAG.
shares=()
vfsd=()
vfs_cleanup() {
	[ ${#vfsd[@]} -eq 0 ] || kill "${vfsd[@]}" 2>/dev/null || true
}
trap vfs_cleanup EXIT
share() {
	local tag=$1 dir=$2 mode=$3 sock=$out/vfs-$1.sock root=$out/vfs-$1.root
	local opts=local,path=$dir,mount_tag=$tag,security_model=none,multidevs=remap
	local cache=auto i

	if [ "$fs" = 9p ]; then
		[ "$mode" = ro ] && opts+=,readonly=on
		shares+=(-virtfs "$opts")
		return
	fi
	rm -f "$sock"
	mkdir -p "$root"
	[ "$mode" = ro ] && cache=always
	# In a mount namespace of its own: DIR, and everything mounted below
	# it, bound read-only where the guest must not write.
	unshare -m --propagation private sh -c '
		mount --rbind "$1" "$2" || exit 1
		if [ "$3" = ro ]; then
			findmnt -R -rn -o TARGET "$2" | while read -r m; do
				mount -o remount,bind,ro "$m" || exit 1
			done || exit 1
		fi
		shift 3
		exec "$@"' sh "$dir" "$root" "$mode" \
		/usr/lib/qemu/virtiofsd --socket-path="$sock" -o source="$root" \
		-o cache="$cache" -o log_level=err >"$out/vfs-$tag.log" 2>&1 &
	vfsd+=($!)
	for i in $(seq 100); do
		[ -S "$sock" ] && break
		kill -0 "${vfsd[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	[ -S "$sock" ] || { echo "run-vm: virtiofsd for $dir did not start:" >&2; cat "$out/vfs-$tag.log" >&2; exit 126; }
	shares+=(-chardev "socket,id=vfs-$tag,path=$sock"
		 -device "vhost-user-fs-pci,chardev=vfs-$tag,tag=$tag")
}
share hostroot "$root" ro
share result "$share" rw
share workdir "$PWD" ro
# The guest mounts a self-built kernel's modules over its /lib/modules.
if [ -n "$moddir" ]; then
	touch "$share/modules"
	share kmods "$moddir" ro
fi
if [ -n "$peer" ]; then
	touch "$share/peer"
	share peer "$peer" ro
fi
# vhost-user devices need the guest's memory shared with virtiofsd.
memdev=()
[ "$fs" = virtiofs ] && memdev=(-object "memory-backend-memfd,id=mem,size=$mem,share=on"
			       -machine memory-backend=mem)

cpus=$(nproc)
[ "$cpus" -gt 4 ] && cpus=4
start=$(date +%s.%N)
set +e
timeout -k 10 "$timeout" qemu-system-x86_64 \
	-accel tcg,thread="$tcg" -cpu "$cpu" -smp "$cpus" -m "$mem" \
	-nographic -no-reboot -serial mon:stdio -nodefaults -vga none \
	-kernel "$kernel" -initrd "$initrd" \
	-append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic rdinit=/init espintcp_vm_fs=$fs${append:+ $append}" \
	"${memdev[@]}" "${shares[@]}" \
	</dev/null 2>&1 | tee "$out/console.log" |
	sed -u -e '/ESPINTCP-VM /d' -e '/SeaBIOS\|^Booting from\|^iPXE\|^Press Ctrl/d' \
	       -e 's/\x1b[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g; s/\r$//'
qemu_rc=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)

boot=$(grep -ao 'ESPINTCP-VM boot [0-9.]*' "$out/console.log" | tail -1 | cut -d' ' -f3)
printf 'run-vm: kernel %s, tcg thread=%s, %s, guest uptime at command start %ss, total %.1fs\n' \
	"$kver" "$tcg" "$fs" "${boot:-?}" "$(echo "$end - $start" | bc)"
[ -f "$share/dmesg" ] && cp "$share/dmesg" "$out/dmesg"

splat='(Oops|BUG:|WARNING:|KASAN|refcount_t|general protection|Kernel panic|Call Trace)'
logs=("$out/console.log")
[ -f "$out/dmesg" ] && logs+=("$out/dmesg")
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
	echo "run-vm: guest timed out after ${timeout}s" >&2
	# A hung guest may have said why on the console.
	if grep -aEq "$splat" "${logs[@]}"; then
		echo "run-vm: the guest kernel crashed or warned before:" >&2
		grep -ahE -A3 "$splat" "${logs[@]}" | head -40 >&2 || true
	fi
	exit 124
fi
if grep -aEq "$splat" "${logs[@]}"; then
	echo "run-vm: guest kernel crashed or warned:" >&2
	grep -ahE -A3 "$splat" "${logs[@]}" | head -40 >&2 || true
	exit 125
fi
# Empty when the guest's init was killed while writing it (out of memory).
if [ ! -s "$share/rc" ]; then
	echo "run-vm: guest ended without a result (qemu exit $qemu_rc); see $out/console.log" >&2
	tail -20 "$out/console.log" >&2
	exit 126
fi
echo "run-vm: output in $out"
exit "$(cat "$share/rc")"
