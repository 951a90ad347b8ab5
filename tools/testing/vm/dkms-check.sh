#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Part of make check: install for real. Builds the espintcp-dkms package and
# checks its contents; installs with DKMS for the VM's kernel, checks that
# depmod chooses our esp4/esp6 over the stock ones, boots the VM and brings a
# tunnel up over TCP with every module loaded on demand; removes the
# installation and checks that the stock modules are chosen again.
# Prints "DKMS-RESULT <passed> <failed>" last.
#
# With ESPINTCP_ROOT=DIR (make check's Debian 13 row) the installation is
# DIR's, with DIR's own dkms, dpkg and kernel headers, and the VM boots DIR.

set -uo pipefail

top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top" || exit 1
kver=${KVER:-$(scripts/kver.sh)}
ver=$(sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
notok() { fail=$((fail + 1)); echo "not ok - $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else notok "$what"; fi; }

root=${ESPINTCP_ROOT:+$(cd "$ESPINTCP_ROOT" && pwd)}
vmargs=()
# in_root CMD...: CMD where the kernel's modules are installed: here, or in
# the other root, where the paths below $root are the same without it.
in_root() {
	if [ -n "$root" ]; then
		$sudo scripts/in-root.sh "$root" "$@"
	else
		"$@"
	fi
}
# What needs root privileges there: in_root's own are enough.
isudo=$sudo
if [ -n "$root" ]; then
	kver=$(ls -1 "$root/lib/modules")
	vmargs=(--root "$root")
	isudo=
fi

# DKMS's tree, dpkg's database and the installed package are the machine's
# (or the other root's): one installation check at a time there, e.g. in
# make check-kernels' lanes, until this script and its clean-up are done.
exec 9>"$root/tmp/espintcp-dkms.lock"
flock 9

# Under the other root's /tmp: tmp here is itmp there.
tmp=$(mktemp -d "$root/tmp/espintcp-dkms.XXXXXX")
itmp=${tmp#"$root"}
trap 'in_root scripts/dkms.sh remove >/dev/null 2>&1
      in_root $isudo dpkg --purge espintcp-dkms >/dev/null 2>&1; rm -rf "$tmp"' EXIT

# The package.
deb_ok() {
	local deb=$tmp/espintcp-dkms_${ver}_all.deb f list

	DEB_OUT=$tmp scripts/deb.sh >"$tmp/deb.log" 2>&1 || { cat "$tmp/deb.log"; return 1; }
	list=$(dpkg -c "$deb" | awk '{ print $6 }')
	for f in dkms.conf Kbuild scripts/compat.mk include/net/espintcp.h \
		 net/xfrm/espintcp_ulp.c net/xfrm/esp_state.c net/ipv4/esp4.c \
		 net/ipv6/esp6.c; do
		grep -qx "./usr/src/espintcp-$ver/$f" <<<"$list" ||
			{ echo "# $f missing from the package"; return 1; }
	done
	! grep -qE '\.(o|ko|cmd)$' <<<"$list" || { echo "# build products packaged"; return 1; }
	dpkg-deb -I "$deb" postinst >/dev/null || { echo "# no postinst"; return 1; }
	dpkg-deb -x "$deb" "$tmp/x" &&
		grep -qx "PACKAGE_VERSION=\"$ver\"" "$tmp/x/usr/src/espintcp-$ver/dkms.conf"
}
check "espintcp-dkms .deb builds with the sources and a versioned dkms.conf" deb_ok

chosen() {	# MODULE PATTERN
	local f

	f=$(in_root modinfo -k "$kver" -n "$1" 2>/dev/null) || return 1
	echo "# modprobe $1 -> $f"
	[[ $f == $2 ]]
}

if in_root scripts/dkms.sh install "$kver" >"$tmp/dkms.log" 2>&1; then
	ok "dkms install for $kver"
	check "depmod chooses our espintcp" chosen espintcp "*/updates/*"
	check "depmod chooses our esp4 over the stock one" chosen esp4 "*/updates/*"
	check "depmod chooses our esp6 over the stock one" chosen esp6 "*/updates/*"
	tools/testing/vm/run-vm.sh --timeout 900 --out "$tmp/vm" "${vmargs[@]}" -- \
		env ESPINTCP_AUTOLOAD=1 tools/testing/vm/guest-demo.sh >"$tmp/vm.log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ] && grep -q "DEMO OK" "$tmp/vm.log"; then
		ok "installed: ULP and ESP types load on demand, ESP over TCP works"
	else
		notok "installed: ULP and ESP types load on demand, ESP over TCP works"
		echo "# run-vm exit $rc, $(wc -l <"$tmp/vm.log") lines of output"
		# The demo's own lines first; the console's when it printed none.
		if grep -a -q -v '^\[' "$tmp/vm.log"; then
			grep -a -v '^\[' "$tmp/vm.log" | tail -30
		else
			tail -40 "$tmp/vm.log"
		fi | sed 's/^/# /'
	fi
else
	notok "dkms install for $kver"
	sed 's/^/# /' "$tmp/dkms.log"
fi


check "dkms remove" in_root scripts/dkms.sh remove
stock_again() {
	chosen esp4 "*/kernel/net/ipv4/esp4.ko*" &&
		chosen esp6 "*/kernel/net/ipv6/esp6.ko*" &&
		! in_root modinfo -k "$kver" -n espintcp >/dev/null 2>&1
}
check "after dkms remove the stock esp4/esp6 are chosen, espintcp is gone" stock_again

# A kernel built with its own espintcp: DKMS must not build for it. Its
# headers are played by this kernel's with CONFIG_INET_ESPINTCP=m in .config,
# under a release name of its own so that DKMS's state for the real kernel
# is not touched.
own_espintcp_skipped() {
	local fake=$itmp/own-espintcp own=${kver%-*}-ownespintcp out rc

	# shellcheck disable=SC2016 # expanded by the inner shell
	in_root bash -c '
		kb=/lib/modules/$1/build fake=$2
		mkdir -p "$fake" || exit 1
		for f in "$kb"/* "$kb"/.[!.]*; do
			ln -s "$(readlink -f "$f")" "$fake/${f##*/}"
		done
		rm -f "$fake/.config"
		sed "s/^# CONFIG_INET_ESPINTCP is not set$/CONFIG_INET_ESPINTCP=m/" \
			"$kb/.config" > "$fake/.config"
		grep -qx CONFIG_INET_ESPINTCP=m "$fake/.config" || exit 1
		# dkms 3.2 (Debian 13) reads include/config/auto.conf first.
		rm "$fake/include"
		mkdir -p "$fake/include/config"
		for f in "$kb"/include/*; do
			[ "${f##*/}" = config ] ||
				ln -s "$(readlink -f "$f")" "$fake/include/${f##*/}"
		done
		for f in "$kb"/include/config/*; do
			ln -s "$(readlink -f "$f")" "$fake/include/config/${f##*/}"
		done
		rm -f "$fake/include/config/auto.conf"
		{ grep -v "^CONFIG_INET_ESPINTCP=" "$kb/include/config/auto.conf"
		  echo CONFIG_INET_ESPINTCP=m; } > "$fake/include/config/auto.conf"' \
		sh "$kver" "$fake" || return 1
	in_root scripts/dkms.sh add >/dev/null || return 1
	out=$(in_root $isudo dkms build -m espintcp -v "$ver" -k "$own" \
		--kernelsourcedir "$fake" 2>&1)
	rc=$?
	echo "# dkms build: exit $rc: $(tail -2 <<<"$out" | tr '\n' ' ')"
	in_root scripts/dkms.sh remove >/dev/null || return 1
	[ "$rc" -eq 77 ] && grep -q BUILD_EXCLUSIVE <<<"$out"
}
check "dkms skips a kernel that has its own espintcp" own_espintcp_skipped

# The package: its postinst builds through DKMS, purging removes it all.
deb=$tmp/espintcp-dkms_${ver}_all.deb
if [ -f "$deb" ] && in_root $isudo dpkg -i "$itmp/${deb##*/}" >"$tmp/dpkg.log" 2>&1; then
	ok "espintcp-dkms installs"
	check "the package installed our esp4 for $kver" chosen esp4 "*/updates/*"
	check "the package installed espintcp for $kver" chosen espintcp "*/updates/*"
	check "espintcp-dkms purges" eval 'in_root $isudo dpkg --purge espintcp-dkms >>"$tmp/dpkg.log" 2>&1'
	check "after purging the stock esp4/esp6 are chosen, espintcp is gone" stock_again
	[ ! -d "$root/usr/src/espintcp-$ver" ] || notok "purging left /usr/src/espintcp-$ver"
else
	notok "espintcp-dkms installs"
	sed 's/^/# /' "$tmp/dpkg.log" 2>/dev/null | tail -20
	in_root $isudo dpkg --purge espintcp-dkms >/dev/null 2>&1
fi
echo "DKMS-RESULT $pass $fail"
