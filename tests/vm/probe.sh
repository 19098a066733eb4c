#!/bin/sh
# tests/vm/probe.sh - guest test script (runs inside the VM as /test/main.sh) that proves the VM
# infrastructure end to end with vm-probe: vfio modules load, the three QEMU devices bind to
# vfio-pci, and each exports a BAR range as a dma-buf through the legacy group/container path
# and, in the iommufd flavour, through the cdev + /dev/iommu path (plus IOMMU_IOAS_MAP_FILE).
# The ivshmem range must read the host's pattern ("00000000 p2pbuf") and its dma-buf's fdinfo
# must say exp_name: vfio_pci_core and size: 4096.
# Knobs: none (P2PBUF_VM_FLAVOUR comes from /init).
# shellcheck source=guest-lib.sh
. /test/guest-lib.sh

# probe NAME VM-PROBE-ARGS...: run vm-probe, keep its output in the log, check its fdinfo.
probe() {
	_name=$1
	shift
	_rc=0
	vm-probe "$@" >"/tmp/$_name.out" 2>&1 || _rc=$?
	sed "s/^/$_name| /" "/tmp/$_name.out"
	if [ "$_rc" = 0 ]; then
		pass "$_name"
	else
		fail "$_name" "vm-probe exited $_rc: $(grep -m1 -E 'FAILED|^open:' "/tmp/$_name.out")"
	fi
	check "$_name-exp-name" grep -q '^fdinfo: exp_name:[[:space:]]*vfio_pci_core' "/tmp/$_name.out"
}

check_size() {
	grep -q "^fdinfo: size:[[:space:]]*$2\$" "/tmp/$1.out"
}

echo "flavour $P2PBUF_VM_FLAVOUR, kernel $P2PBUF_VM_KVER"
check load-vfio load_vfio
ivshmem=$(find_pci "$IVSHMEM_ID" | head -n 1)
edu=$(find_pci "$EDU_ID" | head -n 1)
nvme=$(find_pci "$NVME_ID" | head -n 1)
for d in ivshmem edu nvme; do
	eval "bdf=\$$d"
	if [ -z "$bdf" ]; then
		fail "find-$d" "no such PCI device"
		continue
	fi
	check "bind-$d" bind_vfio "$bdf"
done

probe legacy-ivshmem --legacy --bar 2 --offset 0 --length 0x1000 --expect "00000000 p2pbuf" \
	"$ivshmem"
check legacy-ivshmem-size check_size legacy-ivshmem 4096
probe legacy-ivshmem-page1 --legacy --bar 2 --offset 0x1000 --length 0x2000 \
	--expect "00001000 p2pbuf" "$ivshmem"
check legacy-ivshmem-page1-size check_size legacy-ivshmem-page1 8192
probe legacy-edu --legacy --bar 0 --length 0x1000 "$edu"
probe legacy-nvme-cmb --legacy --bar 2 --length 0x1000 "$nvme"

if [ "$P2PBUF_VM_FLAVOUR" = iommufd ]; then
	check dev-iommu test -c /dev/iommu
	check cdev-node-ivshmem vfio_cdev "$ivshmem"
	probe cdev-ivshmem --cdev --bar 2 --offset 0 --length 0x1000 --expect "00000000 p2pbuf" \
		"$ivshmem"
	check cdev-ivshmem-size check_size cdev-ivshmem 4096
	check cdev-ivshmem-map-file grep -q '^map-file: rc=0 ' /tmp/cdev-ivshmem.out
	probe cdev-edu --cdev --bar 0 --length 0x1000 "$edu"
else
	check_fails no-dev-iommu test -e /dev/iommu
fi
