#!/bin/bash
# tests/vm/fetch-kernel.sh - fetch Debian's own amd64 kernel (>= 6.19, for
# VFIO_DEVICE_FEATURE_DMA_BUF) for the QEMU guest, without installing it on the host.
#
# A private apt configuration per suite (see lib.sh: vm_apt_setup) is updated; the kernel
# version is resolved at run time from that suite's linux-image-amd64 dependency; the split
# packages (linux-image-KVER, linux-binary-KVER, linux-modules-KVER, linux-base-KVER) are
# downloaded with `apt-get download` and unpacked with `dpkg-deb -x`. Everything is cached, so
# a rerun is offline: when apt-get update or the download fails and a kernel was unpacked
# before, that kernel is used.
#
# Writes $P2PBUF_VM_CACHE/kernel/current.env (KVER KPKGVER KSUITE KROOT VMLINUZ MODDIR) and
# prints the chosen version and paths on stdout.
#
# Environment knobs:
#   P2PBUF_VM_CACHE    cache directory (default /var/cache/p2pbuf-vm)
#   P2PBUF_VM_SUITES   suites to try in order (default "unstable trixie-backports testing")
#   P2PBUF_VM_MIN      minimum kernel version (default 6.19)
#   P2PBUF_VM_KVER     pin a kernel ABI name (e.g. 7.2.13+deb14-amd64) instead of the newest
#   P2PBUF_VM_OFFLINE  1: do not touch the network, use the cached kernel
#   P2PBUF_VM_STOCK_ONLY 1: accept a kernel whose headers/kbuild/source (needed by
#                      build-iommufd.sh) are not in the suite
#   P2PBUF_VM_KEEP_OLD 1: keep the cache of kernels other than the chosen one (default: prune)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

SUITES=${P2PBUF_VM_SUITES:-unstable trixie-backports testing}
MIN=${P2PBUF_VM_MIN:-6.19}
PIN=${P2PBUF_VM_KVER:-}
OFFLINE=${P2PBUF_VM_OFFLINE:-0}
NEED_BUILD=1
[ "${P2PBUF_VM_STOCK_ONLY:-0}" = 1 ] && NEED_BUILD=0
DEBS="$VM_CACHE/debs"

# resolve_suite: print "KVER PKGVER" for the current APT_CONFIG's linux-image-amd64.
resolve_suite() {
	local ver kver
	if [ -n "$PIN" ]; then
		ver=$(apt-cache show "linux-image-$PIN" 2>/dev/null |
			sed -n 's/^Version: //p' | sort -V | tail -n 1)
		[ -n "$ver" ] || return 1
		echo "$PIN $ver"
		return 0
	fi
	ver=$(apt-cache policy linux-image-amd64 | sed -n 's/^ *Candidate: //p')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || return 1
	kver=$(apt-cache show "linux-image-amd64=$ver" | sed -n 's/^Depends: //p' |
		tr ',' '\n' | sed -n 's/^ *linux-image-\([0-9][^ ]*\) .*/\1/p' | head -n 1)
	[ -n "$kver" ] || return 1
	echo "$kver $ver"
}

# kernel_packages KVER PKGVER: print the packages that make up the kernel in this suite.
# The image package is a metapackage since Debian split it; older suites ship one package.
kernel_packages() {
	local kver=$1 ver=$2 p
	for p in linux-image linux-binary linux-modules linux-base; do
		if apt-cache show "$p-$kver=$ver" >/dev/null 2>&1; then
			echo "$p-$kver"
		fi
	done
}

# build_packages_present KVER PKGVER: can build-iommufd.sh get what it needs for this kernel?
build_packages_present() {
	local abi=${1%-amd64} xy p
	xy=$(echo "$1" | cut -d. -f1-2)
	for p in "linux-headers-$1" "linux-headers-$abi-common" "linux-kbuild-$abi" \
		"linux-source-$xy"; do
		apt-cache show "$p=$2" >/dev/null 2>&1 || return 1
	done
}

# download PKGVER PKG...: apt-get download into $DEBS, skipping what is already there.
download() {
	local ver=$1 p want=()
	shift
	mkdir -p "$DEBS"
	for p in "$@"; do
		if ! compgen -G "$DEBS/${p}_${ver//:/%3a}_*.deb" >/dev/null; then
			want+=("$p=$ver")
		fi
	done
	[ ${#want[@]} -eq 0 ] && return 0
	vm_log "downloading ${want[*]}"
	(cd "$DEBS" && apt-get -q download "${want[@]}")
}

# unpack KVER PKGVER SUITE PKG...: dpkg-deb -x the packages into $VM_CACHE/kernel/KVER/root
# and write the kernel record.
unpack() {
	local kver=$1 ver=$2 suite=$3 p dir="$VM_CACHE/kernel/$1" root vmlinuz moddir
	shift 3
	root="$dir/root"
	if [ ! -e "$dir/unpacked" ] || [ "$(cat "$dir/unpacked")" != "$ver" ]; then
		rm -rf "$dir"
		mkdir -p "$root"
		for p in "$@"; do
			vm_log "unpacking $p"
			dpkg-deb -x "$DEBS/${p}_${ver//:/%3a}_amd64.deb" "$root" ||
				vm_die "dpkg-deb -x $p failed"
		done
		# depmod -b looks in BASE/lib/modules; Debian ships modules in /usr/lib/modules.
		[ -e "$root/lib" ] || ln -s usr/lib "$root/lib"
		# modules.dep is made by the package's postinst, which we never run.
		vm_log "depmod $kver"
		depmod -b "$root" "$kver" || vm_die "depmod -b $root $kver failed"
		echo "$ver" >"$dir/unpacked"
	fi
	moddir="$root/lib/modules/$kver"
	vmlinuz="$moddir/vmlinuz"
	[ -e "$vmlinuz" ] || vmlinuz="$root/boot/vmlinuz-$kver"
	[ -e "$vmlinuz" ] || vm_die "no vmlinuz in the packages of $kver"
	[ -e "$moddir/modules.dep" ] || vm_die "no modules.dep in the packages of $kver"
	{
		printf 'KVER=%q\nKPKGVER=%q\nKSUITE=%q\n' "$kver" "$ver" "$suite"
		printf 'KROOT=%q\nVMLINUZ=%q\nMODDIR=%q\n' "$root" "$vmlinuz" "$moddir"
	} >"$dir/kernel.env"
	cp "$dir/kernel.env" "$VM_CACHE/kernel/current.env.tmp"
	mv "$VM_CACHE/kernel/current.env.tmp" "$VM_CACHE/kernel/current.env"
}

# try_suite SUITE: update, resolve, download and unpack from one suite. Returns 1 when the
# suite cannot give a usable kernel (the caller tries the next one), 2 on a network failure.
try_suite() {
	local suite=$1 kver ver pkgs
	vm_apt_setup "$suite"
	vm_log "apt-get update ($suite, private configuration)"
	if ! apt-get -q update >"$VM_CACHE/apt/$suite/update.log" 2>&1 ||
		grep -q '^\(W\|E\): Failed to fetch' "$VM_CACHE/apt/$suite/update.log"; then
		tail -n 5 "$VM_CACHE/apt/$suite/update.log" >&2
		return 2
	fi
	read -r kver ver < <(resolve_suite) || { vm_log "$suite: no linux-image-amd64"; return 1; }
	if ! dpkg --compare-versions "$ver" ge "$MIN"; then
		vm_log "$suite: kernel $ver is older than $MIN"
		return 1
	fi
	mapfile -t pkgs < <(kernel_packages "$kver" "$ver")
	vm_log "$suite: linux-image-amd64 -> $kver ($ver): ${pkgs[*]}"
	if [ "$NEED_BUILD" = 1 ] && ! build_packages_present "$kver" "$ver"; then
		vm_log "$suite: headers, kbuild or source of $ver missing: build-iommufd.sh would fail"
		return 1
	fi
	download "$ver" "${pkgs[@]}" || return 2
	unpack "$kver" "$ver" "$suite" "${pkgs[@]}"
}

# use_cache: fall back to the kernel unpacked by an earlier run.
use_cache() {
	local f="$VM_CACHE/kernel/current.env"
	[ -n "$PIN" ] && f="$VM_CACHE/kernel/$PIN/kernel.env"
	[ -r "$f" ] || vm_die "network unavailable and no cached kernel in $VM_CACHE"
	vm_log "using the cached kernel ($f)"
	if [ "$f" != "$VM_CACHE/kernel/current.env" ]; then
		cp "$f" "$VM_CACHE/kernel/current.env"
	fi
}

# prune: drop the packages, unpacked trees and module builds of kernels other than the current
# one (a kernel is ~700 MB of cache once its modules are built).
# shellcheck disable=SC2153 # KVER and friends come from vm_kernel_load
prune() {
	local d f
	for d in "$VM_CACHE"/kernel/*/ "$VM_CACHE"/iommufd/*/; do
		[ -d "$d" ] || continue
		[ "$(basename "$d")" = "$KVER" ] && continue
		vm_log "pruning $d"
		rm -rf "$d"
	done
	for f in "$VM_CACHE"/debs/*.deb; do
		[ -e "$f" ] || continue
		case $f in *"_${KPKGVER//:/%3a}_"*) continue ;; esac
		rm -f "$f"
	done
}

# shellcheck disable=SC2153 # KVER and friends come from vm_kernel_load
main() {
	local t0 rc suite done=0 netfail=0
	t0=$(vm_now)
	vm_lock
	if [ "$OFFLINE" = 1 ]; then
		use_cache
		done=1
	fi
	for suite in $SUITES; do
		[ "$done" = 1 ] && break
		rc=0
		try_suite "$suite" || rc=$?
		case $rc in
		0) done=1 ;;
		2)
			netfail=1
			# The archive is unreachable: a cached kernel is better than more timeouts.
			[ -r "$VM_CACHE/kernel/current.env" ] && break
			;;
		esac
	done
	if [ "$done" = 0 ]; then
		[ "$netfail" = 1 ] || vm_log "no suite of '$SUITES' offers a kernel >= $MIN"
		use_cache
	fi
	vm_kernel_load
	[ "${P2PBUF_VM_KEEP_OLD:-0}" = 1 ] || prune
	vm_log "fetch-kernel: $(vm_elapsed "$t0") s"
	echo "kernel:  $KVER ($KPKGVER from $KSUITE)"
	echo "vmlinuz: $VMLINUZ"
	echo "modules: $MODDIR"
}

main "$@"
