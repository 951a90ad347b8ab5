#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Extract, once, the few files we use from Debian's linux-source-6.1:
# checkpatch.pl and its data, and the kselftest harness. Prints the
# directory that mirrors the kernel tree.

set -euo pipefail

# 6.1's, not the newest: make check-debug may install linux-source-6.12, and
# the selftests and lint must not change with what else is installed.
tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || "$(dirname "$0")/deps.sh" >&2
name=$(basename "$tarball" .tar.xz)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/espintcp/$name

files=(
	scripts/checkpatch.pl
	scripts/spelling.txt
	scripts/const_structs.checkpatch
	tools/testing/selftests/kselftest_harness.h
	tools/testing/selftests/kselftest.h
	tools/testing/selftests/lib.mk
)
# One extraction at a time: the others wait for it, then use it.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if [ ! -f "$cache/.done" ] || [ "$tarball" -nt "$cache/.done" ]; then
	rm -rf "$cache"
	mkdir -p "$cache"
	tar -xJf "$tarball" -C "$cache" --strip-components=1 \
		"${files[@]/#/$name/}"
	touch "$cache/.done"
fi
echo "$cache"
