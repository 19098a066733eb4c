#!/bin/bash
# tests/vm/build-iommufd.sh - rebuild iommufd.ko and the vfio modules (vfio, vfio_iommu_type1,
# vfio-pci-core, vfio-pci) out of tree with IOMMUFD and VFIO_DEVICE_CDEV on, against Debian's
# headers for the kernel that fetch-kernel.sh chose. Debian's stock kernels have
# "# CONFIG_IOMMUFD is not set"; these modules give the guest /dev/iommu and
# /dev/vfio/devices/vfioN. A test-only arrangement: the modules load unsigned (taint warning).
#
# Steps (the pitfalls are explained in tests/vm/README.md):
#   1. apt-get download linux-headers-KVER, linux-headers-ABI-common, linux-kbuild-ABI and
#      linux-source-X.Y of the same package version (private apt configuration, cached);
#   2. unpack them, rewrite the headers' hard-coded /usr/src paths to the unpack directory;
#   3. rebuild kbuild's host programs (fixdep, modpost, objtool, ...) with `make
#      modules_prepare` in the source tree, because Debian's need glibc >= 2.38;
#   4. copy the needed sources into an out-of-tree directory with our own Kbuild files (object
#      lists taken from the upstream Makefiles with IOMMUFD on, plus iommufd's driver.o and the
#      CONFIG_INTERVAL_TREE_SPAN_ITER block of lib/interval_tree.c that Debian's vmlinux lacks);
#   5. make -C HEADERS M=DIR modules with gcc, and keep the .ko files.
#
# Output: $P2PBUF_VM_CACHE/iommufd/KVER/modules/{iommufd,vfio,vfio_iommu_type1,
# vfio-pci-core,vfio-pci}.ko. Skipped when already built for that KVER and package version.
#
# Environment knobs:
#   P2PBUF_VM_CACHE     cache directory (default /var/cache/p2pbuf-vm)
#   P2PBUF_VM_JOBS      make -j (default: nproc)
#   P2PBUF_VM_KEEP_SRC  1: keep the 2 GB work tree after a successful build (default: remove)
#   P2PBUF_VM_BUILD_TMP where to put the work tree when it has 4 GB free (default /dev/shm,
#                       a tmpfs; otherwise $P2PBUF_VM_CACHE/iommufd/KVER/work)
#   P2PBUF_VM_REBUILD   1: rebuild even when the modules exist
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

JOBS=${P2PBUF_VM_JOBS:-$(nproc)}
MODS="iommufd vfio vfio_iommu_type1 vfio-pci-core vfio-pci"

# deb_of PKG VER: the cached .deb of PKG at VER, downloading it when missing.
deb_of() {
	local p=$1 ver=$2 f
	f=$(compgen -G "$VM_CACHE/debs/${p}_${ver//:/%3a}_*.deb" | head -n 1 || true)
	if [ -z "$f" ]; then
		vm_log "downloading $p=$ver"
		(cd "$VM_CACHE/debs" && apt-get -q download "$p=$ver") >&2 ||
			vm_die "cannot download $p=$ver (has it left the archive? rerun fetch-kernel.sh)"
		f=$(compgen -G "$VM_CACHE/debs/${p}_${ver//:/%3a}_*.deb" | head -n 1)
	fi
	echo "$f"
}

# unpack_headers HDRROOT: headers + kbuild, with the /usr/src paths made local.
unpack_headers() {
	local root=$1 abi=${KVER%-amd64} p f
	mkdir -p "$root"
	for p in "linux-headers-$KVER" "linux-headers-$abi-common" "linux-kbuild-$abi"; do
		dpkg-deb -x "$(deb_of "$p" "$KPKGVER")" "$root"
	done
	HDR="$root/usr/src/linux-headers-$KVER"
	[ -f "$HDR/Makefile" ] || vm_die "no $HDR/Makefile"
	# The Makefiles say KBUILD_OUTPUT=/usr/src/... and include /usr/src/...: point them here.
	for f in "$HDR/Makefile" "$root/usr/src/linux-headers-$abi-common/Makefile"; do
		sed -i "s|/usr/src/|$root/usr/src/|g" "$f"
	done
}

# unpack_source SRCDIR: linux-source-X.Y's tarball, extracted.
unpack_source() {
	local dir=$1 xy deb
	xy=$(echo "$KVER" | cut -d. -f1-2)
	deb=$(deb_of "linux-source-$xy" "$KPKGVER")
	mkdir -p "$dir"
	vm_log "extracting linux-source-$xy"
	dpkg-deb --fsys-tarfile "$deb" | tar -xf - -O "./usr/src/linux-source-$xy.tar.xz" |
		tar -xJf - -C "$dir" --strip-components=1
	SRC=$dir
}

# prepare_tools: build kbuild's host programs against this host's glibc and put them in place
# of Debian's (which need glibc 2.38) in the kbuild tree the headers point at.
prepare_tools() {
	local kb f rel
	cp "$HDR/.config" "$SRC/.config"
	vm_log "make modules_prepare (host tools for glibc $(ldd --version | sed -n '1s/.* //p'))"
	make -C "$SRC" -s -j"$JOBS" CC=gcc HOSTCC=gcc SYSTEM_TRUSTED_KEYS="" \
		SYSTEM_REVOCATION_KEYS="" olddefconfig >>"$LOG" 2>&1
	make -C "$SRC" -s -j"$JOBS" CC=gcc HOSTCC=gcc SYSTEM_TRUSTED_KEYS="" \
		SYSTEM_REVOCATION_KEYS="" modules_prepare >>"$LOG" 2>&1
	kb=$(readlink -f "$HDR/scripts/..")
	while IFS= read -r f; do
		rel=${f#"$kb"/}
		case $rel in
		scripts/mod/modpost.real-* | tools/objtool/objtool.real-*) rm -f "$f" ;;
		*)
			if [ -x "$SRC/$rel" ] && [ -f "$SRC/$rel" ]; then
				cp "$SRC/$rel" "$f"
			else
				rm -f "$f" # never run a binary that cannot load here
			fi
			;;
		esac
	done < <(find "$kb" -type f -perm -u+x -exec sh -c 'head -c4 "$1" | grep -q ELF' _ {} \; -print)
	if [ ! -x "$kb/scripts/mod/modpost" ] || [ ! -x "$kb/tools/objtool/objtool" ]; then
		vm_die "modules_prepare did not give modpost and objtool"
	fi
}

# objs MAKEFILE VAR...: the objects upstream's Makefile lists in VAR with Debian's config plus
# IOMMUFD (=m, so pass both NAME-y and NAME-m) and VFIO_DEVICE_CDEV on.
objs() {
	local mk=$1
	shift
	# shellcheck disable=SC2016 # $(VAR) is make syntax
	printf 'include %s\ninclude %s\nall: ; @echo %s\n' \
		"$HDR/include/config/auto.conf" "$mk" "$(printf '$(%s) ' "$@")" |
		make -s --no-print-directory -f - CONFIG_IOMMUFD=m CONFIG_IOMMUFD_DRIVER_CORE=y \
			CONFIG_VFIO_DEVICE_CDEV=y CONFIG_IOMMUFD_TEST= CONFIG_VFIO_DEBUGFS= all
}

# setup_tree MODDIR: copy the sources and write the Kbuild files.
setup_tree() {
	local m=$1 o
	rm -rf "$m"
	mkdir -p "$m/iommufd" "$m/vfio/pci"
	cp "$SRC"/drivers/iommu/iommu-priv.h "$SRC"/drivers/iommu/iommu-pages.h "$m/"
	cp "$SRC"/drivers/iommu/iommufd/*.[ch] "$m/iommufd/"
	cp "$SRC"/drivers/vfio/*.[ch] "$m/vfio/"
	cp "$SRC"/drivers/vfio/pci/*.[ch] "$m/vfio/pci/"
	# The span iterator block of lib/interval_tree.c: Debian's vmlinux is built without it.
	{
		sed -n '1,/^#ifdef CONFIG_INTERVAL_TREE_SPAN_ITER/p' "$SRC/lib/interval_tree.c" |
			grep '^#include'
		sed -n '/^#ifdef CONFIG_INTERVAL_TREE_SPAN_ITER/,/^#endif/p' "$SRC/lib/interval_tree.c" |
			sed '1d;$d'
	} >"$m/iommufd/interval_tree_span.c"
	grep -q interval_tree_span_iter_first "$m/iommufd/interval_tree_span.c" ||
		vm_die "no CONFIG_INTERVAL_TREE_SPAN_ITER block in lib/interval_tree.c"
	echo 'obj-m += iommufd/ vfio/' >"$m/Kbuild"
	o=$(objs "$SRC/drivers/iommu/iommufd/Makefile" iommufd-y iommufd-m iommufd_driver-y)
	printf 'obj-m += iommufd.o\niommufd-y := %s interval_tree_span.o\n' "$o" >"$m/iommufd/Kbuild"
	o=$(objs "$SRC/drivers/vfio/Makefile" vfio-y vfio-m)
	printf 'obj-m += vfio.o vfio_iommu_type1.o pci/\nvfio-y := %s\n' "$o" >"$m/vfio/Kbuild"
	{
		echo 'obj-m += vfio-pci-core.o vfio-pci.o'
		echo "vfio-pci-core-y := $(objs "$SRC/drivers/vfio/pci/Makefile" vfio-pci-core-y vfio-pci-core-m)"
		echo "vfio-pci-y := $(objs "$SRC/drivers/vfio/pci/Makefile" vfio-pci-y vfio-pci-m)"
	} >"$m/vfio/pci/Kbuild"
	vm_log "objects: $(cat "$m"/iommufd/Kbuild "$m"/vfio/Kbuild "$m"/vfio/pci/Kbuild | grep -- '-y' | tr '\n' ' ')"
}

# build MODDIR: compile with this host's gcc against Debian's headers.
build() {
	local m=$1
	# gcc 12 lacks -fmin-function-alignment (Debian builds with gcc 16); no BTF for modules.
	make -C "$HDR" M="$m" -j"$JOBS" CC=gcc HOSTCC=gcc \
		CONFIG_CC_HAS_MIN_FUNCTION_ALIGNMENT= CONFIG_DEBUG_INFO_BTF_MODULES= \
		KCFLAGS="-DCONFIG_IOMMUFD_MODULE=1 -DCONFIG_VFIO_DEVICE_CDEV=1 -DCONFIG_IOMMUFD_DRIVER_CORE=1 -Wno-attributes" \
		modules >>"$LOG" 2>&1
}

# work_dir OUT: where the 2 GB source tree goes. Writing it is most of the build's time on a
# disk (28-45 s measured, against 20 s on tmpfs), so prefer /dev/shm when it has room.
work_dir() {
	local shm=${P2PBUF_VM_BUILD_TMP:-/dev/shm} avail
	if [ -d "$shm" ] && [ -w "$shm" ]; then
		avail=$(df -Pk "$shm" | awk 'NR == 2 { print $4 }')
		if [ "${avail:-0}" -gt $((4 * 1024 * 1024)) ]; then
			echo "$shm/p2pbuf-vm-build-$KVER"
			return 0
		fi
	fi
	echo "$1/work"
}

# on_exit STATUS WORK: show why a build failed (its output goes to the log, not to the
# terminal), and free the work tree (it may be in RAM) unless asked to keep it.
on_exit() {
	if [ "$1" != 0 ] && [ -s "$LOG" ]; then
		tail -n 40 "$LOG" >&2
		printf '[vm] error: iommufd module build failed (log: %s)\n' "$LOG" >&2
	fi
	[ "${P2PBUF_VM_KEEP_SRC:-0}" = 1 ] || rm -rf "$2"
}

# shellcheck disable=SC2153 # KVER, KPKGVER, KSUITE come from vm_kernel_load
main() {
	local t0 out work mod k f
	t0=$(vm_now)
	vm_lock
	vm_kernel_load
	out="$VM_CACHE/iommufd/$KVER"
	if [ "${P2PBUF_VM_REBUILD:-0}" != 1 ] && [ -f "$out/built" ] &&
		[ "$(cat "$out/built")" = "$KPKGVER" ]; then
		vm_log "iommufd modules for $KVER already built ($out/modules)"
		echo "modules: $out/modules"
		return 0
	fi
	vm_apt_setup "$KSUITE"
	work=$(work_dir "$out")
	LOG="$out/build.log"
	rm -rf "$out" "$work"
	mkdir -p "$work" "$out/modules"
	: >"$LOG"
	vm_log "building iommufd + vfio modules for $KVER (log: $LOG)"
	# shellcheck disable=SC2064 # $work is fixed from here on
	trap "on_exit \$? '$work'" EXIT
	unpack_headers "$work/hdr"
	unpack_source "$work/src"
	prepare_tools
	setup_tree "$work/mod"
	build "$work/mod"
	mod="$work/mod"
	for k in $MODS; do
		f=$(find "$mod" -name "$k.ko" | head -n 1)
		[ -n "$f" ] || vm_die "$k.ko was not built (log: $LOG)"
		# Debug info makes them 4x larger, and the initrd carries them.
		strip --strip-debug -o "$out/modules/$k.ko" "$f"
	done
	echo "$KPKGVER" >"$out/built"
	vm_log "build-iommufd: $(vm_elapsed "$t0") s"
	echo "modules: $out/modules"
}

main "$@"
