#!/bin/bash
# p2pbuf-client doctor on fake machines (tests/integration/doctor-tree.py builds them under
# P2PBUF_DOCTOR_ROOT): BARs, groups, memory decode, reset methods, the kernel checks, and the
# peer-to-peer verdict for a path inside a PCIe switch, across the root complex, with ACS
# redirects, with a listed host bridge, on an AMD Zen CPU, and with config space unreadable;
# exit statuses, --json, and a real daemon with simulated devices. Ends with "N passed, N
# failed".
set -u

top_builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$top_builddir}
client=$top_builddir/client/p2pbuf-client
daemon=$top_builddir/daemon/p2pbufd
tree=$top_srcdir/tests/integration/doctor-tree.py
dir=$(mktemp -d /tmp/p2pbuf-doctor-XXXXXX)
passed=0
failed=0
daemon_pid=

cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() {
	failed=$((failed + 1))
	echo "FAIL: $1: $2"
	sed 's/^/    | /' "$dir/out"
}

# mk NAME ARGS...: a fake machine in $dir/NAME.
mk() {
	local name=$1
	shift
	python3 "$tree" "$dir/$name" "$@"
}

# doc NAME TREE WANT_STATUS ARGS...: run doctor on TREE with no daemon; output in $dir/out.
doc() {
	local name=$1 t=$2 want=$3
	shift 3
	P2PBUF_DOCTOR_ROOT=$dir/$t "$client" --socket "$dir/nosock" doctor "$@" >"$dir/out" 2>&1
	local got=$?
	if [ "$got" -ne "$want" ]; then
		fail "$name" "exit status $got, expected $want"
		return 1
	fi
	return 0
}

# has NAME LINE: $dir/out has exactly LINE.
has() {
	if grep -qxF -- "$2" "$dir/out"; then pass "$1"; else fail "$1" "no line: $2"; fi
}

# json NAME PYTHON_EXPR: the document in $dir/out satisfies EXPR over d (its "doctor").
json() {
	if python3 -c '
import json, sys
d = json.loads(open(sys.argv[1]).read())["doctor"]
sys.exit(0 if eval(sys.argv[2]) else 1)' "$dir/out" "$2" 2>>"$dir/err"; then
		pass "$1"
	else
		fail "$1" "JSON does not satisfy: $2"
	fi
}

E=0000:03:00.0
mk base

# The exporter's own facts.
if doc exporter base 1 "$E"; then
	has bars "ok      bars $E (sysfs): 0: 16K 32-bit; 2: 2M 64-bit prefetchable; 4: 32 I/O ports (never exported)"
	has binding "ok      binding $E (sysfs): bound to vfio-pci"
	has shared-group "warn    iommu-group $E (sysfs): group 5 (DMA-FQ), shared with 0000:03:00.1 (snd_hda_intel): VFIO opens the group only while every member has no driver or vfio-pci, pci-stub or pcieport"
	has memory-decode "ok      memory-decode $E (config-space): PCI_COMMAND.MEMORY is on"
	has reset-method "ok      reset-method $E (sysfs): flr bus"
	has no-daemon "info    daemon (socket): no p2pbufd at $dir/nosock (No such file or directory): going on with what this machine shows"
	has config "ok      vfio-dma-buf-config (config): CONFIG_VFIO_PCI_DMABUF=y (/boot/config-7.2.13+deb14-amd64)"
	has probe-needs-device "unknown vfio-dma-buf $E (probe): cannot probe without a vfio-pci device: /dev/vfio/vfio is not a character device"
	has no-iommufd "fail    iommufd (probe): no /dev/iommu: the kernel is built without CONFIG_IOMMUFD or the iommufd module is not loaded"
	has no-cdev "fail    vfio-cdev (probe): sysfs shows $E's vfio-dev/vfio0 but /dev/vfio/devices/vfio0 does not exist: the kernel is built without CONFIG_VFIO_DEVICE_CDEV"
	has revoke "info    per-buffer-revoke (known): not available in any released kernel (checked: 6.19, 7.2, 7.3); p2pbufd revokes by a device cycle, which ends every lease of the device"
	has iommu-on "ok      iommu (sysfs): on: 1 unit(s) (dmar0), 8 group(s); default domain DMA-FQ (translated, lazy invalidation); command line: intel_iommu=on"
	has kernel-ok "ok      kernel (uname): 7.2.13+deb14-amd64, no known issue for this use"
fi

# Inside the switch: the kernel maps by bus address.
if doc switch base 1 "$E" --importer 0000:04:00.0; then
	has switch-verdict "ok      p2p-path 0000:04:00.0 (sysfs): $E to 0000:04:00.0: ok: common upstream bridge 0000:01:00.0, distance 4, no ACS redirect: the kernel maps it by PCI bus address"
	has switch-chain "path from the importer: 0000:04:00.0 < 0000:02:01.0 < 0000:01:00.0 < 0000:00:01.0 < pci0000:00"
fi

# Across the root complex, host bridge not listed, Intel CPU: refused.
if doc crossing base 1 "$E" --importer 0000:05:00.0; then
	has crossing-verdict "fail    p2p-path 0000:05:00.0 (sysfs): $E to 0000:05:00.0: will fail: no common upstream bridge: the path crosses the root complex, and host bridge 8086:1234 (0000:00:00.0 under pci0000:00) is not on the kernel's P2PDMA list: importers that map the dma-buf (RDMA NICs, GPUs) get EINVAL; an iommufd importer is not checked, but the root complex need not forward the transfers"
fi

# The same with a host bridge on the kernel's list, and on an AMD Zen CPU: allowed.
mk listed --host-id 8086:2020
if doc listed listed 1 "$E" --importer 0000:05:00.0; then
	has listed-verdict "ok      p2p-path 0000:05:00.0 (sysfs): $E to 0000:05:00.0: ok: no common upstream bridge: the path crosses the root complex, and host bridge 8086:2020 (0000:00:00.0 under pci0000:00) is on the kernel's P2PDMA list"
fi
mk samehb --host-id 8086:2f00
if doc same-host-bridge samehb 1 "$E" --importer 0000:05:00.0; then
	has same-host-verdict "ok      p2p-path 0000:05:00.0 (sysfs): $E to 0000:05:00.0: ok: no common upstream bridge: the path crosses the root complex, and host bridge 8086:2f00 (0000:00:00.0 under pci0000:00) is on the kernel's P2PDMA list"
fi
mk amd --cpu amd
if doc amd amd 1 "$E" --importer 0000:05:00.0; then
	has amd-verdict "ok      p2p-path 0000:05:00.0 (sysfs): $E to 0000:05:00.0: ok: no common upstream bridge: the path crosses the root complex, and the CPU is an AMD Zen or newer, on which the kernel allows it"
fi

# ACS Request and Completion Redirect on the exporter's downstream port: up to the root
# complex, which refuses; the kernel's own advice names the port.
mk acs --acs 0000:02:00.0=0x000c
if doc acs acs 1 "$E" --importer 0000:04:00.0; then
	has acs-verdict "fail    p2p-path 0000:04:00.0 (sysfs): $E to 0000:04:00.0: will fail: ACS redirects peer-to-peer requests up to the root complex at 0000:02:00.0, and host bridge 8086:1234 (0000:00:00.0 under pci0000:00) is not on the kernel's P2PDMA list: importers that map the dma-buf (RDMA NICs, GPUs) get EINVAL; an iommufd importer is not checked, but the root complex need not forward the transfers; pci=disable_acs_redir=0000:02:00.0"
	has acs-bits "ACS on the path: $E no ACS; 0000:02:00.0 RR CR (ctrl 0x000c); 0000:01:00.0 no ACS; 0000:04:00.0 no ACS; 0000:02:01.0 no redirect (ctrl 0x0000)"
fi
# Egress Control alone counts too (pci_bridge_has_acs_redir); ACS above the common bridge
# does not, since the path never goes there.
mk egress --acs 0000:02:01.0=0x0020 --acs 0000:00:01.0=0x000c
if doc egress egress 1 "$E" --importer 0000:04:00.0; then
	has egress-verdict "fail    p2p-path 0000:04:00.0 (sysfs): $E to 0000:04:00.0: will fail: ACS redirects peer-to-peer requests up to the root complex at 0000:02:01.0, and host bridge 8086:1234 (0000:00:00.0 under pci0000:00) is not on the kernel's P2PDMA list: importers that map the dma-buf (RDMA NICs, GPUs) get EINVAL; an iommufd importer is not checked, but the root complex need not forward the transfers; pci=disable_acs_redir=0000:02:01.0"
fi
mk above --acs 0000:00:01.0=0x000c
if doc acs-above above 1 "$E" --importer 0000:04:00.0; then
	has acs-above-verdict "ok      p2p-path 0000:04:00.0 (sysfs): $E to 0000:04:00.0: ok: common upstream bridge 0000:01:00.0, distance 4, no ACS redirect: the kernel maps it by PCI bus address"
fi

# A port whose extended config space cannot be read (not root): unknown, never ok.
mk short --short-config 0000:02:00.0
if doc unreadable short 1 "$E" --importer 0000:04:00.0; then
	has unreadable-verdict "unknown p2p-path 0000:04:00.0 (sysfs): $E to 0000:04:00.0: unknown: common upstream bridge 0000:01:00.0, distance 4, no ACS redirect; cannot tell the ACS capability of 0000:02:00.0 (extended config space is readable by root only)"
fi

# Known-bad kernels, named with the fix; the fix release itself is fine.
mk bad --release 7.1.4-amd64
if doc bad-kernel bad 1 "$E"; then
	has bad-kernel-line "fail    kernel (uname): 7.1.4-amd64 is known to be bad for this use: CVE-2026-74328 (iommufd dma-buf import flaw); fixed in 7.1.5 (unless your distribution backported the fix)"
fi
mk fixed --release 7.1.5 --no-config
if doc fixed-kernel fixed 1 "$E"; then
	has fixed-kernel-line "ok      kernel (uname): 7.1.5, no known issue for this use"
	has no-config "unknown vfio-dma-buf-config (config): no kernel configuration to read (neither /boot/config-7.1.5 nor /proc/config.gz)"
fi
mk old --release 6.18.2
if doc old-kernel old 1 "$E"; then
	has old-kernel-line "fail    vfio-dma-buf-version (inferred): Linux 6.18.2 is older than 6.19, which added the VFIO dma-buf export"
fi
mk iommufd --iommufd
if doc map-file iommufd 1 "$E"; then
	has map-file-inferred "ok      iommufd-map-file (inferred): likely: /dev/iommu opens and Linux 7.2.13+deb14-amd64 is 6.19 or newer, which maps VFIO dma-bufs with IOMMU_IOAS_MAP_FILE (single-range buffers only); a probe would need a dma-buf"
fi

# Without DEVICE and without a daemon: every device bound to vfio-pci.
if doc all-vfio base 1; then
	if grep -q "binding $E" "$dir/out" && ! grep -q "binding 0000:04:00.0" "$dir/out"; then
		pass all-vfio-devices
	else
		fail all-vfio-devices "expected only $E examined"
	fi
fi

# Exit statuses: no such device 5, a name without a daemon 5, a bad importer 2.
doc missing-device base 5 0000:09:00.0 &&
	has missing-line "fail    device 0000:09:00.0 (sysfs): no such PCI device in /sys/bus/pci/devices (No such file or directory)"
doc name-without-daemon base 5 nvme0 && pass name-without-daemon-status
doc bad-importer base 2 "$E" --importer nonsense && pass bad-importer-status
doc importer-missing base 5 "$E" --importer 0000:0a:00.0 && pass importer-missing-status

# --json: the one shape, null for the unknown.
if doc json base 1 --json "$E" --importer 0000:04:00.0; then
	json json-verdict 'd["path"]["verdict"] == "ok" and d["path"]["distance"] == 4 and d["path"]["common"] == "0000:01:00.0"'
	json json-bars 'd["devices"][0]["bars"][1] == {"index": 2, "size": 2097152, "is_64bit": True, "prefetchable": True, "io": False}'
	json json-null-name 'd["devices"][0]["name"] is None and d["daemon_version"] is None'
	json json-summary 'd["summary"]["fail_count"] == 3 and d["exit_status"] == 1'
	json json-checks 'any(c["check"] == "vfio-dma-buf" and c["status"] == "unknown" and c["source"] == "probe" for c in d["checks"])'
fi
if doc json-acs acs 1 --json "$E" --importer 0000:04:00.0; then
	json json-acs-bits '[(n["address"], n["request_redirect"], n["completion_redirect"], n["egress_control"]) for n in d["path"]["exporter_chain"] if n["acs"]] == [("0000:02:00.0", True, True, False), ("0000:00:01.0", False, False, False)]'
	json json-acs-verdict 'd["path"]["verdict"] == "will-fail" and d["path"]["host_rule"] == "not-listed" and d["path"]["exporter_host"]["id"] == "8086:1234"'
fi
if doc json-short short 1 --json "$E" --importer 0000:04:00.0; then
	json json-acs-unknown '[n["acs"] for n in d["path"]["exporter_chain"]][1] is None and d["path"]["verdict"] == "unknown"'
fi

# With a daemon: a declared simulated device has nothing to examine, and the daemon says so.
cat >"$dir/policy" <<POLICY
device sim0 sim bar 0 64K
allow user $(id -u) device sim0
POLICY
"$daemon" --policy "$dir/policy" --socket "$dir/sock" 2>"$dir/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do [ -S "$dir/sock" ] && break; sleep 0.05; done
P2PBUF_DOCTOR_ROOT=$dir/base "$client" --socket "$dir/sock" doctor sim0 >"$dir/out" 2>&1
if grep -qxF "info    device sim0 (daemon): sim0 is a simulated device: there is no PCI device to examine" "$dir/out" &&
	grep -q "^info    daemon (socket): p2pbufd .* at $dir/sock declares 1 device(s)" "$dir/out"; then
	pass daemon-sim
else
	fail daemon-sim "no simulated-device or daemon line"
fi
P2PBUF_DOCTOR_ROOT=$dir/base "$client" --socket "$dir/sock" doctor nosuch >"$dir/out" 2>&1
[ $? -eq 5 ] && grep -qxF "p2pbuf-client: doctor nosuch: no such device: neither a device of p2pbufd nor a PCI address (see 'p2pbuf-client devices')" "$dir/out" &&
	pass daemon-unknown-name || fail daemon-unknown-name "expected exit 5 and the message"

# Completion knows the verb and its option.
complete_words() {
	(
		complete() { :; }
		# shellcheck source=client/p2pbuf-client.bash-completion
		. "$top_srcdir/client/p2pbuf-client.bash-completion"
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		_p2pbuf_client
		[ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
	)
}
got=$(complete_words p2pbuf-client doc)
[ "$got" = "doctor " ] && pass completion-verb || { echo "$got" >"$dir/out"; fail completion-verb "got '$got'"; }
got=$(complete_words p2pbuf-client doctor sim0 --imp)
[ "$got" = "--importer " ] && pass completion-importer || { echo "$got" >"$dir/out"; fail completion-importer "got '$got'"; }

# This machine, for real: it runs and sums up (what it finds depends on the host).
"$client" --socket "$dir/nosock" doctor >"$dir/out" 2>&1
rc=$?
if { [ "$rc" -eq 0 ] || [ "$rc" -eq 1 ]; } && grep -Eq '^[0-9]+ ok, [0-9]+ info, [0-9]+ warn, [0-9]+ failed, [0-9]+ unknown$' "$dir/out"; then
	pass this-machine
else
	fail this-machine "exit status $rc"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
