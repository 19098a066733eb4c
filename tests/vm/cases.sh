#!/bin/sh
# tests/vm/cases.sh - the VM test cases of `make check-vm`: the real p2pbufd on real vfio-pci
# devices, driven by p2pbuf-client and vm-importer (a libp2pbuf client) inside the guest.
# Runs as /test/main.sh under busybox sh; every check is a PASS/FAIL line (guest-lib.sh), and a
# FAIL says what was expected and what came.
#
# Needs in the guest (run-all.sh --bin/--lib): p2pbufd, p2pbuf-client, vm-importer,
# libp2pbuf.so.0; and the kernel argument iomem=relaxed (run-all.sh --append iomem=relaxed):
# Debian's kernels have CONFIG_IO_STRICT_DEVMEM and vfio-pci requests every BAR when a device
# is opened, so without it the exporter-side reads of ivshmem's BAR through sysfs fail.
# The devices are those of run-vm.sh: edu, ivshmem (BAR 2 backed by the host's pattern file)
# and nvme (CMB in BAR 2, MSI-X table at BAR 0 0x2000, PBA at 0x3000).
#
# Cases, in order (result names):
#   setup: vfio modules, the three devices bound to vfio-pci, p2pbufd serving on the
#     iommufd path in that flavour, the legacy one in stock   [load-vfio setup-bind p2pbufd-start
#                                                                daemon-vfio-path]
#   1 devices listed with their BAR sizes, backend vfio, state ready   [devices-*]
#   2 an ivshmem export's fd: fdinfo exp_name, size, dma-buf name; env [export-*]
#   3 policy: a group member allowed, another uid denied; reset needs admin  [policy-*]
#   4 unaligned, outside-BAR and MSI-X ranges refused (CLI exit 6 and the library's errno)
#                                                                       [range-*]
#   5 the bytes behind a lease are the host's pattern (exporter side)   [lease-bytes]
#   6 leases lists a held lease with holders=1                          [leases-*]
#   7 reset: the holder is revoked (exit 10, reason reset), watch shows cycling then ready,
#     generation 1, a new export works                                 [reset-* watch-*]
#   8 unbind nvme: its holder is told device-gone, the others keep serving  [unbind-*]
#   9 p2pbufd's fds back to the baseline (minus nvme's); exit 0 on SIGTERM
#                                                     [fds-after-* p2pbufd-sigterm-exit]
#  10 iommufd flavour: a second p2pbufd owning only ivshmem; vm-importer maps its lease into
#     its own IOAS and has its own edu DMA through it; after a reset the mapping is dead
#     (zeros and a DMAR fault) and a new MAP_FILE of the old fd fails with ENODEV
#                                                     [p2pbufd-dma-* iommufd-*]
#  11 revoking one lease (admin revoke), on a p2pbufd owning only ivshmem with a 2 s
#     revoke-deadline; vm-importer owns edu and maps its leases in the iommufd flavour:
#     a holder that keeps its fd (and mapping) past the deadline: the device cycles, the holder
#     hears reason admin, every other lease of the device ends with device-cycle, the kept
#     buffer is dead (zeros, DMAR fault, MAP_FILE ENODEV), generation + 1, new exports work
#                                                     [revoke-keep-*]
#     a holder that unmaps, closes and releases when told: reason admin before the deadline,
#     no cycle, the other leases stay active and live          [revoke-release-*]
#     a holder that passed its fd on (fork+exec by p2pbuf-client, SCM_RIGHTS by vm-importer)
#     or keeps only its IOMMU mapping, and released: revoking (released), holders 1, lingering
#     after the deadline, no cycle, gone once the last reference is dropped  [revoke-pass-*]
#  12 devices that cannot be opened: nvme without a driver and a missing address are failed
#     with a message, the others serve; a second p2pbufd is told a device is busy  [open-*]
#  13 devices changed by a reload, on a p2pbufd that starts with ivshmem alone: a reload adds
#     edu (opened on the worker: cycling, then ready; an export works), one removes it again
#     (closed: no fd of it left); then one removes ivshmem while a p2pbuf-client holder
#     lets go when told and a holder keeps its buffer (vm-importer dma-hold mapping it with
#     its own edu in the iommufd flavour, a process the CLI passed the fd to in stock): both
#     hear reason policy, the kept buffer is revoked at the deadline by closing ivshmem (the
#     mapping is dead, MAP_FILE ENODEV), ivshmem is no longer listed and p2pbufd holds no
#     VFIO fd                                                           [reload-*]
#  14 two devices of one IOMMU group (run-vm.sh's multifunction slot): both served, one group
#     fd and container (legacy) or one iommufd; a reset of one leaves the other's leases live;
#     unbinding one leaves the other serving; both taken over across kill -9 (14b), and fn1
#     alone after a reload removed fn0 (its group's fds move to fn1's names); a second
#     p2pbufd is told which device of the group another process holds (14c)   [group-*]
#  15 a stuck close on one device stalls no other: a p2pbufd owning ivshmem and edu;
#     vm-importer fence-hold puts a vgem fence nobody signals into the buffer of a lease on
#     ivshmem; a reset of ivshmem waits in the kernel's close for it (ivshmem cycling) while a
#     reset of edu answers and edu serves; ivshmem is ready again, generation + 1, once vgem
#     signals the fence (10 s); a SIGTERM with a pending fence: p2pbufd exits 0 after the
#     fence signaled (15b). Figures: edu's reset time alone and with ivshmem stuck, ivshmem's
#     time stuck, the SIGTERM's exit after the fence
#                                                                       [stuck-*]
#  16 vm-bench: the vfio backend's costs against the bare ioctls, on ivshmem (and nvme's CMB
#     by the knob below): export (VFIO_DEVICE_FEATURE DMA_BUF vs p2pbuf_export), release (close vs
#     p2pbuf_lease_release) and reset (close + reopen of the device vs p2pbuf_reset), p50/p99
#     and ratios printed as "vm-bench ..." lines (grep them in WORKDIR/FLAVOUR/serial.log).
#     The bare side opens the device itself by the flavour's path while no p2pbufd runs; the
#     two take turns on the same device in P2PBUF_VM_BENCH_BLOCKS blocks (default 4), who
#     goes first alternating. The daemon also grants from a sim device of its own, round by
#     round with the real one: the same path without VFIO, so that the difference is what the
#     vfio backend adds to a grant. Times are printed, never judged: PASS when both sides
#     measured every figure, FAIL when one could not                    [bench-*]
# Knobs (run-all.sh --append NAME=VALUE): P2PBUF_VM_VERBOSE=1 (guest-lib: show every check's
# output), P2PBUF_VM_DAEMON_LOG=1 (show p2pbufd's whole log, not only its warnings),
# P2PBUF_VM_BENCH_ROUNDS (case 16's exports per side and device, default 200),
# P2PBUF_VM_BENCH_RESETS (its device cycles per side and device, default 8),
# P2PBUF_VM_BENCH_BLOCKS (default 4), P2PBUF_VM_BENCH_DEVICES (default "ivshmem"; "ivshmem nvme"
# adds the CMB, whose bench once crashed the host's QEMU 7.2 with SIGSEGV in three runs).

# shellcheck source=guest-lib.sh
. /test/guest-lib.sh

W=/tmp/vmcases
SOCK=/run/p2pbufd/p2pbufd.sock
P2PBUF_SOCKET=$SOCK
export P2PBUF_SOCKET
mkdir -p "$W" /run/p2pbufd

# ---- helpers ----

# lease_event EVENT ID STATE REASON: the JSON document of a lease event (p2pbuf-client(1), JSON
# OUTPUT) as last_event shows it: time_ms T, and deadline_ms D for lease-revoking.
lease_event() {
	if [ "$1" = lease-revoking ]; then
		_led=',"deadline_ms":D'
	else
		_led=
	fi
	printf '{"event":"%s","time_ms":T,"lease":{"id":%s,"state":"%s","reason":"%s"%s}}\n' \
		"$1" "$2" "$3" "$4" "$_led"
}

# last_event FILE: the last line of FILE with the numbers of time_ms and deadline_ms, which
# vary, written T and D (a null stays null).
last_event() {
	last_line "$1" | sed -e 's/"time_ms":[0-9][0-9]*/"time_ms":T/' \
		-e 's/"deadline_ms":[0-9][0-9]*/"deadline_ms":D/'
}

# revoked_re ID: a regex matching watch's lease-revoked document for lease ID.
revoked_re() {
	echo "^{\"event\":\"lease-revoked\",\"time_ms\":[0-9]*,\"lease\":{\"id\":$1,"
}

# watch_events DEVICE [ID=NAME]... < WATCH: the events of `p2pbuf-client --json watch` output
# that concern DEVICE's state (- for no device) or the leases ID, as one line of words
# NAME:revoking:REASON, NAME:revoked:REASON and DEVICE:STATE, in order.
watch_events() {
	_wd=$1
	shift
	_wo=
	while IFS= read -r _wline; do
		_wev=$(printf '%s\n' "$_wline" | vm-importer json .event 2>/dev/null)
		case $_wev in
		device-state)
			_ww=$(printf '%s\n' "$_wline" | vm-importer json .device.name .device.state)
			[ "${_ww%% *}" = "$_wd" ] && _wo="$_wo $_wd:${_ww#* }"
			;;
		lease-*)
			_ww=$(printf '%s\n' "$_wline" | vm-importer json .lease.id .lease.reason)
			for _wa in "$@"; do
				[ "${_wa%%=*}" = "${_ww%% *}" ] &&
					_wo="$_wo ${_wa#*=}:${_wev#lease-}:${_ww#* }"
			done
			;;
		esac
	done
	echo "${_wo# }"
}

# bytes_check NAME OFFSET LENGTH: ivshmem's BAR 2 holds the host's pattern at OFFSET, read on
# the exporter's side through sysfs. Debian sets CONFIG_IO_STRICT_DEVMEM and vfio-pci (7.x)
# requests every BAR when the device is opened, so that mmap is refused unless the guest
# booted with iomem=relaxed.
bytes_check() {
	if ! grep -q -w 'iomem=relaxed' /proc/cmdline; then
		fail "$1" "reading $RES2 needs the guest kernel argument iomem=relaxed" \
			"(run-all.sh --append iomem=relaxed); /proc/cmdline: $(cat /proc/cmdline)"
		return
	fi
	check "$1" vm-importer pattern "$RES2" "$2" "$3"
}

# section TITLE: start a group of cases; a failure in the group shows the daemon's log tail.
section() {
	section_end
	echo "== $1 (guest uptime $(cut -d ' ' -f 1 /proc/uptime) s)"
	FAILS_BEFORE=$(grep -c '^FAIL' "$VM_RESULTS" 2>/dev/null)
}

# subsection TITLE: a part of a section, in the log.
subsection() {
	echo "-- $1 (guest uptime $(cut -d ' ' -f 1 /proc/uptime) s)"
}

section_end() {
	_now=$(grep -c '^FAIL' "$VM_RESULTS" 2>/dev/null)
	if [ -n "${DAEMON:-}" ] && [ "${_now:-0}" != "${FAILS_BEFORE:-0}" ]; then
		echo "--- last lines of the p2pbufd log ($DAEMON) ---"
		tail -n 20 "$W/$DAEMON.out" | sed 's/^/p2pbufd| /'
	fi
	FAILS_BEFORE=$_now
}

# start_daemon NAME POLICY: run p2pbufd; wait until it serves (it answers only once its
# devices are open: the socket exists before, with clients queued in its backlog); open its
# socket to every uid, so that a denial comes from the policy, not the file mode.
start_daemon() {
	DAEMON=$1
	rm -f "$SOCK"
	# The guest's init leaves a hard fd limit of 4096, below what the default limits need
	# (p2pbufd refuses to start then); a unit sets LimitNOFILE=, root here raises it.
	ulimit -n 16384 2>/dev/null || ulimit -n 8192
	spawn "$1" p2pbufd --policy "$2" --socket "$SOCK" -v
	DPID=$(cat "$W/$1.pid")
	if ! wait_file "$SOCK" 30 || ! timeout 60 p2pbuf-client status >"$W/$1.status" 2>&1; then
		fail "$1-start" "expected p2pbufd to serve on $SOCK, got: $(last_line "$W/$1.out")"
		return 1
	fi
	chmod 0666 "$SOCK"
	pass "$1-start"
}

# stop_daemon NAME: SIGTERM; it must exit 0. Its warnings and errors are shown (all of its log
# with P2PBUF_VM_DAEMON_LOG=1).
stop_daemon() {
	expect_eq "$1-sigterm-exit" "p2pbufd's exit status after SIGTERM" 0 "$(stop "$1")"
	if [ "${P2PBUF_VM_DAEMON_LOG:-0}" = 1 ]; then
		sed "s/^/$1| /" "$W/$1.out"
	else
		grep '^<[0-4]>' "$W/$1.out" | sed "s/^/$1| /"
	fi
}

# fd_list PID: where each open fd of PID points, sorted.
fd_list() {
	for _f in /proc/"$1"/fd/*; do
		readlink "$_f"
	done | sort
}

# fds_diff A B: "-X" for each fd target A has more of than B, "+X" for the reverse.
fds_diff() {
	awk 'NR == FNR { a[$0]++; next }
	     { if (a[$0] > 0) a[$0]--; else printf "+%s ", $0 }
	     END { for (k in a) for (i = 0; i < a[k]; i++) printf "-%s ", k }' "$1" "$2"
}

# fds_match NAME EXPECTED-FILE: p2pbufd's fds point where EXPECTED-FILE says (a multiset). Clients
# that just exited may not have been noticed yet: allow 5 s.
fds_match() {
	_i=0
	fd_list "$DPID" >"$W/$1.fds"
	while ! cmp -s "$W/$1.fds" "$2" && [ "$_i" -lt 50 ]; do
		sleep 0.1
		_i=$((_i + 1))
		fd_list "$DPID" >"$W/$1.fds"
	done
	expect_eq "$1" "p2pbufd's open fds (count; difference)" "$(wc -l <"$2"); " \
		"$(wc -l <"$W/$1.fds"); $(fds_diff "$2" "$W/$1.fds")"
}

# fds_baseline FILE: p2pbufd's fds once the listening socket is its only socket (the status
# client of start_daemon has gone).
fds_baseline() {
	_i=0
	while fd_list "$DPID" >"$1" && [ "$(grep -c '^socket:' "$1")" != 1 ] && [ "$_i" -lt 50 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	echo "p2pbufd pid $DPID: $(wc -l <"$1") fds at baseline"
}

# watch_start NAME: spawn `p2pbuf-client --json watch` as NAME; PASS NAME-subscribed once it
# reports the end of a throwaway lease (then it hears everything that follows).
watch_start() {
	spawn "$1" p2pbuf-client --json watch
	wait_grep "$W/$1.out" '^{"event":"watching",' 15
	_i=0
	until grep -q '"lease-revoked"' "$W/$1.out" 2>/dev/null || [ "$_i" -ge 20 ]; do
		p2pbuf-client export ivshmem --bar 2 --offset 0 --length 4K -- true \
			>"$W/throwaway.out" 2>&1
		sleep 0.2
		_i=$((_i + 1))
	done
	if grep -q '"lease-revoked"' "$W/$1.out"; then
		pass "$1-subscribed"
	else
		fail "$1-subscribed" "expected watch to report a throwaway lease's end, got '$(
			last_line "$W/$1.out")'; the throwaway export said '$(
			last_line "$W/throwaway.out")'"
	fi
}

# ---- setup ----

echo "flavour $P2PBUF_VM_FLAVOUR, kernel $P2PBUF_VM_KVER"
check load-vfio load_vfio
EDU=$(find_pci "$EDU_ID" | head -n 1)
IVSHMEM=$(find_pci "$IVSHMEM_ID" | head -n 1)
NVME=$(find_pci "$NVME_ID" | head -n 1)
echo "devices: edu $EDU, ivshmem $IVSHMEM, nvme $NVME"
for _b in "$EDU" "$IVSHMEM" "$NVME"; do
	if [ -z "$_b" ] || ! bind_vfio "$_b"; then
		fail setup-bind "expected edu, ivshmem and nvme bound to vfio-pci, got '$_b' unbound"
		exit 1
	fi
done
pass setup-bind
RES2=/sys/bus/pci/devices/$IVSHMEM/resource2

cat >"$W/policy" <<EOF
# p2pbufd VM test policy: three devices; root may export anything and administer; members of
# group p2pbuf (user tester) may export the first MiB of ivshmem's BAR 2.
device edu pci $EDU
device ivshmem pci $IVSHMEM
device nvme pci $NVME
allow user root device edu
allow user root device ivshmem
allow user root device nvme
allow group p2pbuf device ivshmem bar 2 range 0x0+1M
admin user root
EOF
start_daemon p2pbufd "$W/policy" || exit 1
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_path="through iommufd (/dev/vfio/devices/"
else
	_path="through legacy VFIO group"
fi
check daemon-vfio-path grep -q "$_path" "$W/p2pbufd.out"
fds_baseline "$W/fds-baseline"

# ---- 1: devices ----
section "1: devices"
if p2pbuf-client --json devices >"$W/devices.json" 2>"$W/devices.err"; then
	pass devices-cli
else
	fail devices-cli "p2pbuf-client --json devices: $(last_line "$W/devices.err")"
fi
expect_eq devices-count "devices listed" 3 "$(jget "$W/devices.json" '.devices#')"
# device_facts NAME BAR...: "backend state address size-of-each-BAR" of NAME.
device_facts() {
	_d=".devices[name=$1]"
	printf '%s %s %s' "$(jget "$W/devices.json" "$_d.backend")" \
		"$(jget "$W/devices.json" "$_d.state")" "$(jget "$W/devices.json" "$_d.address")"
	shift
	for _bar in "$@"; do
		printf ' bar%s=%s' "$_bar" "$(jget "$W/devices.json" "$_d.bars[index=$_bar].size")"
	done
	echo
}
expect_eq devices-edu "edu" "vfio ready $EDU bar0=1048576" "$(device_facts edu 0)"
expect_eq devices-ivshmem "ivshmem" "vfio ready $IVSHMEM bar2=2097152" \
	"$(device_facts ivshmem 2)"
expect_eq devices-nvme "nvme" "vfio ready $NVME bar0=16384 bar2=2097152" \
	"$(device_facts nvme 0 2)"
expect_eq devices-nvme-msix-reserved "nvme BAR 0 reserved ranges (MSI-X table, PBA)" \
	"8192 12288" "$(jget "$W/devices.json" '.devices[name=nvme].bars[index=0].reserved[0].offset') $(
		jget "$W/devices.json" '.devices[name=nvme].bars[index=0].reserved[1].offset')"

# ---- 2: an export's fd ----
section "2: export fdinfo"
# shellcheck disable=SC2016 # expanded by the command's own shell
p2pbuf-client export ivshmem --bar 2 --offset 0x1000 --length 0x2000 --label fdinfo -- \
	sh -c 'cat /proc/self/fdinfo/$P2PBUF_FD &&
		echo "env fd=$P2PBUF_FD lease=$P2PBUF_LEASE_ID size=$P2PBUF_SIZE device=$P2PBUF_DEVICE"' \
	>"$W/fdinfo.out" 2>&1
_rc=$?
sed 's/^/fdinfo| /' "$W/fdinfo.out"
expect_eq export-cli-exit "export ... -- sh: exit status" 0 "$_rc"
_lease=$(sed -n 's/.* lease=\([0-9]*\) .*/\1/p' "$W/fdinfo.out")
fdinfo_field() {
	awk -v k="$1:" '$1 == k { print $2 }' "$W/fdinfo.out"
}
expect_eq export-fdinfo-exp-name "fdinfo exp_name" vfio_pci_core "$(fdinfo_field exp_name)"
expect_eq export-fdinfo-size "fdinfo size" 8192 "$(fdinfo_field size)"
expect_eq export-fdinfo-name "fdinfo name (dma-buf name)" "p2pbuf-lease-${_lease:-?}" \
	"$(fdinfo_field name)"
expect_eq export-env "P2PBUF_SIZE and P2PBUF_DEVICE" "size=8192 device=ivshmem" \
	"$(sed -n 's/.* \(size=[0-9]* device=.*\)/\1/p' "$W/fdinfo.out")"

# ---- 3: policy ----
section "3: policy"
check policy-group-allowed vm-importer as tester vm-importer export ivshmem 2 0x0 0x1000
check policy-group-outside-rule vm-importer as tester \
	vm-importer export --expect EPERM ivshmem 2 0x100000 0x1000
check policy-other-denied vm-importer as other vm-importer export --expect EPERM ivshmem 2 0 0x1000
vm-importer as other p2pbuf-client export ivshmem --bar 2 --offset 0 --length 4K -- true \
	>"$W/denied.out" 2>&1
_rc=$?
if [ "$_rc" = 4 ] && grep -q 'denied by policy' "$W/denied.out"; then
	pass policy-other-denied-cli
else
	fail policy-other-denied-cli "expected exit 4 and 'denied by policy', got exit $_rc: $(
		last_line "$W/denied.out")"
fi
vm-importer as tester p2pbuf-client reset ivshmem >"$W/reset-denied.out" 2>&1
_rc=$?
expect_eq policy-reset-needs-admin "non-admin reset: exit status, output" \
	"4 yes" "$_rc $(says "$W/reset-denied.out" 'denied by policy')"

# ---- 4: ranges ----
section "4: ranges"
# refused NAME EXIT ERRNO WORDS DEVICE BAR OFFSET LENGTH: the CLI exits EXIT and says WORDS;
# the library returns -ERRNO.
refused() {
	p2pbuf-client export "$5" --bar "$6" --offset "$7" --length "$8" -- true >"$W/$1.out" 2>&1
	_rc=$?
	if [ "$_rc" = "$2" ] && grep -q -e "$4" "$W/$1.out"; then
		pass "$1-cli"
	else
		fail "$1-cli" "export $5 bar $6 $7+$8: expected exit $2 and '$4', got exit $_rc: $(
			last_line "$W/$1.out")"
	fi
	check "$1-lib" vm-importer export --expect "$3" "$5" "$6" "$7" "$8"
}
refused range-unaligned-offset 6 EINVAL "invalid request" ivshmem 2 0x800 0x1000
refused range-unaligned-length 6 EINVAL "invalid request" ivshmem 2 0 0x800
refused range-outside-bar 6 ERANGE "outside the BAR" ivshmem 2 0x200000 0x1000
refused range-past-bar-end 6 ERANGE "outside the BAR" ivshmem 2 0x1ff000 0x2000
refused range-msix-table 6 EADDRNOTAVAIL "MSI-X" nvme 0 0x2000 0x1000
refused range-msix-pba 6 EADDRNOTAVAIL "MSI-X" nvme 0 0x3000 0x1000
refused range-msix-overlap 6 EADDRNOTAVAIL "MSI-X" nvme 0 0x1000 0x2000
check range-nvme-registers-allowed vm-importer export nvme 0 0 0x1000

# ---- 5 and 6: a held lease: its bytes, and leases ----
section "5, 6: a held lease"
spawn holder p2pbuf-client --json export ivshmem --bar 2 --offset 0x10000 --length 0x4000 \
	--label holder
_lease=$(lease_of holder)
if [ -z "$_lease" ]; then
	fail leases-holder-export "expected a lease line, got: $(last_line "$W/holder.out")"
fi
p2pbuf-client --json leases --all >"$W/leases.json" 2>&1
_l=".leases[id=$_lease]"
_off=$(jget "$W/leases.json" "$_l.ranges[0].offset")
_len=$(jget "$W/leases.json" "$_l.ranges[0].length")
expect_eq leases-range "lease $_lease: device bar offset length" "ivshmem 2 65536 16384" \
	"$(jget "$W/leases.json" "$_l.device") $(jget "$W/leases.json" "$_l.bar") $_off $_len"
bytes_check lease-bytes "${_off:-0}" "${_len:-16}"
expect_eq leases-holders "lease $_lease: state holders label owner_uid" "active 1 holder 0" \
	"$(jget "$W/leases.json" "$_l.state") $(jget "$W/leases.json" "$_l.holders") $(
		jget "$W/leases.json" "$_l.label") $(jget "$W/leases.json" "$_l.owner_uid")"
expect_eq leases-holder-exit "holder's exit status after SIGTERM" 0 "$(stop holder)"
p2pbuf-client --json leases --all >"$W/leases-after.json" 2>&1
expect_eq leases-released "leases listed after the holder let go" 0 \
	"$(jget "$W/leases-after.json" '.leases#')"

# ---- 7: reset ----
section "7: reset"
watch_start watch
spawn holder7 p2pbuf-client --json export ivshmem --bar 2 --offset 0x20000 --length 0x1000 \
	--label reset-holder
_lease=$(lease_of holder7)
p2pbuf-client reset ivshmem >"$W/reset.out" 2>&1
_rc=$?
expect_eq reset-cli "p2pbuf-client reset ivshmem: exit status, output" \
	"0 device ivshmem reset; its leases have ended" "$_rc $(last_line "$W/reset.out")"
expect_eq reset-holder-exit "holder's exit status" 10 "$(reap holder7 15)"
expect_eq reset-holder-told "holder's last line" \
	"$(lease_event lease-revoked "${_lease:-?}" ended reset)" "$(last_event "$W/holder7.out")"
wait_grep "$W/watch.out" '"state":"ready"' 10
expect_eq watch-exit "watch's exit status after SIGTERM" 0 "$(stop watch)"
sed 's/^/watch| /' "$W/watch.out"
expect_eq watch-reset-events "watch's events for the holder's lease and ivshmem" \
	"holder:revoked:reset ivshmem:cycling ivshmem:ready" \
	"$(watch_events ivshmem "${_lease:-?}=holder" <"$W/watch.out")"
p2pbuf-client --json devices >"$W/devices7.json" 2>&1
expect_eq reset-generation "ivshmem after the reset: state generation" "ready 1" \
	"$(jget "$W/devices7.json" '.devices[name=ivshmem].state') $(
		jget "$W/devices7.json" '.devices[name=ivshmem].generation')"
check reset-new-export vm-importer export ivshmem 2 0x20000 0x1000
bytes_check reset-bytes-kept 0x20000 0x1000
# Everything of cases 1-7 has ended: the daemon holds what it held at the start.
fds_match fds-after-reset "$W/fds-baseline"

# ---- 8: unbind ----
section "8: unbind nvme"
# What p2pbufd holds for nvme, to be gone after the unbind: its group or cdev, the container
# or iommufd, the legacy device fd (an anonymous inode; on the cdev path the cdev itself),
# and its REQ and (PCIe only) ERR eventfds. Read before the unbind removes vfio-dev/.
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	printf '%s\n' "$(vfio_cdev "$NVME")" /dev/iommu
else
	printf '%s\n' /dev/vfio/vfio "/dev/vfio/$(vfio_group "$NVME")" 'anon_inode:[vfio-device]'
fi >"$W/fds-nvme"
echo 'anon_inode:[eventfd]' >>"$W/fds-nvme"
if [ -e "/sys/bus/pci/devices/$NVME/current_link_speed" ]; then
	echo 'anon_inode:[eventfd]' >>"$W/fds-nvme"
fi
awk 'NR == FNR { n[$0]++; next } n[$0] > 0 { n[$0]--; next } { print }' "$W/fds-nvme" \
	"$W/fds-baseline" >"$W/fds-expected-end"
spawn holder8 p2pbuf-client --json export nvme --bar 2 --offset 0 --length 0x10000 \
	--label unbind-holder
_lease=$(lease_of holder8)
# The unbind blocks until p2pbufd has closed the device: in the background.
spawn unbind sh -c "echo $NVME >/sys/bus/pci/drivers/vfio-pci/unbind"
expect_eq unbind-holder-exit "nvme holder's exit status" 10 "$(reap holder8 15)"
expect_eq unbind-holder-told "nvme holder's last line" \
	"$(lease_event lease-revoked "${_lease:-?}" ended device-gone)" \
	"$(last_event "$W/holder8.out")"
check unbind-others-serve vm-importer export ivshmem 2 0x30000 0x1000
expect_eq unbind-completes "the unbind's exit status" 0 "$(reap unbind 30)"
p2pbuf-client --json devices >"$W/devices8.json" 2>&1
expect_eq unbind-devices-state "states of edu ivshmem nvme" "ready ready gone" \
	"$(jget "$W/devices8.json" '.devices[name=edu].state') $(
		jget "$W/devices8.json" '.devices[name=ivshmem].state') $(
		jget "$W/devices8.json" '.devices[name=nvme].state')"
p2pbuf-client export nvme --bar 2 --offset 0 --length 4K -- true >"$W/gone.out" 2>&1
_rc=$?
expect_eq unbind-export-refused-cli "export from the gone nvme: exit status, output" \
	"5 yes" "$_rc $(says "$W/gone.out" 'not available')"
check unbind-export-refused-lib vm-importer export --expect ENXIO nvme 2 0 0x1000
check unbind-export-edu vm-importer export edu 0 0 0x1000

# ---- 9: fds and shutdown ----
section "9: fds, shutdown"
fds_match fds-after-unbind "$W/fds-expected-end"
stop_daemon p2pbufd
section_end

# ---- 10: iommufd: a holder that imports its lease into its own IOAS ----
if [ "$P2PBUF_VM_FLAVOUR" != iommufd ]; then
	skip iommufd-dma "Debian's stock kernel has no iommufd: a holder cannot import its buffer"
else
	section "10: iommufd holder with its own edu"
	cat >"$W/policy-dma" <<EOF
# Only ivshmem: edu belongs to the test's holder, not to p2pbufd.
device ivshmem pci $IVSHMEM
allow user root device ivshmem
admin user root
EOF
	start_daemon p2pbufd-dma "$W/policy-dma" || exit 1
	timeout 120 vm-importer dma --edu "$EDU" ivshmem 2 0x40000 0x10000 >"$W/dma.out" 2>&1
	echo "vm-importer dma exited $?"
	sed 's/^/dma| /' "$W/dma.out"
	steps_results iommufd "$W/dma.out"
	# The revoked mapping's DMA must have faulted in the IOMMU: the kernel logs it with edu's
	# address and the page.
	dmar_faults iommufd-dmar-fault "$W/dma.out"
	stop_daemon p2pbufd-dma
fi
section_end


# ---- 11: revoking one lease ----
# A p2pbufd that owns only ivshmem (edu belongs to vm-importer in the iommufd flavour) with a
# 2 s revoke-deadline: holders are counted every 100 ms, the device cycles at the deadline.
section "11: revocation of one lease"
DEADLINE_MS=2000
cat >"$W/policy-revoke" <<EOF
device ivshmem pci $IVSHMEM revoke-deadline 2s
allow user root device ivshmem
admin user root
EOF
start_daemon p2pbufd-revoke "$W/policy-revoke" || exit 1
fds_baseline "$W/fds-revoke-baseline"

# spawn_importer NAME MODE ARG...: spawn vm-importer MODE, with our own edu (--edu) in the
# iommufd flavour.
spawn_importer() {
	_si=$1
	_sm=$2
	shift 2
	if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
		spawn "$_si" vm-importer "$_sm" --edu "$EDU" "$@"
	else
		spawn "$_si" vm-importer "$_sm" "$@"
	fi
}

# importer_ready NAME: wait for the "ready lease V bystander Y generation G" line of a spawned
# vm-importer revoke; sets _v, _y and _gen0 ("" if it never came).
importer_ready() {
	_v='' _y='' _gen0=''
	wait_grep "$W/$1.out" '^ready lease ' 60 || return 1
	# shellcheck disable=SC2046 # the three numbers
	set -- $(sed -n \
		's/^ready lease \([0-9]*\) bystander \([0-9]*\) generation \([0-9]*\)$/\1 \2 \3/p' \
		"$W/$1.out")
	_v=$1 _y=$2 _gen0=$3
}

# revoke_cli NAME ID: the admin revokes lease ID with p2pbuf-client.
revoke_cli() {
	p2pbuf-client revoke "$2" >"$W/$1.out" 2>&1
	_rc=$?
	expect_eq "$1" "p2pbuf-client revoke $2: exit status, output" \
		"0 lease $2 is being revoked; its holder has been told to let go" \
		"$_rc $(last_line "$W/$1.out")"
}

# lease_facts FILE ID: "state reason holders lingering" of lease ID in FILE (leases --json),
# "gone" when it is not listed.
lease_facts() {
	_l=".leases[id=$2]"
	if _f=$(jget "$1" "$_l.state" "$_l.reason" "$_l.holders" "$_l.lingering"); then
		echo "$_f"
	else
		echo gone
	fi
}

# leases_now FILE: every lease, as the admin sees it.
leases_now() {
	p2pbuf-client --json leases --all >"$1" 2>&1
}

# wait_lease ID FACTS SECONDS: poll the listing until lease ID's facts read FACTS; prints them.
wait_lease() {
	_i=0
	while leases_now "$W/leases-poll.json" &&
		[ "$(lease_facts "$W/leases-poll.json" "$1")" != "$2" ] && [ "$_i" -lt $(($3 * 5)) ]; do
		sleep 0.2
		_i=$((_i + 1))
	done
	lease_facts "$W/leases-poll.json" "$1"
}

# ivshmem_state: "state generation" of ivshmem.
ivshmem_state() {
	p2pbuf-client --json devices >"$W/devices-revoke.json" 2>&1
	jget "$W/devices-revoke.json" '.devices[name=ivshmem].state' \
		'.devices[name=ivshmem].generation'
}

# cycles_logged: how many device cycles for an overdue lease p2pbufd has logged so far.
cycles_logged() {
	grep -c 'kept it past the deadline (reason [a-z-]*); cycling the device' \
		"$W/p2pbufd-revoke.out"
}

# What holds the buffer of a lease the holder kept: its fd, plus its IOMMU mapping (iommufd
# takes a dma-buf reference for IOMMU_IOAS_MAP_FILE) in the iommufd flavour.
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	HELD=2
else
	HELD=1
fi
watch_start revoke-watch

# -- A: the holder keeps its fd (and mapping) past the deadline: the device cycles --
subsection "11a: the holder keeps its fd past the deadline"
spawn other11a p2pbuf-client --json export ivshmem --bar 2 --offset 0x120000 --length 0x1000 \
	--label revoke-other
_other=$(lease_of other11a)
spawn_importer keep revoke --then keep --deadline "$DEADLINE_MS" ivshmem 2 0x100000 0x10000
importer_ready keep
revoke_cli revoke-keep-cli "${_v:-?}"
leases_now "$W/leases11a.json"
expect_eq revoke-keep-listed-revoking \
	"lease ${_v:-?} right after the revoke: state reason holders lingering" \
	"revoking admin $HELD false" "$(lease_facts "$W/leases11a.json" "${_v:-?}")"
_dl=$(jget "$W/leases11a.json" ".leases[id=${_v:-?}].deadline_ms")
expect_eq revoke-keep-listed-deadline "lease ${_v:-?}: deadline_ms set" yes \
	"$([ "${_dl:-0}" -gt 0 ] 2>/dev/null && echo yes || echo "'$_dl'")"
expect_eq revoke-keep-importer-exit "vm-importer revoke --then keep: exit status" 0 \
	"$(reap keep 60)"
stop keep >/dev/null # if it did not end
sed 's/^/keep| /' "$W/keep.out"
steps_results revoke-keep "$W/keep.out"
expect_eq revoke-keep-other-told "the other client (lease ${_other:-?}): exit status, last line" \
	"10 $(lease_event lease-revoked "${_other:-?}" ended device-cycle)" \
	"$(reap other11a 15) $(last_event "$W/other11a.out")"
stop other11a >/dev/null # if it was not told
expect_eq revoke-keep-generation-cli "ivshmem after the cycle: state generation" \
	"ready $((${_gen0:-0} + 1))" "$(ivshmem_state)"
leases_now "$W/leases11a-after.json"
expect_eq revoke-keep-leases-ended "leases victim, bystander, other after the cycle" \
	"gone gone gone" "$(lease_facts "$W/leases11a-after.json" "${_v:-?}") $(
		lease_facts "$W/leases11a-after.json" "${_y:-?}") $(
		lease_facts "$W/leases11a-after.json" "${_other:-?}")"
_msg="kept it past the deadline (reason admin); cycling the device"
expect_eq revoke-keep-logged "p2pbufd's log: the cycle for lease ${_v:-?}" yes \
	"$(says "$W/p2pbufd-revoke.out" "lease ${_v:-?} on ivshmem: $HELD holder(s) $_msg")"
wait_grep "$W/revoke-watch.out" "\"state\":\"ready\",\"generation\":$((${_gen0:-0} + 1))" 10
expect_eq revoke-keep-watch "watch's events for the victim's lease and ivshmem" \
	"victim:revoking:admin victim:revoked:admin ivshmem:cycling ivshmem:ready" \
	"$(watch_events ivshmem "${_v:-?}=victim" <"$W/revoke-watch.out")"
expect_eq revoke-keep-watch-others "watch's events for the bystander's and the other's leases" \
	"bystander:revoked:device-cycle other:revoked:device-cycle" "$(
		watch_events - "${_y:-?}=bystander" <"$W/revoke-watch.out") $(
		watch_events - "${_other:-?}=other" <"$W/revoke-watch.out")"
check revoke-keep-new-export-cli vm-importer export ivshmem 2 0x120000 0x1000
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	dmar_faults revoke-keep-dmar-faults "$W/keep.out"
fi
_cycles=$(cycles_logged)

# -- B: the holder unmaps, closes and releases when told: no cycle --
subsection "11b: the holder lets go when told"
_wl=$(wc -l <"$W/revoke-watch.out")
_gen=$(ivshmem_state)
spawn other11b p2pbuf-client --json export ivshmem --bar 2 --offset 0x150000 --length 0x1000 \
	--label revoke-other
_other=$(lease_of other11b)
spawn_importer release revoke --then release --deadline "$DEADLINE_MS" ivshmem 2 0x130000 0x10000
importer_ready release
revoke_cli revoke-release-cli "${_v:-?}"
expect_eq revoke-release-importer-exit "vm-importer revoke --then release: exit status" 0 \
	"$(reap release 60)"
stop release >/dev/null
sed 's/^/release| /' "$W/release.out"
steps_results revoke-release "$W/release.out"
# p2pbuf-client holding a lease does the same: it closes its fd and releases (exit 10).
spawn cli11b p2pbuf-client --json export ivshmem --bar 2 --offset 0x151000 --length 0x1000 \
	--label revoke-cli
_cli=$(lease_of cli11b)
revoke_cli revoke-release-cli-holder-revoke "${_cli:-?}"
expect_eq revoke-release-cli-holder \
	"p2pbuf-client holding lease ${_cli:-?}: exit status, last line" \
	"10 $(lease_event lease-revoking "${_cli:-?}" revoking admin)" \
	"$(reap cli11b 15) $(last_event "$W/cli11b.out")"
stop cli11b >/dev/null
expect_eq revoke-release-cli-holder-ended "lease ${_cli:-?} once its holder let go" gone \
	"$(wait_lease "${_cli:-?}" gone 1)"
leases_now "$W/leases11b.json"
expect_eq revoke-release-other-untouched \
	"the other client (lease ${_other:-?}): running; state reason holders lingering" \
	"running active null 1 false" \
	"$(reap other11b 0) $(lease_facts "$W/leases11b.json" "${_other:-?}")"
expect_eq revoke-release-no-cycle "ivshmem: state generation; cycles logged" \
	"$_gen; $_cycles" "$(ivshmem_state); $(cycles_logged)"
expect_eq revoke-release-logged "p2pbufd's log: lease ${_v:-?} ended with reason admin" yes \
	"$(says "$W/p2pbufd-revoke.out" "lease ${_v:-?} ended: device=ivshmem .* reason=admin")"
wait_grep "$W/revoke-watch.out" "$(revoked_re "${_cli:-?}")" 5
expect_eq revoke-release-watch \
	"watch's events for the victim's, the CLI holder's and the other's leases, and ivshmem" \
	"victim:revoking:admin victim:revoked:admin cli:revoking:admin cli:revoked:admin" \
	"$(tail -n "+$((_wl + 1))" "$W/revoke-watch.out" |
		watch_events ivshmem "${_v:-?}=victim" "${_cli:-?}=cli" "${_other:-?}=other")"
expect_eq revoke-release-other-exit "the other client's exit status after SIGTERM" 0 \
	"$(stop other11b)"

# -- C: released while another process still holds the buffer: it lingers, no cycle --
subsection "11c: released, but still held elsewhere"
_wl=$(wc -l <"$W/revoke-watch.out")
_gen=$(ivshmem_state)
spawn_importer passfd pass-fd ivshmem 2 0x170000 0x10000
_p='' _m=''
if wait_grep "$W/passfd.out" '^wait lingering' 60; then
	_p=$(sed -n 's/^released lease \([0-9]*\) .*/\1/p' "$W/passfd.out")
	_m=$(sed -n 's/^released lease .* mapped \([0-9]*\)$/\1/p' "$W/passfd.out")
fi
# p2pbuf-client runs a command with the fd; the command leaves a background process holding
# it and exits; p2pbuf-client then releases the lease.
# shellcheck disable=SC2016 # expanded by the command's own shell
p2pbuf-client export ivshmem --bar 2 --offset 0x160000 --length 0x1000 --label pass-exec -- \
	sh -c 'sleep 60 </dev/null >/dev/null 2>&1 & echo "keeper=$! lease=$P2PBUF_LEASE_ID"' \
	>"$W/pass-exec.out" 2>&1
_rc=$?
leases_now "$W/leases11c.json"
_ke=$(sed -n 's/^keeper=\([0-9]*\) .*/\1/p' "$W/pass-exec.out")
_e=$(sed -n 's/.* lease=\([0-9]*\)$/\1/p' "$W/pass-exec.out")
expect_eq revoke-pass-exec-cli "export -- sh -c 'sleep &': exit status, keeper, lease" "0 yes yes" \
	"$_rc $([ -n "$_ke" ] && echo yes) $([ -n "$_e" ] && echo yes)"
echo "pass-exec: lease ${_e:-?} held by pid ${_ke:-?}: $(fd_list "${_ke:-none}" 2>/dev/null |
	grep -c dmabuf) dma-buf fd(s)"
# names: exec (fork+exec), fd (SCM_RIGHTS), mapped (only the IOMMU mapping holds it)
_held="exec=${_e:-?} fd=${_p:-?}"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_held="$_held mapped=${_m:-?}"
else
	skip revoke-pass-mapped "Debian's stock kernel has no iommufd: no importer mapping"
fi
for _h in $_held; do
	expect_eq "revoke-pass-${_h%%=*}-held" \
		"lease ${_h#*=} just released: state reason holders lingering" \
		"revoking released 1 false" "$(lease_facts "$W/leases11c.json" "${_h#*=}")"
done
# Past the deadline: lingering, never cycled.
_msg="kept it past the deadline (reason released); not enforced"
for _h in $_held; do
	expect_eq "revoke-pass-${_h%%=*}-lingering" \
		"lease ${_h#*=} past the deadline: state reason holders lingering" \
		"revoking released 1 true" "$(wait_lease "${_h#*=}" "revoking released 1 true" 5)"
	expect_eq "revoke-pass-${_h%%=*}-logged" "p2pbufd's log: lease ${_h#*=} lingers" yes \
		"$(says "$W/p2pbufd-revoke.out" "lease ${_h#*=} on ivshmem: 1 holder(s) $_msg")"
done
expect_eq revoke-pass-no-cycle "ivshmem: state generation; cycles logged" \
	"$_gen; $_cycles" "$(ivshmem_state); $(cycles_logged)"
# The last references go, one by one.
[ -n "$_ke" ] && kill "$_ke"
expect_eq revoke-pass-exec-ended "lease ${_e:-?} once the process holding it exited" gone \
	"$(wait_lease "${_e:-?}" gone 3)"
expect_eq revoke-pass-fd-still-held "lease ${_p:-?} meanwhile" "revoking released 1 true" \
	"$(lease_facts "$W/leases-poll.json" "${_p:-?}")"
kill -USR1 "$(cat "$W/passfd.pid")"
wait_grep "$W/passfd.out" '^wait keeper-closed' 30
expect_eq revoke-pass-fd-ended "lease ${_p:-?} once the keeper closed its copy" gone \
	"$(wait_lease "${_p:-?}" gone 3)"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	expect_eq revoke-pass-mapped-still-held "lease ${_m:-?} meanwhile (only its IOMMU mapping)" \
		"revoking released 1 true" "$(lease_facts "$W/leases-poll.json" "${_m:-?}")"
fi
kill -USR1 "$(cat "$W/passfd.pid")"
expect_eq revoke-pass-importer-exit "vm-importer pass-fd: exit status" 0 "$(reap passfd 30)"
stop passfd >/dev/null
sed 's/^/passfd| /' "$W/passfd.out"
steps_results revoke-pass "$W/passfd.out"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	expect_eq revoke-pass-mapped-ended "lease ${_m:-?} once unmapped" gone \
		"$(wait_lease "${_m:-?}" gone 3)"
fi
expect_eq revoke-pass-no-cycle-end "ivshmem at the end: state generation; cycles logged" \
	"$_gen; $_cycles" "$(ivshmem_state); $(cycles_logged)"
# Observers hear a released lease go revoking and end, both with reason released; ivshmem's
# state never changes.
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_want="fd:revoking:released mapped:revoking:released exec:revoking:released"
	_want="$_want exec:revoked:released fd:revoked:released mapped:revoked:released"
	wait_grep "$W/revoke-watch.out" "$(revoked_re "${_m:-?}")" 5
else
	_want="fd:revoking:released exec:revoking:released exec:revoked:released fd:revoked:released"
	wait_grep "$W/revoke-watch.out" "$(revoked_re "${_p:-?}")" 5
fi
expect_eq revoke-pass-watch "watch's events for the released leases and ivshmem" "$_want" \
	"$(tail -n "+$((_wl + 1))" "$W/revoke-watch.out" | watch_events ivshmem \
		"${_e:-?}=exec" "${_p:-?}=fd" "${_m:-?}=mapped")"

expect_eq revoke-watch-exit "watch's exit status after SIGTERM" 0 "$(stop revoke-watch)"
fds_match fds-after-revoke "$W/fds-revoke-baseline"
stop_daemon p2pbufd-revoke
section_end

# ---- 12: devices that cannot be opened ----
# nvme has had no driver since case 8, and 0000:7f:1f.7 does not exist: each is listed as
# failed with a message that says what to do, and p2pbufd serves the others. A second
# p2pbufd asking for a device the first one holds is told it is busy.
section "12: devices that cannot be opened"
cat >"$W/policy-open" <<EOF
device edu pci $EDU
device ivshmem pci $IVSHMEM
device nvme pci $NVME
device ghost pci 0000:7f:1f.7
allow user root device edu
allow user root device ivshmem
allow user root device nvme
admin user root
EOF
start_daemon p2pbufd-open "$W/policy-open" || exit 1
p2pbuf-client --json devices >"$W/devices12.json" 2>&1
expect_eq open-states "states of edu ivshmem nvme ghost" "ready ready failed failed" \
	"$(jget "$W/devices12.json" '.devices[name=edu].state') $(
		jget "$W/devices12.json" '.devices[name=ivshmem].state') $(
		jget "$W/devices12.json" '.devices[name=nvme].state') $(
		jget "$W/devices12.json" '.devices[name=ghost].state')"
jget "$W/devices12.json" '.devices[name=nvme].message' >"$W/nvme-message"
expect_eq open-unbound-message "nvme's message names the fix" yes \
	"$(says "$W/nvme-message" "not bound to any driver (run p2pbuf-vfio-bind $NVME)")"
jget "$W/devices12.json" '.devices[name=ghost].message' >"$W/ghost-message"
expect_eq open-missing-message "ghost's message" yes \
	"$(says "$W/ghost-message" 'no PCI device at 0000:7f:1f.7')"
check open-startup-logged grep -q "device nvme ($NVME): .*not bound to any driver" \
	"$W/p2pbufd-open.out"
check open-others-serve vm-importer export ivshmem 2 0 0x1000
check open-failed-refused vm-importer export --expect EIO nvme 2 0 0x1000
# Busy: the first daemon holds ivshmem.
printf 'device ivshmem pci %s\nallow user root device ivshmem\n' "$IVSHMEM" >"$W/policy-busy"
spawn p2pbufd-busy p2pbufd --policy "$W/policy-busy" --socket "$W/sock-busy"
if wait_file "$W/sock-busy" 30 &&
	timeout 60 p2pbuf-client --socket "$W/sock-busy" --json devices >"$W/devices-busy.json" 2>&1
then
	jget "$W/devices-busy.json" '.devices[name=ivshmem].message' >"$W/busy-message"
	expect_eq open-busy "second daemon: ivshmem state; message says it is open elsewhere" \
		"failed yes" "$(jget "$W/devices-busy.json" '.devices[name=ivshmem].state') $(
			says "$W/busy-message" 'already open')"
else
	fail open-busy "the second p2pbufd did not serve: $(last_line "$W/p2pbufd-busy.out")"
fi
expect_eq open-busy-exit "second p2pbufd's exit status after SIGTERM" 0 "$(stop p2pbufd-busy)"
stop_daemon p2pbufd-open
section_end

# ---- 13: devices changed by a reload ----
section "13: devices changed by a reload"
RLOG=$W/p2pbufd-reload.out
# reload_policy NAME TEXT: write TEXT as the policy, SIGHUP, and wait for the reload's audit
# line; NAME-logged passes if it reads "reloaded", with its summary shown.
reload_policy() {
	_n=$(grep -c 'reloaded: \|reload refused' "$RLOG")
	printf '%s\n' "$2" >"$W/policy-reload"
	kill -HUP "$DPID"
	_i=0
	while [ "$(grep -c 'reloaded: \|reload refused' "$RLOG")" = "$_n" ] && [ "$_i" -lt 300 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	_line=$(grep 'reloaded: \|reload refused' "$RLOG" | tail -n 1)
	echo "reload: $_line"
	expect_eq "$1-logged" "the reload's audit line" "reloaded" \
		"$(printf '%s' "$_line" | sed -n 's/.* \(reloaded\): .*/\1/p')"
}
# device_state NAME: NAME's state as listed, "unlisted" when it is not.
device_state() {
	p2pbuf-client --json devices >"$W/devices13.json" 2>&1
	_ds=$(jget "$W/devices13.json" ".devices[name=$1].state") || _ds=unlisted
	echo "$_ds"
}
# wait_device NAME STATE SECONDS: poll until NAME is STATE; prints the last state seen.
wait_device() {
	_i=0
	while [ "$(device_state "$1")" != "$2" ] && [ "$_i" -lt $(($3 * 5)) ]; do
		sleep 0.2
		_i=$((_i + 1))
	done
	device_state "$1"
}
# vfio_fds: how many of p2pbufd's fds are VFIO or iommufd ones.
vfio_fds() {
	fd_list "$DPID" | grep -c -e '^/dev/vfio' -e '^/dev/iommu' -e 'vfio-device'
}
IVSHMEM_DECL="device ivshmem pci $IVSHMEM revoke-deadline 2s
allow user root device ivshmem"
printf '%s\nadmin user root\n' "$IVSHMEM_DECL" >"$W/policy-reload"
start_daemon p2pbufd-reload "$W/policy-reload" || exit 1
_vfio0=$(vfio_fds)
watch_start reload-watch

subsection "13a: a reload adds edu"
reload_policy reload-add "$IVSHMEM_DECL
device edu pci $EDU
allow user root device edu
admin user root"
expect_eq reload-add-summary "the reload's summary" yes \
	"$(says "$RLOG" 'rules 1 added, 0 removed; devices 1 added, 0 removed, 0 changed')"
expect_eq reload-add-ready "edu after the reload" ready "$(wait_device edu ready 30)"
check reload-add-export vm-importer export edu 0 0 0x1000
wait_grep "$W/reload-watch.out" '"name":"edu","state":"ready"' 10
expect_eq reload-add-watch "watch's events for edu" "edu:cycling edu:ready" \
	"$(watch_events edu <"$W/reload-watch.out")"

subsection "13b: a reload removes edu, which has no lease"
reload_policy reload-remove-idle "$IVSHMEM_DECL
admin user root"
expect_eq reload-remove-idle-unlisted "edu after the reload" unlisted \
	"$(wait_device edu unlisted 30)"
expect_eq reload-remove-idle-closed "p2pbufd's VFIO fds once edu is closed" "$_vfio0" \
	"$(vfio_fds)"
wait_grep "$W/reload-watch.out" '"name":"edu","state":"gone"' 10
expect_eq reload-remove-idle-watch "watch's events for edu" "edu:cycling edu:ready edu:gone" \
	"$(watch_events edu <"$W/reload-watch.out")"

subsection "13c: a reload removes ivshmem, which has leases"
spawn coop13 p2pbuf-client --json export ivshmem --bar 2 --offset 0x180000 --length 0x1000 \
	--label reload-coop
_coop=$(lease_of coop13)
_keeper=''
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	# edu is free again: the holder maps its lease with it, and keeps fd and mapping.
	mkfifo "$W/hold13.ctl"
	vm-importer dma-hold --edu "$EDU" ivshmem 2 0x190000 0x10000 <"$W/hold13.ctl" \
		>"$W/hold.out" 2>&1 &
	_hold=$!
	exec 8>"$W/hold13.ctl"
	wait_grep "$W/hold.out" '^ready lease' 30
	_kept=$(sed -n 's/^ready lease \([0-9]*\)$/\1/p' "$W/hold.out")
	expect_eq reload-remove-held-before "edu DMA through the kept lease, before" live \
		"$(hold check before)"
else
	# The CLI runs a command that leaves a process holding the fd, then releases the lease:
	# it lingers with that holder.
	# shellcheck disable=SC2016 # expanded by the command's own shell
	p2pbuf-client export ivshmem --bar 2 --offset 0x190000 --length 0x1000 --label reload-kept -- \
		sh -c 'sleep 120 </dev/null >/dev/null 2>&1 & echo "keeper=$! lease=$P2PBUF_LEASE_ID"' \
		>"$W/kept13.out" 2>&1
	_keeper=$(sed -n 's/^keeper=\([0-9]*\) .*/\1/p' "$W/kept13.out")
	_kept=$(sed -n 's/.* lease=\([0-9]*\)$/\1/p' "$W/kept13.out")
	expect_eq reload-remove-held-before "lease ${_kept:-?} before: state reason holders lingering" \
		"revoking released 1 false" "$(wait_lease "${_kept:-?}" "revoking released 1 false" 3)"
fi
_wl=$(wc -l <"$W/reload-watch.out")
reload_policy reload-remove-leased "admin user root"
expect_eq reload-remove-leased-summary "the reload's summary" yes \
	"$(says "$RLOG" 'rules 0 added, 1 removed; devices 0 added, 1 removed, 0 changed; 2 lease(s) revoked')"
# While the kept lease lives (until the 2 s deadline), ivshmem is listed as gone.
check reload-remove-leased-no-export vm-importer export --expect ENXIO ivshmem 2 0 0x1000
expect_eq reload-remove-leased-gone "ivshmem right after the reload" gone "$(device_state ivshmem)"
expect_eq reload-remove-coop-told "the cooperative holder (lease ${_coop:-?}): exit status, last line" \
	"10 $(lease_event lease-revoking "${_coop:-?}" revoking policy)" \
	"$(reap coop13 15) $(last_event "$W/coop13.out")"
stop coop13 >/dev/null
expect_eq reload-remove-kept-ended "the kept lease ${_kept:-?} after the deadline" gone \
	"$(wait_lease "${_kept:-?}" gone 10)"
expect_eq reload-remove-closed-logged "p2pbufd's log: ivshmem closed for the kept lease" yes \
	"$(says "$RLOG" "lease ${_kept:-?} on ivshmem: .* (reason policy); closing the removed device")"
expect_eq reload-remove-unlisted "ivshmem once its leases ended" unlisted \
	"$(wait_device ivshmem unlisted 30)"
expect_eq reload-remove-vfio-fds "p2pbufd's VFIO fds once ivshmem is closed" 0 "$(vfio_fds)"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	expect_eq reload-remove-held-dead "edu DMA through the kept lease, after" dead \
		"$(hold check after)"
	expect_eq reload-remove-held-map "IOMMU_IOAS_MAP_FILE of the kept fd, after" ENODEV \
		"$(hold map after)"
	hold sync after >/dev/null
	expect_eq reload-remove-held-told "what the kept lease's holder heard" \
		"revoking policy; revoked policy" \
		"$(awk -v id="${_kept:-?}" '$1 == "event" && $4 == id {
			printf "%s%s %s", sep, $2, $6; sep = "; " }' "$W/hold.out")"
	echo quit >&8
	exec 8>&-
	wait "$_hold"
	sed 's/^/hold13| /' "$W/hold.out"
else
	skip reload-remove-held-dead "Debian's stock kernel has no iommufd: no importer mapping"
	[ -n "$_keeper" ] && kill "$_keeper"
fi
wait_grep "$W/reload-watch.out" "$(revoked_re "${_kept:-?}")" 10
expect_eq reload-remove-watch "watch's events for ivshmem and its two leases" \
	"ivshmem:gone coop:revoking:policy kept:revoking:policy coop:revoked:policy kept:revoked:policy" \
	"$(tail -n "+$((_wl + 1))" "$W/reload-watch.out" |
		watch_events ivshmem "${_coop:-?}=coop" "${_kept:-?}=kept")"
expect_eq reload-watch-exit "watch's exit status after SIGTERM" 0 "$(stop reload-watch)"
stop_daemon p2pbufd-reload
# ---- 14: two devices of one IOMMU group ----
# run-vm.sh's multifunction slot: two ivshmem functions in one IOMMU group. One p2pbufd serves
# both: on the legacy path they share one group fd and one container, on the iommufd path one
# iommufd, and each has its own device fd. vm-importer holds a lease on each (mapped into its
# own IOAS through its own edu in the iommufd flavour) and resets one device, then the other:
# the reset device's lease is revoked, the other's stays active and live, the group's fds stay
# open. Unbinding the functions one by one: the other keeps serving, and the group's fds go
# with the last one. Across kill -9 restarts under a service manager whose fd store keeps one
# copy of the group's fds (14b), both are taken over, in either order. A second p2pbufd asking
# for one function while the first holds the other is told that another process has the
# group, and which device it holds (14c).                                   [group-*]
section "14: two devices of one IOMMU group"
FN0='' FN1=''
for _b in $(find_pci "$IVSHMEM_ID"); do
	ls "/sys/kernel/iommu_groups/$(vfio_group "$_b")/devices" >"$W/group-members"
	if [ "$(wc -l <"$W/group-members")" = 2 ]; then
		FN0=$(head -n 1 "$W/group-members")
		FN1=$(tail -n 1 "$W/group-members")
		break
	fi
done
GRP=$(vfio_group "$FN0")
echo "IOMMU group $GRP: $FN0 $FN1"
if [ -z "$FN0" ] || ! bind_vfio "$FN0" || ! bind_vfio "$FN1"; then
	fail group-bind "expected two ivshmem functions of one IOMMU group bound to vfio-pci," \
		"got '$FN0' and '$FN1'"
	exit 1
fi
pass group-bind

# group_fds: "SHARED OWN" of p2pbufd's fds: how many are the group's shared ones (legacy: the
# group node and the container; iommufd: the iommufd) and how many the devices' own.
group_fds() {
	fd_list "$DPID" >"$W/group-fds"
	if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
		echo "$(grep -c '^/dev/iommu$' "$W/group-fds") $(
			grep -c '^/dev/vfio/devices/' "$W/group-fds")"
	else
		echo "$(grep -c -e "^/dev/vfio/$GRP\$" -e '^/dev/vfio/vfio$' "$W/group-fds") $(
			grep -c '^anon_inode:\[vfio-device\]$' "$W/group-fds")"
	fi
}
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_shared=1
else
	_shared=2
fi

# wait_group_fds WANT: group_fds once it reads WANT (a device is closed on p2pbufd's worker
# thread: allow 5 s).
wait_group_fds() {
	_i=0
	while [ "$(group_fds)" != "$1" ] && [ "$_i" -lt 50 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	group_fds
}

# group_states: "state generation" of fn0, then of fn1.
group_states() {
	p2pbuf-client --json devices >"$W/devices13.json" 2>&1
	jget "$W/devices13.json" '.devices[name=fn0].state' '.devices[name=fn0].generation' \
		'.devices[name=fn1].state' '.devices[name=fn1].generation'
}

cat >"$W/policy-group" <<EOF
# Two functions of IOMMU group $GRP; edu stays the holder's in the iommufd flavour.
device fn0 pci $FN0
device fn1 pci $FN1
allow user root device fn0
allow user root device fn1
admin user root
EOF
start_daemon p2pbufd-group "$W/policy-group" || exit 1
expect_eq group-both-ready "fn0 and fn1: state generation" "ready 0 ready 0" "$(group_states)"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_how="vfio-pci through iommufd (/dev/vfio/devices/vfio[0-9]*)"
else
	_how="vfio-pci through legacy VFIO group $GRP"
fi
jget "$W/devices13.json" '.devices[name=fn1].message' >"$W/group-message"
expect_eq group-shared-message "fn1's message names the device it shares the group with" yes \
	"$(says "$W/group-message" "^$FN1: $_how, shared with \"fn0\" ($FN0)$")"
expect_eq group-fds-shared "p2pbufd's fds: the group's shared ones, the devices' own" \
	"$_shared 2" "$(group_fds)"
fds_baseline "$W/fds-group-baseline"

if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	timeout 120 vm-importer group --edu "$EDU" fn0 fn1 2 0x40000 0x10000 >"$W/group.out" 2>&1
else
	timeout 120 vm-importer group fn0 fn1 2 0x40000 0x10000 >"$W/group.out" 2>&1
fi
expect_eq group-importer-exit "vm-importer group: exit status" 0 "$?"
sed 's/^/group| /' "$W/group.out"
steps_results group "$W/group.out"
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	dmar_faults group-dmar-faults "$W/group.out"
fi
expect_eq group-after-resets "fn0 and fn1 after a reset each: state generation" \
	"ready 1 ready 1" "$(group_states)"
fds_match group-fds-after-resets "$W/fds-group-baseline"

# Unbound one by one: the first closes only its own device.
spawn unbind13a sh -c "echo $FN0 >/sys/bus/pci/drivers/vfio-pci/unbind"
expect_eq group-unbind-fn0 "the unbind of $FN0: exit status" 0 "$(reap unbind13a 30)"
expect_eq group-unbind-fn0-fds "p2pbufd's fds after fn0 went: shared, devices' own" \
	"$_shared 1" "$(wait_group_fds "$_shared 1")"
expect_eq group-unbind-fn0-states "fn0 and fn1: state generation" "gone 1 ready 1" \
	"$(group_states)"
check group-unbind-fn1-serves vm-importer export fn1 2 0 0x1000
spawn unbind13b sh -c "echo $FN1 >/sys/bus/pci/drivers/vfio-pci/unbind"
expect_eq group-unbind-fn1 "the unbind of $FN1: exit status" 0 "$(reap unbind13b 30)"
expect_eq group-unbind-fn1-fds "p2pbufd's fds after both went: shared, devices' own" "0 0" \
	"$(wait_group_fds "0 0")"
stop_daemon p2pbufd-group

if ! bind_vfio "$FN0" || ! bind_vfio "$FN1"; then
	fail group-rebind "expected $FN0 and $FN1 bound to vfio-pci again"
	exit 1
fi

# -- 14b: both devices of the group across crashes of p2pbufd --
# vm-importer manager plays systemd: its fd store keeps one copy of an open file, under the
# first name (fn0 parks the group's fds first; fn1's copies are dropped). After a kill -9 the
# new instance takes both over (generation unchanged, leases kept): fn1 from its device fd
# alone. Then once more with fn1 declared first, so that fn1 is taken over before fn0 brings
# the group's fds. Resets afterwards cycle each device on the shared group as before.
subsection "14b: both devices of the group across crashes"
# (start_daemon raised this shell's fd limit already.)
DAEMON=p2pbufd-restart
rm -f "$W/mgr.ctl" "$SOCK"
mkfifo "$W/mgr.ctl"
# shellcheck disable=SC2016 # expanded by the command's own shell
spawn mgr sh -c 'exec vm-importer manager --log "$1" "$2" -- p2pbufd --policy "$3" \
	--fd-store 64 --reclaim-grace 60s -v <"$4"' sh "$W/$DAEMON.out" "$SOCK" \
	"$W/policy-group" "$W/mgr.ctl"
exec 8>"$W/mgr.ctl"
# mgr CMD TAG: tell the manager CMD; its answer (what follows "CMD TAG ").
mgr() {
	echo "$1 $2" >&8
	wait_grep "$W/mgr.out" "^$1 $2 " 70 >/dev/null
	sed -n "s/^$1 $2 //p" "$W/mgr.out" | tail -n 1
}
# mgr_start TAG: start p2pbufd; PASS group-restart-start-TAG once it serves; sets DPID.
mgr_start() {
	_ms=$(mgr start "$1")
	expect_eq "group-restart-start-$1" "the manager's start $1 of p2pbufd" ok "${_ms%% *}"
	DPID=$(sed -n "s/^pid $1 //p" "$W/mgr.out")
}
# stored_devs TAG: the names of the devices' fds in the store, sorted, on one line.
stored_devs() {
	mgr names "$1" >/dev/null
	sed -n "s/^stored $1 \(dev\..*\)/\1/p" "$W/mgr.out" | sort | tr '\n' ' '
}
# adopted: "state generation" of both devices; the held leases' states ("gone" when not
# listed); the group's fds.
adopted() {
	p2pbuf-client --json leases --all >"$W/leases13.json" 2>&1
	printf '%s;' "$(group_states)"
	for _l in "${_la:-?}" "${_lb:-?}"; do
		_st=$(jget "$W/leases13.json" ".leases[id=$_l].state") || _st=gone
		printf ' %s' "$_st"
	done
	echo "; $(group_fds)"
}
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_parked="dev.fn0.device dev.fn0.iommufd dev.fn1.device "
else
	_parked="dev.fn0.container dev.fn0.device dev.fn0.group dev.fn1.device "
fi
mgr_start s1
spawn holder13a p2pbuf-client --json export fn0 --bar 2 --offset 0x80000 --length 0x10000 \
	--label group-restart
spawn holder13b p2pbuf-client --json export fn1 --bar 2 --offset 0x80000 --length 0x10000 \
	--label group-restart
_la=$(lease_of holder13a)
_lb=$(lease_of holder13b)
expect_eq group-restart-store "the devices' fds in the store: the group's once, as fn0's" \
	"$_parked" "$(stored_devs n1)"
expect_eq group-restart-crash "kill -9 of p2pbufd: its status" "status 137" "$(mgr crash c1)"
mgr_start s2
expect_eq group-restart-adopted "after the restart: fn0, fn1; leases ${_la:-?} ${_lb:-?}; fds" \
	"ready 0 ready 0; active active; $_shared 2" "$(adopted)"
jget "$W/devices13.json" '.devices[name=fn1].message' >"$W/group-message"
expect_eq group-restart-message "fn1's message: taken over, sharing fn0's group" yes "$(
	says "$W/group-message" "^$FN1: taken over from the previous instance through .*, shared with \"fn0\"")"
# fn1 first: taken over from its device fd alone, before fn0 brings the group's fds.
expect_eq group-restart-crash-again "kill -9 of p2pbufd: its status" "status 137" \
	"$(mgr crash c2)"
cat >"$W/policy-group" <<EOF
device fn1 pci $FN1
device fn0 pci $FN0
allow user root device fn0
allow user root device fn1
admin user root
EOF
mgr_start s3
expect_eq group-restart-reversed-adopted \
	"fn1 declared first, after the restart: fn0, fn1; leases ${_la:-?} ${_lb:-?}; fds" \
	"ready 0 ready 0; active active; $_shared 2" "$(adopted)"
check group-restart-reset-fn1 p2pbuf-client reset fn1
expect_eq group-restart-after-reset-fn1 "fn0, fn1; leases ${_la:-?} ${_lb:-?}; fds" \
	"ready 0 ready 1; active gone; $_shared 2" "$(adopted)"
check group-restart-reset-fn0 p2pbuf-client reset fn0
expect_eq group-restart-after-reset-fn0 "fn0, fn1; fds" "ready 1 ready 1; $_shared 2" \
	"$(group_states); $(group_fds)"
# fn0 leaves (a reload removes it) while fn1 goes on: the group's fds, in the store as fn0's
# alone, move to fn1's names, so that fn1 is taken over after a crash with its lease.
if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	_parked1="dev.fn1.device dev.fn1.iommufd "
else
	_parked1="dev.fn1.container dev.fn1.device dev.fn1.group "
fi
cat >"$W/policy-group" <<EOF
device fn1 pci $FN1
allow user root device fn1
admin user root
EOF
spawn holder13c p2pbuf-client --json export fn1 --bar 2 --offset 0x80000 --length 0x10000 \
	--label group-handover
_lc=$(lease_of holder13c)
check group-handover-reload p2pbuf-client reload
expect_eq group-handover-fds "fn0 removed: p2pbufd's fds of the group" "$_shared 1" \
	"$(wait_group_fds "$_shared 1")"
expect_eq group-handover-store "the store after fn0 left: the group's fds as fn1's" \
	"$_parked1" "$(stored_devs n2)"
expect_eq group-handover-crash "kill -9 of p2pbufd: its status" "status 137" "$(mgr crash c3)"
mgr_start s4
p2pbuf-client --json leases --all >"$W/leases14d.json" 2>&1
expect_eq group-handover-adopted "after the restart: fn1 state, generation; lease ${_lc:-?}" \
	"ready 1 active" "$(p2pbuf-client --json devices >"$W/devices14d.json" 2>&1
		jget "$W/devices14d.json" '.devices[name=fn1].state' '.devices[name=fn1].generation') $(
		jget "$W/leases14d.json" ".leases[id=${_lc:-0}].state")"
stop holder13c >/dev/null
expect_eq group-restart-stop "SIGTERM to p2pbufd: its status" "status 0" "$(mgr stop x)"
echo "quit q" >&8
exec 8>&-
expect_eq group-restart-manager-exit "the manager's exit status" 0 "$(reap mgr 15)"
stop holder13a >/dev/null
stop holder13b >/dev/null
sed 's/^/mgr| /' "$W/mgr.out"
grep -e '^<[0-4]>' -e 'taken over from' "$W/$DAEMON.out" | sed "s/^/$DAEMON| /"

# -- 14c: one function held by another process: p2pbufd names the cause and that device --
subsection "14c: a group another process holds"
printf 'device fn0 pci %s\nallow user root device fn0\nadmin user root\n' "$FN0" \
	>"$W/policy-fn0"
printf 'device fn1 pci %s\nallow user root device fn1\n' "$FN1" >"$W/policy-fn1"
start_daemon p2pbufd-fn0 "$W/policy-fn0" || exit 1
spawn p2pbufd-fn1 p2pbufd --policy "$W/policy-fn1" --socket "$W/sock-fn1"
if wait_file "$W/sock-fn1" 30 &&
	timeout 60 p2pbuf-client --socket "$W/sock-fn1" --json devices >"$W/devices-fn1.json" 2>&1
then
	jget "$W/devices-fn1.json" '.devices[name=fn1].message' >"$W/fn1-message"
	echo "fn1 (second p2pbufd): $(cat "$W/fn1-message")"
	expect_eq group-other-process \
		"second p2pbufd: fn1's state; its message names another process, and $FN0" \
		"failed yes yes" "$(jget "$W/devices-fn1.json" '.devices[name=fn1].state') $(
			says "$W/fn1-message" "IOMMU group $GRP of $FN1 is .*in .*another process") $(
			says "$W/fn1-message" "$FN0 (vfio-pci)")"
	expect_eq group-no-unsafe-hint "fn1's message suggests no unsafe interrupts" no \
		"$(grep -q allow_unsafe "$W/fn1-message" && echo yes || echo no)"
else
	fail group-other-process "the second p2pbufd did not serve: $(
		last_line "$W/p2pbufd-fn1.out")"
fi
expect_eq group-other-exit "second p2pbufd's exit status after SIGTERM" 0 "$(stop p2pbufd-fn1)"
check group-held-serves vm-importer export fn0 2 0 0x1000
stop_daemon p2pbufd-fn0

# ---- 15: a stuck close on one device stalls no other ----
# One p2pbufd owns ivshmem (A) and edu (B), each in an IOMMU group of its own. vm-importer
# fence-hold keeps a lease on ivshmem whose buffer carries a vgem write fence that nobody
# signals: the kernel's revocation of that buffer at the device's close waits for it
# (vfio_pci_dma_buf_move: dma_resv_wait_timeout without a timeout) until vgem signals it
# itself, 10 s after it was made. A reset of ivshmem then hangs in ivshmem's close; meanwhile a
# reset of edu answers and edu serves while ivshmem is still cycling, its reset still waiting,
# the fence still pending and a thread of p2pbufd waiting on it in the kernel; ivshmem comes
# back by itself once the fence signals (its reset answers, generation + 1). Then a SIGTERM
# with a new fence pending (15b): p2pbufd exits 0 once the close returns, after the fence
# signaled (p2pbufd(8), DEVICE STATES, Stopping). The figures (edu's reset alone and with
# ivshmem stuck, how long ivshmem was stuck) are logged, not asserted.        [stuck-*]
section "15: a stuck close on one device stalls no other"
check stuck-vgem-load modprobe vgem
cat >"$W/policy-stuck" <<EOF
device ivshmem pci $IVSHMEM
device edu pci $EDU
allow user root device ivshmem
allow user root device edu
admin user root
EOF
start_daemon p2pbufd-stuck "$W/policy-stuck" || exit 1

# uptime_ms: the guest's uptime in ms (10 ms steps), for the figures.
uptime_ms() {
	awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime
}
# stuck_states: "state generation" of ivshmem, then of edu.
stuck_states() {
	p2pbuf-client --json devices >"$W/devices15.json" 2>&1
	jget "$W/devices15.json" '.devices[name=ivshmem].state' '.devices[name=ivshmem].generation' \
		'.devices[name=edu].state' '.devices[name=edu].generation'
}
# timed_reset NAME DEVICE: p2pbuf-client reset DEVICE, which must exit 0; _ms is how long it
# took.
timed_reset() {
	_t0=$(uptime_ms)
	p2pbuf-client reset "$2" >"$W/$1.out" 2>&1
	_rc=$?
	_ms=$(($(uptime_ms) - _t0))
	expect_eq "$1" "p2pbuf-client reset $2: exit status, output" 0 "$_rc"
}
# fence_start NAME: spawn vm-importer fence-hold on ivshmem as NAME, its input on fd 8;
# NAME-ready passes once its fence is in the lease's buffer, pending.
fence_start() {
	rm -f "$W/$1.ctl"
	mkfifo "$W/$1.ctl"
	# shellcheck disable=SC2016 # expanded by the command's own shell
	spawn "$1" sh -c 'exec vm-importer fence-hold ivshmem 2 0 0x10000 <"$1"' sh "$W/$1.ctl"
	exec 8>"$W/$1.ctl"
	FENCE_OUT=$W/$1.out
	if wait_grep "$FENCE_OUT" '^ready lease ' 30; then
		pass "$1-ready"
	else
		fail "$1-ready" "expected vm-importer fence-hold to say ready, got '$(
			last_line "$FENCE_OUT")'"
	fi
	expect_eq "$1-pending" "the vgem fence, before" pending "$(fence fence "$1")"
}
# fence CMD NAME [ARG]: tell the holder "CMD NAME [ARG]"; print its answer (what follows
# "CMD NAME ").
fence() {
	echo "$*" >&8
	wait_grep "$FENCE_OUT" "^$1 $2 " 90 >/dev/null
	sed -n "s/^$1 $2 //p" "$FENCE_OUT" | tail -n 1
}
# fence_end NAME: the holder quits (closing its fds) and its output is shown.
fence_end() {
	echo quit >&8
	exec 8>&-
	expect_eq "$1-exit" "vm-importer fence-hold: exit status" 0 "$(reap "$1" 15)"
	sed "s/^/$1| /" "$W/$1.out"
}
# fence_waiters: how many of p2pbufd's threads wait in the kernel for a dma fence (their
# kernel stack, or wait channel, names the fence or reservation wait).
fence_waiters() {
	_n=0
	for _t in /proc/"$DPID"/task/*; do
		if cat "$_t/stack" "$_t/wchan" 2>/dev/null | grep -q -e dma_fence -e dma_resv; then
			_n=$((_n + 1))
			echo "p2pbufd thread ${_t##*/}: $(cat "$_t/wchan" 2>/dev/null)" >&2
		fi
	done
	echo "$_n"
}

timed_reset stuck-reset-b-alone edu
_alone=$_ms
expect_eq stuck-b-alone-states "ivshmem, edu after edu's reset alone: state generation" \
	"ready 0 ready 1" "$(stuck_states)"

fence_start fence15
spawn reset15 p2pbuf-client reset ivshmem
_ta=$(uptime_ms)
expect_eq stuck-a-cycling "ivshmem once its reset began" cycling "$(wait_device ivshmem cycling 10)"
timed_reset stuck-reset-b-while-a-stuck edu
_with=$_ms
check stuck-b-export vm-importer export edu 0 0 0x1000
expect_eq stuck-b-served-a-stuck \
	"then: ivshmem, edu (state generation); ivshmem's reset; the fence; threads waiting on it" \
	"cycling 0 ready 2 running pending 1" \
	"$(stuck_states) $(reap reset15 0) $(fence fence f1) $(fence_waiters)"
expect_eq stuck-a-reset-answers "ivshmem's reset: exit status" 0 "$(reap reset15 60)"
_stuck=$(($(uptime_ms) - _ta))
_sig=$(fence fence f2)
expect_eq stuck-a-fence-signaled "the fence, once ivshmem's reset answered" signaled "${_sig%% *}"
expect_eq stuck-a-ready "ivshmem, edu after ivshmem's reset: state generation" \
	"ready 1 ready 2" "$(stuck_states)"
check stuck-a-export vm-importer export ivshmem 2 0x20000 0x1000
echo "figures: edu's reset alone ${_alone} ms, with ivshmem stuck ${_with} ms;" \
	"ivshmem's reset ${_stuck} ms (polled every 100 ms), the fence signaled ${_sig#* } ms" \
	"after it was made"
fence_end fence15

# -- 15b: a stop while a close is stuck --
subsection "15b: SIGTERM while ivshmem's close waits on a fence"
fence_start fence15b
_stop=$(fence stop s1 "$DPID")
echo "figures: stop: $_stop"
expect_eq stuck-stop-after-fence "p2pbufd's exit after SIGTERM, the fence pending then" \
	after-fence "${_stop%%:*}"
expect_eq stuck-stop-exit "p2pbufd's exit status after SIGTERM" 0 "$(reap p2pbufd-stuck 15)"
grep '^<[0-4]>' "$W/p2pbufd-stuck.out" | sed "s/^/p2pbufd-stuck| /"
fence_end fence15b
section_end

# ---- 16: vm-bench, the vfio backend's costs against the bare ioctls ----
section "16: vm-bench"
# Each side's counts are split over the blocks (rounded up).
_bblocks=${P2PBUF_VM_BENCH_BLOCKS:-4}
_brounds=$(((${P2PBUF_VM_BENCH_ROUNDS:-200} + _bblocks - 1) / _bblocks))
_bresets=$(((${P2PBUF_VM_BENCH_RESETS:-8} + _bblocks - 1) / _bblocks))
_bpath=
[ "$P2PBUF_VM_FLAVOUR" = iommufd ] && _bpath=--cdev
# bench_side SIDE NAME BDF DIR: one block of SIDE (bare or daemon) on NAME (at BDF); samples
# appended to DIR. p2pbufd runs without -v, as deployed (a log line per grant costs time).
bench_side() {
	if [ "$1" = bare ]; then
		# shellcheck disable=SC2086 # _bpath is empty or one word
		timeout 300 vm-bench bare $_bpath --out "$4" --rounds "$_brounds" \
			--resets "$_bresets" "$3" 2 0 0x1000
		return
	fi
	DAEMON=p2pbufd-bench-$2
	rm -f "$SOCK"
	spawn "$DAEMON" p2pbufd --policy "$W/policy-bench-$2" --socket "$SOCK"
	DPID=$(cat "$W/$DAEMON.pid")
	if ! wait_file "$SOCK" 30 || ! timeout 60 p2pbuf-client status >/dev/null 2>&1; then
		echo "p2pbufd did not serve: $(last_line "$W/$DAEMON.out")"
		stop "$DAEMON" >/dev/null
		return 1
	fi
	_brc=0
	timeout 300 vm-bench daemon --socket "$SOCK" --out "$4" --rounds "$_brounds" \
		--resets "$_bresets" --reference ref "$2" 2 0 0x1000 || _brc=$?
	_bstop=$(stop "$DAEMON")
	[ "$_bstop" = 0 ] || echo "p2pbufd's exit status after SIGTERM: $_bstop"
	[ "$_brc" = 0 ] && [ "$_bstop" = 0 ]
}
# bench_device NAME BDF: every block of both sides on NAME, then the report.
bench_device() {
	_bd=$W/bench-$1
	rm -rf "$_bd"
	mkdir -p "$_bd"
	if ! bind_vfio "$2"; then
		fail "bench-$1" "$2 could not be bound to vfio-pci"
		return
	fi
	printf 'device %s pci %s\nallow user root device %s\n' "$1" "$2" "$1" >"$W/policy-bench-$1"
	printf 'device ref sim bar 0 1M\nallow user root device ref\nadmin user root\n' \
		>>"$W/policy-bench-$1"
	echo "vm-bench $1 ($2), $P2PBUF_VM_FLAVOUR: $_bblocks blocks of $_brounds exports" \
		"and $_bresets resets per side, bare ($([ -n "$_bpath" ] &&
			echo "cdev + iommufd" || echo "legacy group + container"), while no" \
		"p2pbufd runs) and p2pbufd taking turns on the same device"
	_bb=1
	while [ "$_bb" -le "$_bblocks" ]; do
		_border="bare daemon"
		[ $((_bb % 2)) = 0 ] && _border="daemon bare"
		for _bs in $_border; do
			if ! bench_side "$_bs" "$1" "$2" "$_bd" >"$_bd/run.out" 2>&1; then
				sed 's/^/vm-bench| /' "$_bd/run.out"
				fail "bench-$1" "block $_bb, $_bs side: $(last_line "$_bd/run.out")"
				return
			fi
		done
		_bb=$((_bb + 1))
	done
	if vm-bench report "$_bd" >"$_bd/report" 2>&1; then
		cat "$_bd/report"
		pass "bench-$1"
	else
		fail "bench-$1" "no figures: $(last_line "$_bd/report")"
	fi
}
for _bn in ${P2PBUF_VM_BENCH_DEVICES:-ivshmem}; do
	case $_bn in
	ivshmem) bench_device ivshmem "$IVSHMEM" ;;
	nvme) bench_device nvme "$NVME" ;;
	*) fail "bench-$_bn" "P2PBUF_VM_BENCH_DEVICES names ivshmem and nvme, not $_bn" ;;
	esac
done
section_end
exit 0
