#!/bin/bash
# tests/vm/fetch-udev.sh - Debian's udev package, of exactly the host's systemd version, for the
# systemd flavour's guest (its rules give the VFIO nodes to the service's user), unpacked in
# the cache; never installed on the host. Everything else the guest's systemd needs is taken
# from the host's own systemd package (mkinitrd.sh).
#
# The package comes from the host's own apt (its lists, as `apt-get download`), else from a
# private apt configuration for the host's release (lib.sh: vm_apt_setup, the archive's
# address read from the host's sources). Cached by version: a rerun is offline.
#
# Writes $P2PBUF_VM_CACHE/udev/current.env (UDEV_VER UDEV_ROOT) and prints the unpacked root.
#
# Environment knobs:
#   P2PBUF_VM_CACHE    cache directory (default /var/cache/p2pbuf-vm)
#   P2PBUF_VM_OFFLINE  1: do not touch the network, use the cached package
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

DEBS="$VM_CACHE/debs"

# try_download DIR VER: apt-get download udev=VER into DIR with the current apt configuration.
try_download() {
	(cd "$1" && apt-get download -q "udev=$2") >"$1/download.log" 2>&1
}

main() {
	local ver root deb tmp codename
	ver=$(dpkg-query -W -f '${Version}' systemd 2>/dev/null) ||
		vm_die "the host's systemd package is not installed (apt-get install systemd)"
	root="$VM_CACHE/udev/$ver/root"
	if [ ! -x "$root/bin/udevadm" ]; then
		mkdir -p "$DEBS"
		deb=$(find "$DEBS" -maxdepth 1 -name "udev_*_amd64.deb" -print | while read -r f; do
			[ "$(dpkg-deb -f "$f" Version)" = "$ver" ] && echo "$f"
		done | head -n 1)
		if [ -z "$deb" ]; then
			[ "${P2PBUF_VM_OFFLINE:-0}" = 1 ] && vm_die "udev $ver is not cached (offline)"
			tmp=$(mktemp -d "$DEBS/.udev.XXXXXX")
			if ! try_download "$tmp" "$ver"; then
				codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
				[ -n "$codename" ] || vm_die "cannot tell the host's release"
				vm_log "the host's apt has no udev $ver: trying a private configuration ($codename)"
				vm_apt_setup "$codename"
				apt-get update -q >"$VM_CACHE/apt/$codename/update.log" 2>&1 ||
					vm_die "apt-get update failed (see $VM_CACHE/apt/$codename/update.log)"
				try_download "$tmp" "$ver" ||
					vm_die "cannot download udev=$ver: $(tail -n 1 "$tmp/download.log")"
			fi
			deb=$(find "$tmp" -name 'udev_*.deb' -print -quit)
			mv "$deb" "$DEBS/"
			deb="$DEBS/$(basename "$deb")"
			rm -rf "$tmp"
		fi
		rm -rf "$root.tmp"
		mkdir -p "$root.tmp"
		dpkg-deb -x "$deb" "$root.tmp"
		rm -rf "$root"
		mv "$root.tmp" "$root"
		vm_log "udev $ver unpacked in $root"
	fi
	printf 'UDEV_VER=%q\nUDEV_ROOT=%q\n' "$ver" "$root" >"$VM_CACHE/udev/current.env"
	echo "$root"
}

vm_lock
main "$@"
