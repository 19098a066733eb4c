#!/bin/bash
# tests/vm/mkinitrd.sh - build the guest's initramfs (gzip'd newc cpio) for one kernel flavour.
#
# Contents:
#   /bin/busybox (busybox-static) + one symlink per applet (the "busybox" entry itself is
#     skipped: a self-link makes the kernel fail to run /init with error -40, ELOOP);
#   every --bin program in /usr/local/bin with its ldd closure (dynamic loader included) at the
#     host paths, every --lib library in /usr/local/lib (and in the ldd search path);
#   every --file SRC[:DEST] (DEST defaults to /test/files/BASENAME);
#   the guest test script as /test/main.sh, guest-lib.sh as /test/guest-lib.sh;
#   /lib/modules/KVER: the modules.dep closure of vfio, vfio_iommu_type1, vfio-pci-core,
#     vfio-pci, irqbypass, vgem (a fence source for cases.sh's case 15: drm and
#     drm_shmem_helper come along) (+ --module NAME), decompressed to .ko and depmod -b'd; in the
#     iommufd flavour the modules rebuilt by build-iommufd.sh (iommufd, vfio, ...) replace
#     Debian's;
#   /etc/p2pbuf-vm/flavour (stock|iommufd|systemd), /etc/passwd, /etc/group, and /init.
#
# The systemd flavour (booted with rdinit=/lib/systemd/systemd systemd.unit=p2pbuf-vm.target)
# has the iommufd flavour's modules, a merged-/usr layout like the host's, and besides:
#   the host's systemd 252 (PID 1, journald, systemctl, journalctl, sysusers, tmpfiles,
#     systemd-analyze, ...) with its private libraries, the host's unit files (no .wants/:
#     only journald and udev are enabled), udev of the same version (fetch-udev.sh);
#   the tree of --root DIR (`make install DESTDIR=DIR`) as it is: units, sysusers.d,
#     tmpfiles.d, udev rules, the policy, programs and libraries; a --bin program that the
#     tree installs too is left out;
#   p2pbuf-vm.target, which starts p2pbuf-vm-test.service: the guest script on the serial
#     console, then vm_finish (guest-lib.sh);
#   no p2pbuf group or p2pbufd user in /etc/group and /etc/passwd: systemd-sysusers makes them.
#
# Usage: mkinitrd.sh --flavour stock|iommufd|systemd --script GUEST.sh --output INITRD.cpio.gz
#                    [--bin PATH]... [--lib PATH]... [--file SRC[:DEST]]... [--module NAME]...
#                    [--root DIR]
#
# Environment knobs:
#   P2PBUF_VM_CACHE    cache directory (default /var/cache/p2pbuf-vm), holds the kernel
#   P2PBUF_VM_BUSYBOX  static busybox to use (default: busybox in PATH, must be static)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

BASE_MODULES="vfio vfio_iommu_type1 vfio-pci-core vfio-pci irqbypass vgem"
IOMMUFD_MODULES="iommufd vfio vfio_iommu_type1 vfio-pci-core vfio-pci"

usage() {
	sed -n 's/^# Usage: /usage: /p; /^#  *\[--bin/p' "$0" >&2
	exit 2
}

# copy_file SRC DEST: copy into the staging root, following symlinks, creating parents.
copy_file() {
	mkdir -p "$ROOT$(dirname "$2")"
	cp -L "$1" "$ROOT$2"
}

# copy_closure PROGRAM: the program's shared libraries and dynamic loader, at their host paths.
copy_closure() {
	local lib out
	if ! out=$(LD_LIBRARY_PATH="$LIBPATH" ldd "$1" 2>&1); then
		# "not a dynamic executable": static, nothing to add.
		return 0
	fi
	if grep -q 'not found' <<<"$out"; then
		vm_die "$1: unresolved libraries: $(grep 'not found' <<<"$out" | tr '\n' ' ')"
	fi
	while read -r lib; do
		[ -e "$ROOT$lib" ] || copy_file "$lib" "$lib"
	done < <(sed -n -e 's/.*=> \(\/[^ ]*\) (0x.*/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' \
		<<<"$out")
}

add_busybox() {
	local bb=${P2PBUF_VM_BUSYBOX:-$(command -v busybox || true)} applet
	[ -n "$bb" ] || vm_die "busybox not found (apt-get install busybox-static)"
	if ldd "$bb" >/dev/null 2>&1; then
		vm_die "$bb is dynamically linked: install busybox-static"
	fi
	copy_file "$bb" /bin/busybox
	while read -r applet; do
		case ${applet##*/} in
		busybox | linuxrc) continue ;;
		esac
		mkdir -p "$ROOT/$(dirname "$applet")"
		[ -e "$ROOT/$applet" ] || ln -s /bin/busybox "$ROOT/$applet"
	done < <("$bb" --list-full)
}

# unpack_module SRC DEST: a .ko, .ko.xz, .ko.zst or .ko.gz as a plain .ko.
unpack_module() {
	mkdir -p "$(dirname "$2")"
	case $1 in
	*.ko.xz) xz -dc "$1" >"$2" ;;
	*.ko.zst) zstd -q -dc "$1" >"$2" ;;
	*.ko.gz) gzip -dc "$1" >"$2" ;;
	*) cp "$1" "$2" ;;
	esac
}

# shellcheck disable=SC2153 # KROOT, KVER, MODDIR come from vm_kernel_load
# module_file NAME: path of NAME (dashes and underscores are the same) in the flavour's set.
module_file() {
	local n=${1//-/_} k
	if [ "$FLAVOUR" != stock ]; then
		for k in $IOMMUFD_MODULES; do
			if [ "${k//-/_}" = "$n" ]; then
				echo "$IOMMUFD_DIR/$k.ko"
				return 0
			fi
		done
	fi
	modinfo -b "$KROOT" -k "$KVER" -F filename "$1" 2>/dev/null | head -n 1
}

# add_modules NAME...: the dependency closure, decompressed, then depmod.
add_modules() {
	local todo=("$@") seen=" " n f rel dst d dep
	local mdir="$ROOT/lib/modules/$KVER"
	mkdir -p "$mdir"
	while [ ${#todo[@]} -gt 0 ]; do
		n=${todo[0]//-/_}
		todo=("${todo[@]:1}")
		case $seen in *" $n "*) continue ;; esac
		seen="$seen$n "
		f=$(module_file "$n")
		if [ -z "$f" ] || [ ! -e "$f" ]; then
			vm_die "module $n not found for $KVER/$FLAVOUR"
		fi
		case $f in
		"$MODDIR"/*) rel=${f#"$MODDIR"/} ;;
		*) rel="updates/p2pbuf/$(basename "$f")" ;;
		esac
		dst="$mdir/${rel%.ko*}.ko"
		unpack_module "$f" "$dst"
		dep=$(modinfo -F depends "$dst")
		for d in ${dep//,/ }; do
			todo+=("$d")
		done
	done
	cp "$MODDIR"/modules.order "$MODDIR"/modules.builtin "$MODDIR"/modules.builtin.modinfo "$mdir/"
	# Built-in modules must be known to depmod so that modprobe treats them as present.
	depmod -b "$ROOT" "$KVER"
	vm_log "modules ($FLAVOUR):$seen"
}

add_etc() {
	mkdir -p "$ROOT/etc/p2pbuf-vm"
	echo "$FLAVOUR" >"$ROOT/etc/p2pbuf-vm/flavour"
	echo "$KVER" >"$ROOT/etc/p2pbuf-vm/kernel"
	cat >"$ROOT/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/bin/sh
		tester:x:1000:1000:unprivileged client:/tmp:/bin/sh
		other:x:1001:1001:a second client:/tmp:/bin/sh
		nobody:x:65534:65534:nobody:/nonexistent:/bin/false
	EOF
	cat >"$ROOT/etc/group" <<-'EOF'
		root:x:0:
		tester:x:1000:
		other:x:1001:
		nogroup:x:65534:
	EOF
	if [ "$FLAVOUR" = systemd ]; then
		echo 'systemd-journal:x:101:' >>"$ROOT/etc/group"
	else
		echo 'p2pbuf:x:990:990:p2pbufd:/run/p2pbuf:/bin/false' >>"$ROOT/etc/passwd"
		printf 'p2pbuf:x:990:tester\np2pbuf-admin:x:991:\n' >>"$ROOT/etc/group"
	fi
	printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files\n' \
		>"$ROOT/etc/nsswitch.conf"
	printf '127.0.0.1 localhost\n' >"$ROOT/etc/hosts"
	mkdir -p "$ROOT/root" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT/tmp" "$ROOT/run" \
		"$ROOT/var"
	ln -sf /run "$ROOT/var/run"
}

# add_ld_cache: dynamic programs were copied with their libraries at the host's paths
# (/lib/x86_64-linux-gnu, ...); without an ld.so.cache the loader would only look in /lib and
# /usr/lib. NSS's files module comes along for getpwnam()/getgrnam().
add_ld_cache() {
	local d nss
	[ -e "$ROOT/lib64" ] || [ -n "$(find "$ROOT" -name 'ld-linux*' -print -quit)" ] || return 0
	for nss in /lib/x86_64-linux-gnu/libnss_files.so.2 /usr/lib/x86_64-linux-gnu/libnss_files.so.2; do
		if [ -e "$nss" ]; then
			[ -e "$ROOT$nss" ] || copy_file "$nss" "$nss"
			break
		fi
	done
	for d in /usr/local/lib /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
		echo "$d"
	done >"$ROOT/etc/ld.so.conf"
	ldconfig -r "$ROOT"
}

add_init() {
	cat >"$ROOT/init" <<-'EOF'
		#!/bin/sh
		# /init of the p2pbufd VM tests (written by tests/vm/mkinitrd.sh).
		export PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin
		export HOME=/root LD_LIBRARY_PATH=/usr/local/lib
		mount -t proc proc /proc
		mount -t sysfs sysfs /sys
		mount -t devtmpfs devtmpfs /dev
		mkdir -p /dev/pts /dev/shm
		mount -t devpts devpts /dev/pts
		mount -t tmpfs tmpfs /dev/shm
		mount -t tmpfs tmpfs /tmp
		mount -t tmpfs tmpfs /run
		[ -d /sys/kernel/debug ] && mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
		ip link set lo up 2>/dev/null
		hostname p2pbuf-vm
	EOF
	init_common >>"$ROOT/init"
	chmod 755 "$ROOT/init"
}

# init_common: how /init (and the systemd flavour's runner) end: the flavour in the
# environment, the start marker, the guest script, vm_finish.
init_common() {
	cat <<-'EOF'
		P2PBUF_VM_FLAVOUR=$(cat /etc/p2pbuf-vm/flavour)
		P2PBUF_VM_KVER=$(uname -r)
		export P2PBUF_VM_FLAVOUR P2PBUF_VM_KVER
		# Kernel messages would interleave with result lines on the console; the test
		# library dumps dmesg at the end when something failed.
		echo "${P2PBUF_VM_PRINTK:-1}" >/proc/sys/kernel/printk
		mkdir -p /run/p2pbuf-vm
		dmesg | wc -l >/run/p2pbuf-vm/dmesg-start
		echo "P2PBUF-VM-START flavour=$P2PBUF_VM_FLAVOUR kernel=$P2PBUF_VM_KVER"
		cd /test || exit 1
		sh /test/main.sh </dev/null
		rc=$?
		. /test/guest-lib.sh
		vm_finish "$rc"
	EOF
}

# ---- the systemd flavour ----

# Programs of the host's systemd package the guest uses, and udev's (from fetch-udev.sh).
SYSTEMD_PROGRAMS="/lib/systemd/systemd /lib/systemd/systemd-journald /lib/systemd/systemd-shutdown
/bin/systemctl /bin/journalctl /bin/systemd-sysusers /bin/systemd-tmpfiles /bin/systemd-notify
/usr/bin/systemd-analyze /usr/bin/systemd-run /usr/bin/systemd-socket-activate"
# What is enabled: journald and udev, nothing else (sysusers and tmpfiles are the test's to run).
SYSTEMD_WANTS="sysinit.target.wants/systemd-journald.service
sysinit.target.wants/systemd-udevd.service sysinit.target.wants/systemd-udev-trigger.service
sockets.target.wants/systemd-journald.socket sockets.target.wants/systemd-journald-dev-log.socket
sockets.target.wants/systemd-udevd-control.socket sockets.target.wants/systemd-udevd-kernel.socket"

# add_merged_usr: /bin, /sbin, /lib, /lib64 as links into /usr, as on the host (Debian 12).
add_merged_usr() {
	local d
	for d in bin sbin lib lib64; do
		mkdir -p "$ROOT/usr/$d"
		ln -s "usr/$d" "$ROOT/$d"
	done
}

# copy_program PATH: a program (a symbolic link stays one) and the ldd closure of its target.
copy_program() {
	if [ -L "$2" ]; then
		mkdir -p "$ROOT$(dirname "$1")"
		cp -P "$2" "$ROOT$1"
	else
		copy_file "$2" "$1"
	fi
	copy_closure "$2"
}

add_systemd() {
	local p u unitdir="$ROOT/lib/systemd/system"
	[ -r "$VM_CACHE/udev/current.env" ] || vm_die "no udev unpacked: run tests/vm/fetch-udev.sh"
	# shellcheck source=/dev/null
	. "$VM_CACHE/udev/current.env"
	for p in $SYSTEMD_PROGRAMS; do
		[ -x "$p" ] || vm_die "$p missing: the host's systemd package is needed"
		copy_program "$p" "$p"
	done
	copy_program /bin/udevadm "$UDEV_ROOT/bin/udevadm"
	copy_program /lib/systemd/systemd-udevd "$UDEV_ROOT/lib/systemd/systemd-udevd"
	mkdir -p "$unitdir" "$ROOT/lib/udev/rules.d" "$ROOT/etc/udev" "$ROOT/etc/systemd/system"
	find /lib/systemd/system "$UDEV_ROOT/lib/systemd/system" -maxdepth 1 -type f \
		-exec cp {} "$unitdir/" \;
	cp "$UDEV_ROOT"/lib/udev/rules.d/*.rules /lib/udev/rules.d/*.rules "$ROOT/lib/udev/rules.d/"
	cp "$UDEV_ROOT/etc/udev/udev.conf" "$ROOT/etc/udev/"
	for u in $SYSTEMD_WANTS; do
		mkdir -p "$unitdir/$(dirname "$u")"
		ln -s "../$(basename "$u")" "$unitdir/$u"
	done
	cp /etc/os-release "$ROOT/usr/lib/os-release"
	ln -s ../usr/lib/os-release "$ROOT/etc/os-release"
	: >"$ROOT/etc/machine-id"
	mkdir -p "$ROOT/var/tmp" "$ROOT/var/log" "$ROOT/var/lib" "$ROOT/mnt" "$ROOT/tmp"
	chmod 1777 "$ROOT/var/tmp" "$ROOT/tmp"
	add_systemd_runner
}

# add_systemd_runner: the unit that runs the guest script once the system is up. Type=exec,
# since a oneshot would keep the boot from finishing; vm_finish powers off.
add_systemd_runner() {
	local unitdir="$ROOT/lib/systemd/system"
	cat >"$unitdir/p2pbuf-vm.target" <<-'EOF'
		[Unit]
		Description=p2pbufd VM tests
		Requires=basic.target p2pbuf-vm-test.service
		After=basic.target
		AllowIsolate=yes
	EOF
	cat >"$unitdir/p2pbuf-vm-test.service" <<-'EOF'
		[Unit]
		Description=p2pbufd VM test cases
		Requires=basic.target
		After=basic.target systemd-journald.service systemd-udev-trigger.service

		[Service]
		Type=exec
		ExecStart=/bin/sh /test/systemd-run.sh
		StandardInput=null
		StandardOutput=tty
		StandardError=inherit
		TTYPath=/dev/ttyS0
		TTYReset=no
		TTYVHangup=no
	EOF
	cat >"$ROOT/test/systemd-run.sh" <<-'EOF'
		#!/bin/sh
		# The systemd flavour's /init: run by p2pbuf-vm-test.service (written by mkinitrd.sh).
		export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
		# P2PBUF_* knobs given with run-all.sh --append reach the script as /init's do.
		for _w in $(cat /proc/cmdline); do
			case $_w in P2PBUF_*=*) export "${_w?}" ;; esac
		done
	EOF
	init_common >>"$ROOT/test/systemd-run.sh"
}

# add_root_tree DIR: the project as `make install DESTDIR=DIR` installed it, and the libraries
# its programs need.
add_root_tree() {
	local f
	# Into the merged /usr: DIR/lib/... lands in usr/lib through the guest's /lib link.
	tar -C "$1" -cf - . | tar -C "$ROOT" -xf - --keep-directory-symlink --no-same-owner
	while IFS= read -r f; do
		case $(head -c 4 "$f" | od -An -c | tr -d ' ') in
		177ELF) copy_closure "$f" ;;
		esac
	done < <(find "$1" -type f \( -perm -u+x -o -name '*.so*' \) -printf "$ROOT/%P\n")
}

main() {
	local t0 out="" script="" bins=() libs=() files=() mods=() b f src dst tree=""
	t0=$(vm_now)
	FLAVOUR=""
	while [ $# -gt 0 ]; do
		case $1 in
		--flavour) FLAVOUR=$2 ;;
		--script) script=$2 ;;
		--output) out=$2 ;;
		--bin) bins+=("$2") ;;
		--lib) libs+=("$2") ;;
		--file) files+=("$2") ;;
		--module) mods+=("$2") ;;
		--root) tree=$2 ;;
		*) usage ;;
		esac
		shift 2 || usage
	done
	case $FLAVOUR in stock | iommufd | systemd) ;; *) usage ;; esac
	if [ -z "$out" ] || [ ! -r "$script" ]; then
		usage
	fi
	if [ "$FLAVOUR" = systemd ] && [ ! -d "$tree/lib/systemd/system" ] &&
		[ -z "$(find "${tree:-/nonexistent}" -name p2pbufd.service 2>/dev/null)" ]; then
		vm_die "the systemd flavour needs --root DIR with p2pbufd installed (make install DESTDIR=DIR)"
	fi
	vm_kernel_load
	IOMMUFD_DIR="$VM_CACHE/iommufd/$KVER/modules"
	if [ "$FLAVOUR" != stock ] && [ ! -e "$IOMMUFD_DIR/iommufd.ko" ]; then
		vm_die "no iommufd modules for $KVER: run tests/vm/build-iommufd.sh"
	fi
	ROOT=$(mktemp -d "${TMPDIR:-/tmp}/p2pbuf-initrd.XXXXXX")
	trap 'rm -rf "$ROOT"' EXIT
	chmod 755 "$ROOT" # it becomes the guest's /: mktemp's 0700 locks out other users
	LIBPATH=""
	for f in ${libs[@]+"${libs[@]}"}; do
		LIBPATH="${LIBPATH:+$LIBPATH:}$(cd "$(dirname "$f")" && pwd)"
	done
	if [ -n "$tree" ]; then
		tree=$(cd "$tree" && pwd)
		while IFS= read -r f; do
			LIBPATH="${LIBPATH:+$LIBPATH:}$f"
		done < <(find "$tree" -name '*.so*' -printf '%h\n' | sort -u)
	fi
	mkdir -p "$ROOT/test"
	if [ "$FLAVOUR" = systemd ]; then
		# systemd's files first: busybox links are made only where no file of that name is.
		add_merged_usr
		add_systemd
	fi
	add_busybox
	add_etc
	[ -z "$tree" ] || add_root_tree "$tree"
	for f in ${libs[@]+"${libs[@]}"}; do
		if [ -n "$tree" ] && [ -n "$(find "$tree" -name "$(basename "$f")" -print -quit)" ]; then
			continue # installed by the tree: the installed one is tested
		fi
		copy_file "$f" "/usr/local/lib/$(basename "$f")"
		copy_closure "$f"
	done
	for b in ${bins[@]+"${bins[@]}"}; do
		[ -x "$b" ] || vm_die "--bin $b: not an executable"
		if [ -n "$tree" ] && [ -n "$(find "$tree" -path "*bin/$(basename "$b")" -print -quit)" ]; then
			continue # installed by the tree: the installed one is tested
		fi
		copy_file "$b" "/usr/local/bin/$(basename "$b")"
		copy_closure "$b"
	done
	for f in ${files[@]+"${files[@]}"}; do
		src=${f%%:*}
		dst=${f#*:}
		[ "$dst" != "$f" ] || dst="/test/files/$(basename "$src")"
		copy_file "$src" "$dst"
	done
	add_ld_cache
	copy_file "$script" /test/main.sh
	copy_file "$VM_DIR/guest-lib.sh" /test/guest-lib.sh
	[ "$FLAVOUR" != stock ] && mods+=(iommufd)
	# shellcheck disable=SC2086 # a word list
	add_modules $BASE_MODULES ${mods[@]+"${mods[@]}"}
	add_init
	mkdir -p "$(dirname "$out")"
	(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z |
		cpio --null --quiet -o -H newc -R 0:0 --reproducible) | gzip -6 >"$out.tmp"
	mv "$out.tmp" "$out"
	vm_log "mkinitrd $FLAVOUR: $out ($(du -h "$out" | cut -f1), $(vm_elapsed "$t0") s)"
}

main "$@"
