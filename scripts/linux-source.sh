#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Extract, once, the few files we use from Debian's linux-source-6.1:
# checkpatch.pl and its data, and the kselftest harness. Prints the
# directory that mirrors the kernel tree.

set -euo pipefail

tarball=$(ls -1 /usr/src/linux-source-*.tar.xz 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$tarball" ]; then
	"$(dirname "$0")/deps.sh" >&2
	tarball=$(ls -1 /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
fi
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
