#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build, once, the kernel behind make check-debug: Debian's linux-source-6.1,
# or linux-source-6.12 with ESPINTCP_DEBUG_SERIES=6.12 (each the same upload
# as Debian 12's image of that series) with Debian's config, trimmed to the
# modules the VM uses (tools/testing/vm/debug/modules.list) and with KASAN,
# kmemleak, lockdep, UBSAN and friends on (tools/testing/vm/debug/kernel.config),
# and built-in parts a VM never uses off (tools/testing/vm/debug/trim.config).
#
#   debug-kernel.sh [-v]
#
# Prints the directory holding the result:
#   DIR/vmlinuz        the kernel image
#   DIR/release        its release (uname -r)
#   DIR/obj/           the build tree, for make KDIR=DIR/obj
#   DIR/mod/lib/modules/RELEASE/   its modules, depmod'ed
#
# The cache, ${XDG_CACHE_HOME:-~/.cache}/espintcp/debug-kernel/SRCVERSION/,
# is keyed by the source package's version (so each series has its own);
# the build tree in it is stamped
# with a hash of the configuration's inputs, so a changed input rebuilds
# only what it touches. ESPINTCP_DEBUG_JOBS sets make's -j (default 2).

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
vm=$top/tools/testing/vm/debug
verbose=
[ "${1:-}" = -v ] && verbose=1

say() { echo "debug-kernel: $*" >&2; }

# The series and the metapackage of Debian 12's image of it.
series=${ESPINTCP_DEBUG_SERIES:-6.1}
case $series in
6.1) meta=linux-image-amd64 ;;
6.12) meta=linux-image-6.12-amd64 ;;
*) say "ESPINTCP_DEBUG_SERIES=$series: 6.1 or 6.12"; exit 1 ;;
esac
"$top/scripts/deps.sh" flex bison libelf-dev "linux-source-$series" "$meta" >&2
tarball=/usr/src/linux-source-$series.tar.xz
srcver=$(dpkg-query -W -f='${Version}' "linux-source-$series")
# Debian's config for the same upload: the image built from this source.
stock=$(dpkg-query -W -f='${Depends}' "$meta" 2>/dev/null |
	sed -n 's/.*linux-image-\([^ ,]*-amd64\).*/\1/p')
case $stock in
"$series".*) ;;
*) say "$meta is $stock, not $series"; exit 1 ;;
esac
imgver=$(dpkg-query -W -f='${Version}' "linux-image-$stock" 2>/dev/null || true)
if [ "$imgver" != "$srcver" ]; then
	say "linux-source-$series $srcver and linux-image-$stock ${imgver:-?} differ: apt-get upgrade"
	exit 1
fi
base=/boot/config-$stock

cache=${XDG_CACHE_HOME:-$HOME/.cache}/espintcp/debug-kernel/$srcver
src=$cache/src
obj=$cache/obj
mod=$cache/mod
jobs=${ESPINTCP_DEBUG_JOBS:-2}

# Inputs of the configuration; the format number is bumped when the way they
# are combined below changes.
# One build at a time per cache (worktrees share it): wait for the other.
mkdir -p "$cache"
exec 9>"$cache/lock"
if ! flock -n 9; then
	say "waiting for another build in $cache"
	flock 9
fi

key=$( (echo format 1; cat "$base" "$vm/modules.list" "$vm/kernel.config" "$vm/trim.config") |
	sha256sum | cut -c1-16)
if [ -f "$cache/vmlinuz" ] && [ "$(cat "$cache/stamp" 2>/dev/null)" = "$key" ]; then
	[ -n "$verbose" ] && say "cached: $(cat "$cache/release"), $cache"
	echo "$cache"
	exit 0
fi

start=$(date +%s)
if [ ! -f "$src/.done" ]; then
	say "extracting $tarball"
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" --strip-components=1
	touch "$src/.done"
fi

# A half-built tree from another configuration is reused: kbuild rebuilds
# what the changed options touch.
rm -f "$cache/stamp" "$cache/vmlinuz"
mkdir -p "$obj"
kmake() { make -s -C "$src" O="$obj" "$@"; }

say "configuring (Debian's $base, localmodconfig, $vm/{trim,kernel}.config)"
cp "$base" "$obj/.config"
kmake olddefconfig
kmake LSMOD="$vm/modules.list" localmodconfig >/dev/null 2>&1
"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$vm/trim.config" "$vm/kernel.config" >/dev/null
kmake olddefconfig

# Every line of the fragment must have stuck.
bad=0
while IFS= read -r line; do
	case $line in
	CONFIG_*=*) opt=${line%%=*} want=${line#*=} ;;
	"# CONFIG_"*" is not set") opt=${line#\# } opt=${opt%% *} want=n ;;
	*) continue ;;
	esac
	have=$(sed -n "s/^$opt=//p" "$obj/.config")
	[ -n "$have" ] || have=n
	if [ "$have" != "$want" ]; then
		say "$opt: wanted $want, got $have"
		bad=1
	fi
done < "$vm/kernel.config"
[ "$bad" -eq 0 ] || exit 1

say "building with -j$jobs in $obj (log: $cache/build.log)"
if ! make -C "$src" O="$obj" -j"$jobs" bzImage modules >"$cache/build.log" 2>&1; then
	tail -30 "$cache/build.log" >&2
	say "build failed, see $cache/build.log"
	exit 1
fi
release=$(cat "$obj/include/config/kernel.release")
rm -rf "$mod"
make -s -C "$src" O="$obj" INSTALL_MOD_PATH="$mod" modules_install >>"$cache/build.log" 2>&1
rm -f "$mod/lib/modules/$release/build" "$mod/lib/modules/$release/source"
cp "$obj/arch/x86/boot/bzImage" "$cache/vmlinuz"
echo "$release" > "$cache/release"
echo "$key" > "$cache/stamp"
say "built $release in $(( $(date +%s) - start ))s"
echo "$cache"
