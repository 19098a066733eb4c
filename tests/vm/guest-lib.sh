# shellcheck shell=sh
# tests/vm/guest-lib.sh - helpers for test scripts that run INSIDE the QEMU guest (busybox sh).
# A case script starts with `. /test/guest-lib.sh`; /init runs it as /test/main.sh and calls
# vm_finish afterwards, so a script only reports results.
#
# Results are lines on the serial console that run-vm.sh counts:
#   PASS name            pass NAME
#   FAIL name: why       fail NAME WHY...
#   SKIP name: why       skip NAME WHY...
# Names are one word (no spaces); run-vm.sh prefixes them with the flavour.
#
# Helpers:
#   check NAME CMD...        PASS if CMD exits 0, else FAIL with its exit status and last line
#   check_fails NAME CMD...  PASS if CMD exits non-zero
#   find_pci VENDOR:DEVICE   BDFs of matching devices, one a line (e.g. find_pci 1af4:1110)
#   bind_vfio BDF            bind the device to vfio-pci (driver_override, unbind, probe)
#   vfio_group BDF           the device's IOMMU group number (/dev/vfio/N)
#   vfio_cdev BDF            the device's /dev/vfio/devices/vfioN (iommufd flavour), or fails
#   load_vfio                modprobe vfio-pci, vfio_iommu_type1 (+ iommufd in that flavour)
#   vm_finish RC             dump dmesg if anything failed, print the end marker, poweroff -f
#
# Environment (set by /init): P2PBUF_VM_FLAVOUR (stock|iommufd), P2PBUF_VM_KVER.
# Knobs: P2PBUF_CHECK_TIMEOUT (seconds per external command in check, default 120),
#        P2PBUF_VM_VERBOSE=1 (show every check's output, not only a failing one's).

# shellcheck disable=SC2034 # device ids for the case scripts
EDU_ID=1234:11e8
IVSHMEM_ID=1af4:1110
# shellcheck disable=SC2034
NVME_ID=1b36:0010
# shellcheck disable=SC2034
PCI_TESTDEV_ID=1b36:0005
VM_RESULTS=/run/p2pbuf-vm/results
mkdir -p /run/p2pbuf-vm

pass() {
	echo "PASS $1"
	echo "PASS $1" >>"$VM_RESULTS"
}

fail() {
	_n=$1
	shift
	echo "FAIL $_n: $*"
	echo "FAIL $_n" >>"$VM_RESULTS"
}

skip() {
	_n=$1
	shift
	echo "SKIP $_n: $*"
}

# _vm_run CMD...: run CMD with its output in /tmp/check.out; external programs get a timeout.
_vm_run() {
	if [ "$(command -v "$1")" = "$1" ] && [ "${1#*/}" = "$1" ]; then
		"$@" >/tmp/check.out 2>&1 # a shell function or builtin: no timeout
	else
		timeout "${P2PBUF_CHECK_TIMEOUT:-120}" "$@" >/tmp/check.out 2>&1
	fi
}

_vm_show() {
	sed 's/^/  | /' /tmp/check.out
}

check() {
	_n=$1
	shift
	_rc=0
	_vm_run "$@" || _rc=$?
	if [ "$_rc" = 0 ]; then
		[ "${P2PBUF_VM_VERBOSE:-0}" = 1 ] && _vm_show
		pass "$_n"
	else
		_vm_show
		[ "$_rc" = 143 ] && _rc="timeout"
		fail "$_n" "exit $_rc: $1: $(tail -n 1 /tmp/check.out)"
	fi
}

check_fails() {
	_n=$1
	shift
	if _vm_run "$@"; then
		_vm_show
		fail "$_n" "$1 succeeded, failure expected"
	else
		[ "${P2PBUF_VM_VERBOSE:-0}" = 1 ] && _vm_show
		pass "$_n"
	fi
}

find_pci() {
	_v=0x${1%%:*}
	_d=0x${1#*:}
	for _p in /sys/bus/pci/devices/*; do
		[ "$(cat "$_p/vendor")" = "$_v" ] && [ "$(cat "$_p/device")" = "$_d" ] &&
			basename "$_p"
	done
	return 0
}

bind_vfio() {
	_dev=/sys/bus/pci/devices/$1
	[ -d "$_dev" ] || { echo "bind_vfio: no device $1" >&2; return 1; }
	echo vfio-pci >"$_dev/driver_override"
	if [ -e "$_dev/driver" ]; then
		echo "$1" >"$_dev/driver/unbind"
	fi
	echo "$1" >/sys/bus/pci/drivers_probe
	# The group (or cdev) node appears through devtmpfs: wait for it.
	_i=0
	while [ $_i -lt 50 ]; do
		if [ "$(basename "$(readlink "$_dev/driver")")" = vfio-pci ] &&
			[ -e "/dev/vfio/$(vfio_group "$1")" ]; then
			return 0
		fi
		sleep 0.1
		_i=$((_i + 1))
	done
	echo "bind_vfio: $1 did not bind to vfio-pci" >&2
	return 1
}

vfio_group() {
	basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"
}

vfio_cdev() {
	for _c in /sys/bus/pci/devices/"$1"/vfio-dev/vfio*; do
		[ -e "/dev/vfio/devices/${_c##*/}" ] && echo "/dev/vfio/devices/${_c##*/}" && return 0
	done
	return 1
}

load_vfio() {
	if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
		modprobe iommufd || return 1
	fi
	modprobe vfio_iommu_type1 && modprobe vfio-pci
}

vm_finish() {
	_failed=$(grep -c '^FAIL' "$VM_RESULTS" 2>/dev/null || true)
	_passed=$(grep -c '^PASS' "$VM_RESULTS" 2>/dev/null || true)
	if [ "${1:-0}" != 0 ] || [ "${_failed:-0}" != 0 ]; then
		# Only what the kernel said after /init started, and not too much of it: the host
		# shows the last 60 lines of the log, which should still hold the FAIL lines.
		_start=$(cat /run/p2pbuf-vm/dmesg-start 2>/dev/null || echo 0)
		echo "--- guest dmesg since /init (last 30 lines) ---"
		dmesg | tail -n "+$((_start + 1))" | tail -n 30 | sed 's/^/dmesg| /'
		echo "--- end of guest dmesg ---"
	fi
	echo "P2PBUF-VM-END rc=${1:-0} passed=${_passed:-0} failed=${_failed:-0}"
	sync
	poweroff -f
}
