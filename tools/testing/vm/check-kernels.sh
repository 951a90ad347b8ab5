#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check-kernels: make check (the whole suite, DKMS included) on every
# kernel Debian ships without espintcp, one after the other, then a table
# kernel by kernel and one "N passed, N failed" line. Each row installs its
# kernel's image and headers if missing (scripts/deps.sh).
#
# Rows, named after Debian's metapackages, which pick the current upload:
#   6.1  6.1-cloud  6.1-rt               Debian 12's kernels
#   6.12 6.12-cloud 6.12-rt              Debian 12's 6.12 series
#   deb13                                Debian 13's kernel booting a
#                                        Debian 13 root (scripts/deb13-root.sh,
#                                        cached), modules built there with
#                                        its gcc; libreswan 5.x against the
#                                        host's 4.10 (--peer-root)
# ESPINTCP_KERNELS="6.1 6.12-rt ..." runs only these rows. The 6.12 rows run
# under single-threaded TCG unless ESPINTCP_TCG says otherwise (README,
# "6.12"). Every row's log is kept in the directory printed at the end.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top" || exit 1

. tools/testing/vm/lib.sh

all="6.1 6.1-cloud 6.1-rt 6.12 6.12-cloud 6.12-rt deb13"
rows=${ESPINTCP_KERNELS:-$all}
out=$(mktemp -d /tmp/espintcp-kernels.XXXXXX)

# The release a metapackage currently depends on, e.g. 6.1.0-57-rt-amd64.
release() {
	apt-cache depends --important "$1" 2>/dev/null |
		sed -n 's/.*Depends: linux-image-//p' | head -1
}

scripts/deps.sh || exit 1
table=()
total_p=0
total_f=0
total_s=0
for row in $rows; do
	case $row in
	6.1) meta=linux-image-amd64 ;;
	6.1-cloud) meta=linux-image-cloud-amd64 ;;
	6.1-rt) meta=linux-image-rt-amd64 ;;
	6.12) meta=linux-image-6.12-amd64 ;;
	6.12-cloud) meta=linux-image-6.12-cloud-amd64 ;;
	6.12-rt) meta=linux-image-6.12-rt-amd64 ;;
	deb13) meta= ;;
	*) echo "check-kernels: unknown row $row (rows: $all)" >&2; exit 1 ;;
	esac
	if [ "$row" = deb13 ]; then
		root=$(scripts/deb13-root.sh) || {
			table+=("$(printf '%-30s %6s %6s %6s %8s  %s' "$row" - 1 - - "no Debian 13 root: scripts/deb13-root.sh failed")")
			total_f=$((total_f + 1))
			continue
		}
		kver=$(ls -1 "$root/lib/modules")
		# Not KVER: that kernel is the root's, not the host's to install.
		rootenv=("ESPINTCP_ROOT=$root")
	else
		kver=$(release "$meta")
		rootenv=("KVER=$kver")
	fi
	if [ -z "$kver" ]; then
		table+=("$(printf '%-30s %6s %6s %6s %8s  %s' "$row" - 1 - - "$meta: not in the archive")")
		total_f=$((total_f + 1))
		continue
	fi
	tcg=${ESPINTCP_TCG:-multi}
	case $row in 6.12*|deb13) tcg=${ESPINTCP_TCG:-single} ;; esac

	echo "check-kernels: $row: ${rootenv[*]} make check (tcg $tcg), log $out/$row.log"
	start=$(date +%s)
	env "${rootenv[@]}" ESPINTCP_TCG="$tcg" make -s check >"$out/$row.log" 2>&1
	secs=$(($(date +%s) - start))
	line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$out/$row.log" | tail -1)
	read -r p _ f _ s _ <<<"${line:-0 passed, 1 failed, 0 skipped}"
	note=
	[ -n "$line" ] || note="no summary line: see the log"
	[ "$f" -eq 0 ] || note=${note:-$(grep -a -m3 -E '^not ok|FAIL' "$out/$row.log" | tr '\n' ' ' | cut -c1-60)}
	[ "$row" = deb13 ] && kver="$kver (trixie root)"
	table+=("$(printf '%-30s %6s %6s %6s %6dm%02d  %s' "$kver" "$p" "$f" "$s" \
		$((secs / 60)) $((secs % 60)) "$note")")
	total_p=$((total_p + p))
	total_f=$((total_f + f))
	total_s=$((total_s + s))
	make -s clean
done

echo
printf '%-30s %6s %6s %6s %8s  %s\n' kernel passed failed skip time note
printf '%s\n' "${table[@]}"
echo "check-kernels: logs in $out"
summary "$total_p" "$total_f" "$total_s"
[ "$total_f" -eq 0 ]
