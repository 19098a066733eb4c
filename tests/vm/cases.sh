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
# Knobs (run-all.sh --append NAME=VALUE): P2PBUF_VM_VERBOSE=1 (guest-lib: show every check's
# output), P2PBUF_VM_DAEMON_LOG=1 (show p2pbufd's whole log, not only its warnings).

# shellcheck source=guest-lib.sh
. /test/guest-lib.sh

W=/tmp/vmcases
SOCK=/run/p2pbufd/p2pbufd.sock
P2PBUF_SOCKET=$SOCK
export P2PBUF_SOCKET
mkdir -p "$W" /run/p2pbufd

# ---- helpers ----

# expect_eq NAME WHAT EXPECTED GOT: PASS, or FAIL saying what was expected and what came.
expect_eq() {
	if [ "$3" = "$4" ]; then
		pass "$1"
	else
		fail "$1" "$2: expected '$3', got '$4'"
	fi
}

# jget FILE EXPR: the value at EXPR (see vm-importer json) of the JSON in FILE, "" if none.
jget() {
	vm-importer json "$2" <"$1" 2>/dev/null
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

# lease_of NAME: the lease id a spawned `p2pbuf-client --json export` holding its lease
# printed, once it has ("" after 15 s).
lease_of() {
	wait_grep "$W/$1.out" '"lease":' 15 && head -n 1 "$W/$1.out" | vm-importer json .lease
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
# The baseline: the listening socket is its only socket (the status client has gone).
_i=0
while fd_list "$DPID" >"$W/fds-baseline" && [ "$(grep -c '^socket:' "$W/fds-baseline")" != 1 ] &&
	[ "$_i" -lt 50 ]; do
	sleep 0.1
	_i=$((_i + 1))
done
echo "p2pbufd pid $DPID: $(wc -l <"$W/fds-baseline") fds at baseline"

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
spawn watch p2pbuf-client --json watch
# The watcher is subscribed once it reports the end of a throwaway lease.
_i=0
until grep -q '"lease-revoked"' "$W/watch.out" 2>/dev/null || [ "$_i" -ge 20 ]; do
	p2pbuf-client export ivshmem --bar 2 --offset 0 --length 4K -- true >"$W/throwaway.out" 2>&1
	sleep 0.2
	_i=$((_i + 1))
done
if grep -q '"lease-revoked"' "$W/watch.out"; then
	pass watch-subscribed
else
	fail watch-subscribed "expected watch to report a throwaway lease's end, got '$(
		last_line "$W/watch.out")'; the throwaway export said '$(last_line "$W/throwaway.out")'"
fi
spawn holder7 p2pbuf-client --json export ivshmem --bar 2 --offset 0x20000 --length 0x1000 \
	--label reset-holder
_lease=$(lease_of holder7)
p2pbuf-client reset ivshmem >"$W/reset.out" 2>&1
_rc=$?
expect_eq reset-cli "p2pbuf-client reset ivshmem: exit status, output" \
	"0 device ivshmem reset; its leases have ended" "$_rc $(last_line "$W/reset.out")"
expect_eq reset-holder-exit "holder's exit status" 10 "$(reap holder7 15)"
expect_eq reset-holder-told "holder's last line" \
	"{\"lease\":${_lease:-?},\"revoked\":true,\"reason\":\"reset\"}" "$(last_line "$W/holder7.out")"
wait_grep "$W/watch.out" '"state":"ready"' 10
expect_eq watch-exit "watch's exit status after SIGTERM" 0 "$(stop watch)"
sed 's/^/watch| /' "$W/watch.out"
# The ivshmem events as "event:detail" words.
_events=$(while IFS= read -r _line; do
	_e=$(printf '%s\n' "$_line" | vm-importer json .event)
	case $_e in
	device-state)
		[ "$(printf '%s\n' "$_line" | vm-importer json .device)" = ivshmem ] &&
			printf '%s:%s ' "$_e" "$(printf '%s\n' "$_line" | vm-importer json .state)"
		;;
	lease-revoked)
		[ "$(printf '%s\n' "$_line" | vm-importer json .lease)" = "$_lease" ] &&
			printf '%s:%s ' "$_e" "$(printf '%s\n' "$_line" | vm-importer json .reason)"
		;;
	esac
done <"$W/watch.out")
expect_eq watch-reset-events "watch's events for the reset" \
	"lease-revoked:reset device-state:cycling device-state:ready " "$_events"
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
	"{\"lease\":${_lease:-?},\"revoked\":true,\"reason\":\"device-gone\"}" \
	"$(last_line "$W/holder8.out")"
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
	exit 0
fi
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
while IFS= read -r _line; do
	case $_line in
	"step "*)
		_r=${_line#step }
		_n=${_r%% *}
		_r=${_r#* }
		if [ "${_r%%:*}" = ok ]; then
			pass "iommufd-$_n"
		else
			fail "iommufd-$_n" "${_r#*: }"
		fi
		;;
	esac
done <"$W/dma.out"
# The revoked mapping's DMA must have faulted in the IOMMU: the kernel logs it with edu's
# address and the page.
_iova=$(sed -n 's/^dmar-fault-expected: iova \(0x[0-9a-f]*\) .*/\1/p' "$W/dma.out")
if [ -n "$_iova" ] && dmesg | grep 'DMAR:.*DMA Read' | grep -q "\[$EDU\] fault addr $_iova "; then
	pass iommufd-dmar-fault
else
	fail iommufd-dmar-fault "expected a DMAR read fault for [$EDU] at ${_iova:-?}, got: '$(
		dmesg | grep 'DMAR:.*fault' | tail -n 1)'"
fi
stop_daemon p2pbufd-dma
section_end
exit 0
