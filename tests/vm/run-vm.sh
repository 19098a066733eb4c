#!/bin/bash
# tests/vm/run-vm.sh - boot one QEMU guest (TCG) with real PCI devices behind a VT-d IOMMU,
# wait for it to power off, and turn its serial console into a test summary.
#
# Devices (each behind its own pcie-root-port, so each has a reset method and its own IOMMU
# group): edu (1234:11e8), ivshmem-plain (1af4:1110, BAR2 = a 2 MiB host file, share=on),
# nvme (1b36:0010, cmb_size_mb=2 -> CMB in BAR2), at 01:00.0, 02:00.0 and 03:00.0. Then two
# functions of one multifunction slot behind a fourth root port, 04:00.0 and 04:00.1, both
# ivshmem-plain (BAR2 = host files of their own): conventional PCI functions without ACS, so
# the kernel puts them in one IOMMU group, as with a GPU and its audio function. They sort
# after the others, so `find_pci ID | head -n 1` still names 02:00.0. Machine q35 +
# intel-iommu (intremap=on, caching-mode=on), kernel command line with intel_iommu=on.
#
# The ivshmem backing files are pre-filled with a known pattern: the 16 bytes at every offset
# O (a multiple of 16) are printf("%08x p2pbuf\n", O); e.g. offset 0x1000 reads
# "00001000 p2pbuf\n". The files (ivshmem.bin, ivshmem-fn0.bin, ivshmem-fn1.bin) are kept in
# the work directory afterwards, so a caller can see what the guest wrote.
#
# Result lines printed by the guest (see guest-lib.sh): "PASS name", "FAIL name: why",
# "SKIP name: why". Printed here prefixed with the run's name, then a last line exactly
# "N passed, N failed". A missing end marker (P2PBUF-VM-END, printed by the guest's /init),
# a timeout, a non-zero guest script status or no result at all count as failures.
# Exit status 0 only if nothing failed and the guest reached its end marker. On failure the
# last 60 lines of the serial log go to stderr.
#
# Usage: run-vm.sh --initrd INITRD [--kernel VMLINUZ] [--name NAME] [--workdir DIR]
#                  [--timeout SECONDS] [--append "KERNEL ARGS"]
#   --kernel   default: the kernel recorded by fetch-kernel.sh
#   --workdir  where serial.log and ivshmem.bin go (default: a new temporary directory)
#   --append   extra kernel arguments; NAME=VALUE arguments without a dot reach /init and the
#              case script as environment variables
#
# Environment knobs:
#   P2PBUF_VM_CACHE    cache directory (default /var/cache/p2pbuf-vm)
#   P2PBUF_VM_TIMEOUT  wall-clock limit in seconds (default 300)
#   P2PBUF_VM_QEMU     QEMU binary (default qemu-system-x86_64)
#   P2PBUF_VM_MEM      guest memory (default 1G)
#   P2PBUF_VM_SMP      guest CPUs (default 2)
#   P2PBUF_VM_QEMU_ARGS extra QEMU arguments (word-split)
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
	sed -n 's/^# Usage: /usage: /p; /^#  *\[--timeout/p' "$0" >&2
	exit 2
}

# fill_ivshmem FILE: 2 MiB of self-describing 16-byte records.
fill_ivshmem() {
	perl -e 'for (my $o = 0; $o < 2 * 1024 * 1024; $o += 16) { printf("%08x p2pbuf\n", $o) }' \
		>"$1"
}

# summarize LOG NAME QEMU_STATUS: print results and the closing line; return 0 if all is well.
summarize() {
	local log=$1 name=$2 qrc=$3 passed failed end rc
	tr -d '\r' <"$log" >"$log.txt"
	grep -E '^(PASS|FAIL|SKIP) ' "$log.txt" | sed -E "s/^(PASS|FAIL|SKIP) /\1 $name\//" || true
	passed=$(grep -cE '^PASS ' "$log.txt" || true)
	failed=$(grep -cE '^FAIL ' "$log.txt" || true)
	end=$(grep -E '^P2PBUF-VM-END ' "$log.txt" | tail -n 1 || true)
	if [ -z "$end" ]; then
		if [ "$qrc" = 124 ]; then
			echo "FAIL $name/vm-end: timed out after $TIMEOUT s before the guest's end marker"
		else
			echo "FAIL $name/vm-end: guest stopped without its end marker (qemu status $qrc)"
		fi
		failed=$((failed + 1))
	else
		rc=$(sed -n 's/.* rc=\([0-9]*\).*/\1/p' <<<"$end")
		if [ "$rc" != 0 ]; then
			echo "FAIL $name/vm-script: guest script exited with status $rc"
			failed=$((failed + 1))
		fi
		if [ "$passed" = 0 ] && [ "$failed" = 0 ]; then
			echo "FAIL $name/vm-results: the guest reported no result"
			failed=1
		fi
	fi
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ] && [ -n "$end" ]
}

main() {
	local kernel="" initrd="" name=vm work="" append="" t0 qrc=0 qemu_args=()
	TIMEOUT=${P2PBUF_VM_TIMEOUT:-300}
	while [ $# -gt 0 ]; do
		case $1 in
		--kernel) kernel=$2 ;;
		--initrd) initrd=$2 ;;
		--name) name=$2 ;;
		--workdir) work=$2 ;;
		--timeout) TIMEOUT=$2 ;;
		--append) append=$2 ;;
		*) usage ;;
		esac
		shift 2 || usage
	done
	[ -r "$initrd" ] || usage
	if [ -z "$kernel" ]; then
		vm_kernel_load
		kernel=$VMLINUZ
	fi
	[ -n "$work" ] || work=$(mktemp -d "${TMPDIR:-/tmp}/p2pbuf-vm.XXXXXX")
	mkdir -p "$work"
	rm -f "$work/serial.log"
	for f in ivshmem ivshmem-fn0 ivshmem-fn1; do
		fill_ivshmem "$work/$f.bin"
	done
	# no_timer_check: on a busy host TCG can miss the kernel's early check that the timer
	# interrupt arrives through the remapped IO-APIC, and the kernel panics at boot.
	# SC2206: P2PBUF_VM_QEMU_ARGS is meant to be word-split; SC2054: commas are QEMU's.
	# shellcheck disable=SC2206,SC2054
	qemu_args=(
		-accel tcg -machine q35 -cpu max -smp "${P2PBUF_VM_SMP:-2}" -m "${P2PBUF_VM_MEM:-1G}"
		-device intel-iommu,intremap=on,caching-mode=on
		-device pcie-root-port,id=rp1,chassis=1,slot=1 -device edu,bus=rp1
		-device pcie-root-port,id=rp2,chassis=2,slot=2
		-object "memory-backend-file,id=shm0,mem-path=$work/ivshmem.bin,size=2M,share=on"
		-device ivshmem-plain,memdev=shm0,bus=rp2
		-device pcie-root-port,id=rp3,chassis=3,slot=3
		-device nvme,serial=deadbeef,cmb_size_mb=2,bus=rp3
		-device pcie-root-port,id=rp4,chassis=4,slot=4
		-object "memory-backend-file,id=shm1,mem-path=$work/ivshmem-fn0.bin,size=2M,share=on"
		-device ivshmem-plain,memdev=shm1,bus=rp4,addr=0.0,multifunction=on
		-object "memory-backend-file,id=shm2,mem-path=$work/ivshmem-fn1.bin,size=2M,share=on"
		-device ivshmem-plain,memdev=shm2,bus=rp4,addr=0.1
		-kernel "$kernel" -initrd "$initrd"
		-append "console=ttyS0 panic=-1 quiet loglevel=4 intel_iommu=on no_timer_check $append"
		-display none -serial "file:$work/serial.log" -monitor none -no-reboot
		${P2PBUF_VM_QEMU_ARGS:-}
	)
	vm_log "booting $name: $(basename "$kernel") + $(basename "$initrd") (log: $work/serial.log)"
	t0=$(vm_now)
	timeout -k 10 "$TIMEOUT" "${P2PBUF_VM_QEMU:-qemu-system-x86_64}" "${qemu_args[@]}" \
		</dev/null >"$work/qemu.out" 2>&1 || qrc=$?
	vm_log "$name: qemu exited with status $qrc after $(vm_elapsed "$t0") s"
	[ -s "$work/qemu.out" ] && sed 's/^/qemu: /' "$work/qemu.out" >&2
	touch "$work/serial.log"
	if summarize "$work/serial.log" "$name" "$qrc"; then
		return 0
	fi
	echo "--- last 60 lines of $work/serial.log ---" >&2
	tr -d '\r' <"$work/serial.log" | tail -n 60 >&2
	echo "--- end of serial log ---" >&2
	return 1
}

main "$@"
