#!/bin/bash
# tests/vm/run-all.sh - the VM test suite's entry point (what `make check-vm` calls).
#
# Steps, each timed: fetch Debian's kernel (fetch-kernel.sh), rebuild the iommufd + vfio
# modules (build-iommufd.sh, only when the iommufd or systemd flavour runs), fetch udev
# (fetch-udev.sh, systemd flavour), build vm-probe with the host cc, build one initrd per
# flavour (mkinitrd.sh), boot each (run-vm.sh), then print every result and a combined closing
# line "N passed, N failed". Exit status 0 only if every flavour passed and reached its end
# marker.
#
# Flavours: stock (Debian's kernel), iommufd (its rebuilt iommufd modules), systemd (the
# iommufd modules, and the host's systemd as PID 1 with the installed units of --root).
#
# Usage: run-all.sh [--script GUEST.sh] [--bin PATH]... [--lib PATH]... [--file SRC[:DEST]]...
#                   [--module NAME]... [--flavour stock|iommufd|systemd]... [--workdir DIR]
#                   [--timeout SECONDS] [--append "KERNEL ARGS"] [--install-deps]
#                   [--systemd-script GUEST.sh] [--root DIR]
#   --script   the guest test script (default tests/vm/probe.sh); it runs as /test/main.sh
#              and sources /test/guest-lib.sh; it learns the flavour from $P2PBUF_VM_FLAVOUR
#              (or /etc/p2pbuf-vm/flavour)
#   --bin      a program for the guest, put in /usr/local/bin with its shared libraries (pass
#              real ELF files, e.g. libtool's .libs/NAME, not libtool wrapper scripts)
#   --lib      a shared library for the guest, put in /usr/local/lib (and used to resolve the
#              --bin programs' libraries)
#   --file     any other file; DEST defaults to /test/files/BASENAME
#   --module   an extra kernel module to put in the initrd (its closure comes along)
#   --flavour  run only these flavours (default: stock iommufd systemd)
#   --systemd-script  the systemd flavour's guest script (default tests/vm/systemd-cases.sh)
#   --root     the tree `make install DESTDIR=DIR` made, for the systemd flavour
#   --workdir  where initrds, serial logs and ivshmem files go (default: a new temporary
#              directory, printed; kept afterwards)
#   --install-deps  apt-get install missing host packages first
# vm-probe is always built and put in the guest's /usr/local/bin.
#
# Environment knobs (besides those of the scripts it runs, see their headers):
#   P2PBUF_VM_FLAVOURS  default flavours (default "stock iommufd systemd")
#   P2PBUF_VM_WORKDIR   default --workdir
#   P2PBUF_VM_CC        compiler for vm-probe (default cc; the project's $CC is not used,
#                       so sanitizer flags never reach this static build)
#   P2PBUF_VM_TIMEOUT   per-VM wall-clock limit in seconds (default 300)
#   P2PBUF_VM_CACHE     cache directory (default /var/cache/p2pbuf-vm)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

# Host commands and the Debian packages that provide them.
DEPS="qemu-system-x86_64:qemu-system-x86 cpio:cpio xz:xz-utils zstd:zstd depmod:kmod
modinfo:kmod dpkg-deb:dpkg apt-get:apt perl:perl-base cc:build-essential make:make
flex:flex bison:bison bc:bc flock:util-linux timeout:coreutils gzip:gzip strip:binutils
systemctl:systemd"

usage() {
	sed -n 's/^# Usage: /usage: /p; /^#  *\[--/p' "$0" >&2
	exit 2
}

# check_deps INSTALL: report (or install) missing host packages.
check_deps() {
	local d missing=()
	for d in $DEPS; do
		command -v "${d%%:*}" >/dev/null 2>&1 || missing+=("${d#*:}")
	done
	busybox_static_ok || missing+=(busybox-static)
	[ -e /usr/include/gelf.h ] || missing+=(libelf-dev)
	[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
	[ ${#missing[@]} -eq 0 ] && return 0
	mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
	if [ "$1" = 1 ]; then
		vm_log "installing ${missing[*]}"
		apt-get update -q >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			"${missing[@]}" >/dev/null
		return 0
	fi
	fatal host-packages "missing: apt-get install ${missing[*]} (or run with --install-deps)"
}

busybox_static_ok() {
	local bb
	bb=$(command -v busybox) || return 1
	! ldd "$bb" >/dev/null 2>&1
}

# fatal STEP WHY: a step the whole suite needs failed: say so in the results' own terms.
fatal() {
	echo "FAIL setup/$1: $2"
	echo "0 passed, 1 failed"
	exit 1
}

# step NAME CMD...: run one step, record its wall time.
step() {
	local name=$1 t0 rc=0
	shift
	t0=$(vm_now)
	"$@" || rc=$?
	TIMES+=("$(printf '%-22s %6s s%s' "$name" "$(vm_elapsed "$t0")" \
		"$([ "$rc" = 0 ] || echo "  (failed: $rc)")")")
	return "$rc"
}

main() {
	local script="$VM_DIR/probe.sh" work=${P2PBUF_VM_WORKDIR:-} timeout="" append=""
	local install=0 extra=() flavours=() f t0 out passed=0 failed=0 line rc=0 frc try
	local sd_script="$VM_DIR/systemd-cases.sh" tree="" fscript fextra fappend
	TIMES=()
	while [ $# -gt 0 ]; do
		case $1 in
		--install-deps)
			install=1
			shift
			continue
			;;
		--script | --bin | --lib | --file | --module | --flavour | --workdir | --timeout | \
			--append | --systemd-script | --root)
			[ $# -ge 2 ] || usage
			;;
		*) usage ;;
		esac
		case $1 in
		--script) script=$2 ;;
		--bin | --lib | --file | --module) extra+=("$1" "$2") ;;
		--flavour) flavours+=("$2") ;;
		--workdir) work=$2 ;;
		--timeout) timeout=$2 ;;
		--append) append=$2 ;;
		--systemd-script) sd_script=$2 ;;
		--root) tree=$2 ;;
		esac
		shift 2
	done
	[ ${#flavours[@]} -gt 0 ] || read -r -a flavours <<<"${P2PBUF_VM_FLAVOURS:-stock iommufd systemd}"
	[ -r "$script" ] || fatal script "no guest script $script"
	t0=$(vm_now)
	check_deps "$install"
	[ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/p2pbuf-vm-tests.XXXXXX")
	mkdir -p "$work"
	work=$(cd "$work" && pwd)
	vm_log "work directory: $work"
	vm_lock

	step fetch-kernel "$VM_DIR/fetch-kernel.sh" >&2 || fatal fetch-kernel "could not get a kernel"
	case " ${flavours[*]} " in
	*" iommufd "* | *" systemd "*)
		if ! step build-iommufd "$VM_DIR/build-iommufd.sh" >&2; then
			for f in iommufd systemd; do
				case " ${flavours[*]} " in *" $f "*)
					echo "FAIL $f/build-modules: build-iommufd.sh failed"
					failed=$((failed + 1))
					;;
				esac
			done
			mapfile -t flavours < <(printf '%s\n' "${flavours[@]}" | grep -vx -e iommufd -e systemd || true)
		fi
		;;
	esac
	case " ${flavours[*]} " in
	*" systemd "*)
		if ! step fetch-udev "$VM_DIR/fetch-udev.sh" >/dev/null; then
			echo "FAIL systemd/fetch-udev: fetch-udev.sh failed"
			failed=$((failed + 1))
			mapfile -t flavours < <(printf '%s\n' "${flavours[@]}" | grep -vx systemd || true)
		fi
		;;
	esac
	step build-vm-probe "${P2PBUF_VM_CC:-cc}" -static -O2 -Wall -Wextra -o "$work/vm-probe" \
		"$VM_DIR/vm-probe.c" >&2 || fatal build-vm-probe "could not build vm-probe"

	for f in ${flavours[@]+"${flavours[@]}"}; do
		fscript=$script fextra=() fappend=$append
		if [ "$f" = systemd ]; then
			# PID 1 is systemd, from the initramfs, with the tests as a unit of their own.
			fscript=$sd_script
			fextra=(--root "${tree:-/nonexistent}")
			fappend="rdinit=/lib/systemd/systemd systemd.unit=p2pbuf-vm.target"
			# systemd's own messages go to the journal (the cases read its watchdog kill
			# there), so that the console carries the results and little else.
			fappend="$fappend systemd.log_target=journal-or-kmsg systemd.show_status=false"
			fappend="$fappend $append"
		fi
		if ! step "mkinitrd-$f" "$VM_DIR/mkinitrd.sh" --flavour "$f" --script "$fscript" \
			--bin "$work/vm-probe" ${extra[@]+"${extra[@]}"} ${fextra[@]+"${fextra[@]}"} \
			--output "$work/$f.cpio.gz" >&2; then
			echo "FAIL $f/mkinitrd: mkinitrd.sh failed"
			failed=$((failed + 1))
			continue
		fi
		out="$work/$f.summary"
		# A guest that never reached its test script (no start marker: under emulation
		# on a loaded host a kernel can panic at boot, e.g. in its clock calibration)
		# ran no case; it is booted once more, and says so. Any case that ran counts.
		for try in 1 2; do
			frc=0
			step "run-vm-$f" "$VM_DIR/run-vm.sh" --initrd "$work/$f.cpio.gz" --name "$f" \
				--workdir "$work/$f" ${timeout:+--timeout "$timeout"} \
				${fappend:+--append "$fappend"} >"$out" || frc=$?
			[ "$frc" = 0 ] || [ "$try" = 2 ] ||
				grep -q '^P2PBUF-VM-START' "$work/$f/serial.log" 2>/dev/null && break
			echo "[vm] $f: the guest never reached its test script (boot failure:" \
				"$(grep -m 1 -o 'Kernel panic.*' "$work/$f/serial.log" 2>/dev/null ||
					echo 'no start marker')); booting it once more" >&2
		done
		[ "$frc" = 0 ] || rc=$frc
		grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$out" || true
		line=$(tail -n 1 "$out")
		if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
			passed=$((passed + BASH_REMATCH[1]))
			failed=$((failed + BASH_REMATCH[2]))
		else
			echo "FAIL $f/run-vm: no summary from run-vm.sh"
			failed=$((failed + 1))
		fi
	done

	{
		echo "--- VM test timings (work directory $work) ---"
		printf '%s\n' "${TIMES[@]}"
		printf '%-22s %6s s\n' total "$(vm_elapsed "$t0")"
	} >&2
	[ "$rc" = 0 ] || [ "$failed" != 0 ] || failed=1
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
}

main "$@"
