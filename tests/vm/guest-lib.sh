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
# and, for the case scripts: expect_eq, jget, wait_file, wait_grep, spawn, reap, stop, lease_of,
# last_line, says, steps_results, dmar_faults (each described where it is defined, below).
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
		if [ -d /run/systemd/system ]; then # systemd is PID 1: its journal too
			echo "--- the journal's warnings and errors (last 40) ---"
			journalctl --no-pager -o short-monotonic -p warning | tail -n 40 |
				sed 's/^/journal| /'
		fi
	fi
	echo "P2PBUF-VM-END rc=${1:-0} passed=${_passed:-0} failed=${_failed:-0}"
	sync
	poweroff -f
}

# ---- helpers of the case scripts (cases.sh, systemd-cases.sh) ----
# Spawned commands keep their output, pid and exit status in $W (default /tmp/vmcases).
W=${W:-/tmp/vmcases}
mkdir -p "$W"

# expect_eq NAME WHAT EXPECTED GOT: PASS, or FAIL saying what was expected and what came.
expect_eq() {
	if [ "$3" = "$4" ]; then
		pass "$1"
	else
		fail "$1" "$2: expected '$3', got '$4'"
	fi
}

# jget FILE EXPR...: the values at each EXPR (see vm-importer json) of the JSON in FILE, on one
# line; "" for a value that does not exist, and a non-zero exit status.
jget() {
	_jf=$1
	shift
	vm-importer json "$@" <"$_jf" 2>/dev/null
}

# wait_file FILE SECONDS: wait until FILE exists.
wait_file() {
	_i=0
	while [ ! -e "$1" ]; do
		[ "$_i" -ge $(($2 * 10)) ] && return 1
		sleep 0.1
		_i=$((_i + 1))
	done
}

# wait_grep FILE REGEX SECONDS: wait until FILE has a line matching REGEX.
wait_grep() {
	_i=0
	until grep -q -e "$2" "$1" 2>/dev/null; do
		[ "$_i" -ge $(($3 * 10)) ] && return 1
		sleep 0.1
		_i=$((_i + 1))
	done
}

# spawn NAME CMD...: run CMD in the background, output in $W/NAME.out, its pid in
# $W/NAME.pid (there when spawn returns), its exit status in $W/NAME.rc once it has ended.
spawn() {
	_sn=$1
	shift
	rm -f "$W/$_sn.rc" "$W/$_sn.pid" "$W/$_sn.out"
	(
		"$@" >"$W/$_sn.out" 2>&1 &
		echo $! >"$W/$_sn.pid"
		wait $!
		echo $? >"$W/$_sn.rc.tmp"
		mv "$W/$_sn.rc.tmp" "$W/$_sn.rc"
	) &
	wait_file "$W/$_sn.pid" 5
}

# reap NAME SECONDS: the exit status of a spawned command once it has ended, "running" if it
# has not ended within SECONDS.
reap() {
	if wait_file "$W/$1.rc" "$2"; then
		cat "$W/$1.rc"
	else
		echo running
	fi
}

# stop NAME: SIGTERM a spawned command (if it still runs) and reap it.
stop() {
	[ -e "$W/$1.rc" ] || kill -TERM "$(cat "$W/$1.pid")" 2>/dev/null
	reap "$1" 10
}

# lease_of NAME: the lease id in the lease-granted document that a spawned
# `p2pbuf-client --json export` holding its lease printed first, once it has ("" after 15 s).
lease_of() {
	wait_grep "$W/$1.out" '"event":"lease-granted"' 15 &&
		head -n 1 "$W/$1.out" | grep '^{"event":"lease-granted",' | vm-importer json .lease.id
}

# last_line FILE: the last line of FILE, for FAIL messages.
last_line() {
	tail -n 1 "$1" 2>/dev/null | tr -d '\r'
}

# says FILE WORDS: "yes" if FILE contains WORDS, else FILE's last line (for expect_eq).
says() {
	if grep -q -e "$2" "$1"; then
		echo yes
	else
		last_line "$1"
	fi
}

# steps_results PREFIX FILE: vm-importer's "step NAME ok|FAIL: detail" lines in FILE as results
# PREFIX-NAME.
steps_results() {
	while IFS= read -r _line; do
		case $_line in
		"step "*)
			_r=${_line#step }
			_n=${_r%% *}
			_r=${_r#* }
			if [ "${_r%%:*}" = ok ]; then
				pass "$1-$_n"
			else
				fail "$1-$_n" "${_r#*: }"
			fi
			;;
		esac
	done <"$2"
}

# hold CMD NAME: send a vm-importer dma-hold (its standard input open on fd 8, its output in
# $W/hold.out) the command "CMD NAME"; print the word its answer ends with (live, dead, ok,
# an errno name, done).
hold() {
	echo "$1 $2" >&8
	wait_grep "$W/hold.out" "^$1 $2 " 40 >/dev/null
	grep "^$1 $2 " "$W/hold.out" | tail -n 1 | cut -d' ' -f3 | tr -d :
}

# dmar_faults NAME FILE: every "dmar-fault-expected: iova IOVA device BDF" line of vm-importer
# in FILE has its DMAR read fault in the kernel log (the emulated VT-d reports each one).
dmar_faults() {
	_dn=$1
	_want=$(sed -n 's/^dmar-fault-expected: iova \(0x[0-9a-f]*\) device \(.*\)/\2 \1/p' "$2")
	_missing=
	# shellcheck disable=SC2086 # pairs of words
	set -- $_want
	while [ $# -ge 2 ]; do
		dmesg | grep 'DMAR:.*DMA Read' | grep -q "\[$1\] fault addr $2 " || _missing="$_missing $2"
		shift 2
	done
	if [ -z "$_want" ]; then
		fail "$_dn" "expected DMAR read faults, got no dmar-fault-expected line from" \
			"vm-importer (its DMA through the revoked mapping did not run)"
	elif [ -z "$_missing" ]; then
		pass "$_dn"
	else
		fail "$_dn" "expected DMAR read faults at $_want (device iova), missing:" \
			"$_missing; the last one logged: '$(dmesg | grep 'DMAR:.*fault' | tail -n 1)'"
	fi
}
