#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make bench's yardstick: upstream's net/xfrm/espintcp.c, net/ipv4/esp4.c
# and net/ipv6/esp6.c, taken unmodified from Debian's linux-source-6.1 and
# built out of tree against KVER's headers as espintcp_ref.ko, esp4_ref.ko
# and esp6_ref.ko, into a cache. Measured against, never shipped, never
# compiled or linked with ours: the build directory holds those three files,
# a Kbuild and a shim with the module init and license (upstream's espintcp
# is always built in, so it has neither).
#
#   bench-ref.sh KVER      prints the directory with the three modules
#
# Fails, saying so, where those files do not build against KVER's headers
# (they are 6.1's).

set -euo pipefail

kver=${1:?usage: bench-ref.sh KVER}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The name linux-source-6.1 installs (not a glob: linux-source-6.12's
# tarball, which make check-debug may install, matches 6.1*).
tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || "$here/deps.sh" >&2
name=$(basename "$tarball" .tar.xz)
kdir=/lib/modules/$kver/build
[ -d "$kdir" ] || { echo "bench-ref: no headers for $kver" >&2; exit 1; }
cache=${XDG_CACHE_HOME:-$HOME/.cache}/espintcp/bench-ref/$kver
build=$cache/build
key=$( (sha256sum "$0"; ls -l --time-style=+%s "$tarball" "$kdir/Module.symvers") |
	sha256sum | cut -c1-16)

mkdir -p "$cache"
exec 9>"$cache/lock"
flock 9
if [ "$(cat "$cache/stamp" 2>/dev/null)" = "$key" ]; then
	echo "$build"
	exit 0
fi

rm -rf "$build" "$cache/stamp"
mkdir -p "$build"
tar -xJf "$tarball" -C "$build" --strip-components=1 \
	"$name/net/xfrm/espintcp.c" "$name/net/ipv4/esp4.c" "$name/net/ipv6/esp6.c"
cat >"$build/Kbuild" <<'EOF'
obj-m := espintcp_ref.o esp4_ref.o esp6_ref.o
espintcp_ref-y := net/xfrm/espintcp.o ref_module.o
esp4_ref-y := net/ipv4/esp4.o
esp6_ref-y := net/ipv6/esp6.o
# What a kernel built with espintcp has: its TCP parts in esp4.c and esp6.c.
ccflags-y := -DCONFIG_INET_ESPINTCP=1 -DCONFIG_INET6_ESPINTCP=1
EOF
cat >"$build/ref_module.c" <<'EOF'
// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
#include <net/espintcp.h>

/* Built in, upstream registers its ULP from the XFRM core's init. */
static int __init espintcp_ref_init(void)
{
	espintcp_init();
	return 0;
}
module_init(espintcp_ref_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("upstream espintcp out of tree: make bench's yardstick");
EOF
if ! make -C "$kdir" M="$build" modules >"$cache/build.log" 2>&1; then
	echo "bench-ref: $name's espintcp.c, esp4.c, esp6.c do not build against $kver's headers ($cache/build.log)" >&2
	exit 1
fi
echo "$key" >"$cache/stamp"
echo "$build"
