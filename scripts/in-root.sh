#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run a command inside another Debian root (scripts/deb13-root.sh's), with
# this source tree and the extracted kselftest harness bound at the same
# paths, so that the root's own compiler builds our modules and selftests
# for the root's kernel:
#
#   in-root.sh ROOT COMMAND...
#
# The command runs in the tree's top directory, as root, with a clean
# environment plus KVER (the root's one kernel release) and KSFT_DIR; the
# mounts are private to it and gone when it ends.

set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
root=$(cd "${1:?usage: in-root.sh ROOT COMMAND...}" && pwd)
shift
[ $# -gt 0 ] || { echo "usage: in-root.sh ROOT COMMAND..." >&2; exit 1; }

ksft=$("$here/linux-source.sh")
kver=$(ls -1 "$root/lib/modules")
[ "$(wc -l <<<"$kver")" -eq 1 ] || { echo "in-root: $root has kernels $(tr '\n' ' ' <<<"$kver")" >&2; exit 1; }
mkdir -p "$root$top" "$root$ksft"

exec unshare -m --propagation private bash -c '
	root=$1 top=$2 ksft=$3 kver=$4
	shift 4
	mount --bind "$top" "$root$top" &&
	mount --bind "$ksft" "$root$ksft" &&
	mount -t proc proc "$root/proc" || exit 1
	exec chroot "$root" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/root LANG=C.UTF-8 KVER="$kver" KSFT_DIR="$ksft/tools/testing/selftests" \
		sh -c "cd \"\$1\" && shift && exec \"\$@\"" sh "$top" "$@"' \
	sh "$root" "$top" "$ksft" "$kver" "$@"
