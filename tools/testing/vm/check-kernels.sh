#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# make check-kernels: make check (the whole suite, DKMS included) on every
# kernel Debian ships without espintcp, then a table kernel by kernel and one
# "N passed, N failed" line. Each row's kernel image and headers are
# installed first if missing (scripts/deps.sh), all before any row runs.
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
# "6.12"). ESPINTCP_LANES=N runs N rows at a time, each lane in its own copy
# of the tree (a single-threaded TCG guest keeps one core busy: 2 lanes on 2
# cores); the installation checks still take turns (dkms-check.sh's lock).
# Every row's log is kept in the directory printed at the end.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top" || exit 1

. tools/testing/vm/lib.sh

all="6.1 6.1-cloud 6.1-rt 6.12 6.12-cloud 6.12-rt deb13"
rows=${ESPINTCP_KERNELS:-$all}
lanes=${ESPINTCP_LANES:-1}
[[ $lanes =~ ^[1-9][0-9]*$ ]] || { echo "check-kernels: ESPINTCP_LANES=$lanes is not a count" >&2; exit 1; }
out=$(mktemp -d /tmp/espintcp-kernels.XXXXXX)

# The release a metapackage currently depends on, e.g. 6.1.0-57-rt-amd64.
release() {
	apt-cache depends --important "$1" 2>/dev/null |
		sed -n 's/.*Depends: linux-image-//p' | head -1
}

# A row's result, $out/ROW.res: kernel, passed, failed, skipped, seconds, note.
result() {
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >"$out/$1.res.tmp" &&
		mv "$out/$1.res.tmp" "$out/$1.res"
}

# prepare ROW: install what ROW needs now, so that no two rows run apt at
# once; $out/ROW.env gets the environment of its make check, or $out/ROW.res
# the reason it cannot run.
prepare() {
	local row=$1 meta root kver

	case $row in
	6.1) meta=linux-image-amd64 ;;
	6.1-cloud) meta=linux-image-cloud-amd64 ;;
	6.1-rt) meta=linux-image-rt-amd64 ;;
	6.12) meta=linux-image-6.12-amd64 ;;
	6.12-cloud) meta=linux-image-6.12-cloud-amd64 ;;
	6.12-rt) meta=linux-image-6.12-rt-amd64 ;;
	deb13)
		root=$(scripts/deb13-root.sh) || {
			result "$row" "$row" 0 1 0 0 "no Debian 13 root: scripts/deb13-root.sh failed"
			return
		}
		# Not KVER: that kernel is the root's, not the host's to install.
		echo "ESPINTCP_ROOT=$root" >"$out/$row.env"
		echo "$(ls -1 "$root/lib/modules") (trixie root)" >"$out/$row.kernel"
		return
		;;
	*) echo "check-kernels: unknown row $row (rows: $all)" >&2; exit 1 ;;
	esac
	kver=$(release "$meta")
	if [ -z "$kver" ]; then
		result "$row" "$row" 0 1 0 0 "$meta: not in the archive"
	elif ! KVER=$kver scripts/deps.sh; then
		result "$row" "$row" 0 1 0 0 "linux-image/headers-$kver did not install"
	else
		echo "KVER=$kver" >"$out/$row.env"
		echo "$kver" >"$out/$row.kernel"
	fi
}

# run_row ROW TREE: make check for ROW in TREE.
run_row() {
	local row=$1 tree=$2 tcg start secs line p f s note

	tcg=${ESPINTCP_TCG:-multi}
	case $row in 6.12*|deb13) tcg=${ESPINTCP_TCG:-single} ;; esac
	echo "check-kernels: $row: $(cat "$out/$row.env") make check (tcg $tcg), log $out/$row.log"
	start=$(date +%s)
	(cd "$tree" && env "$(cat "$out/$row.env")" ESPINTCP_TCG="$tcg" make -s check) >"$out/$row.log" 2>&1
	secs=$(($(date +%s) - start))
	line=$(grep -aE '^[0-9]+ passed, [0-9]+ failed' "$out/$row.log" | tail -1)
	read -r p _ f _ s _ <<<"${line:-0 passed, 1 failed, 0 skipped}"
	note=
	[ -n "$line" ] || note="no summary line: see the log"
	[ "$f" -eq 0 ] || note=${note:-$(grep -a -m3 -E '^not ok|FAIL' "$out/$row.log" | tr '\n' ' ' | cut -c1-60)}
	result "$row" "$(cat "$out/$row.kernel")" "$p" "$f" "$s" "$secs" "$note"
	(cd "$tree" && make -s clean)
	echo "check-kernels: $row: ${line:-no summary line} ($((secs / 60)) min)"
}

# lane TREE: run rows from the queue until it is empty.
next_row() {
	flock "$out/queue.lock" sh -c 'head -1 "$1"; sed -i 1d "$1"' sh "$out/queue"
}
lane() {
	local row

	while row=$(next_row) && [ -n "$row" ]; do
		run_row "$row" "$1"
	done
}

scripts/deps.sh || exit 1
# The kselftest harness, extracted once before the lanes build against it.
scripts/linux-source.sh >/dev/null || exit 1
for row in $rows; do
	prepare "$row"
done

# The longest rows (single-threaded TCG) first, so that lanes end together.
for row in $rows; do
	[ -f "$out/$row.env" ] || continue
	case $row in 6.12*|deb13) echo "$row" ;; esac
done >"$out/queue"
for row in $rows; do
	[ -f "$out/$row.env" ] || continue
	case $row in 6.12*|deb13) ;; *) echo "$row" ;; esac
done >>"$out/queue"

if [ "$lanes" -eq 1 ]; then
	lane "$top"
else
	# A tree per lane: each row builds modules and selftests in its tree.
	pids=()
	for i in $(seq "$lanes"); do
		mkdir "$out/tree-$i" && cp -a "$top/." "$out/tree-$i/" &&
			make -s -C "$out/tree-$i" clean || exit 1
		lane "$out/tree-$i" &
		pids+=($!)
	done
	wait "${pids[@]}"
	rm -rf "$out"/tree-*
fi

total_p=0
total_f=0
total_s=0
echo
printf '%-34s %6s %6s %6s %8s  %s\n' kernel passed failed skip time note
for row in $rows; do
	IFS=$'\t' read -r _ kver p f s secs note <"$out/$row.res" ||
		{ kver=$row p=0 f=1 s=0 secs=0 note="no result"; }
	printf '%-34s %6s %6s %6s %5dm%02d  %s\n' "$kver" "$p" "$f" "$s" \
		$((secs / 60)) $((secs % 60)) "$note"
	total_p=$((total_p + p))
	total_f=$((total_f + f))
	total_s=$((total_s + s))
done
echo "check-kernels: logs in $out"
summary "$total_p" "$total_f" "$total_s"
[ "$total_f" -eq 0 ]
