#!/bin/bash
# `make demo`: start p2pbufd on simulated devices with a policy for the calling user, then
# show a client listing devices, getting a dma-buf fd (a memfd on simulated devices) for a
# BAR range, and releasing it. Everything lives in a temporary directory and is removed.
set -euo pipefail

top_builddir=${top_builddir:-$(pwd)}
daemon=$top_builddir/daemon/p2pbufd
client=$top_builddir/client/p2pbuf-client
dir=$(mktemp -d /tmp/p2pbuf-demo-XXXXXX)
export P2PBUF_SOCKET=$dir/p2pbufd.sock
uid=$(id -u)

cat >"$dir/policy" <<POLICY
# Two simulated devices: a NIC-like one with MSI-X in BAR 0, and a CMB-like 2 MiB BAR 2.
device nic0 sim bar 0 64K bar 2 16M msix-table 0 0x2000+0x800 msix-pba 0 0x3000+0x100
device cmb0 sim bar 2 2M
allow user $uid device cmb0 bar 2 max-leases 8 ttl 10m
allow user $uid device nic0 bar 0
allow user $uid device nic0 bar 2 range 0+8M
admin user $uid
POLICY

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

echo "p2pbufd demo: policy $dir/policy, socket $P2PBUF_SOCKET"
cat "$dir/policy"
"$daemon" --policy "$dir/policy" --socket "$P2PBUF_SOCKET" 2>"$dir/daemon.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; echo; echo "--- daemon log ---"; cat "$dir/daemon.log"; rm -rf "$dir"' EXIT
for _ in $(seq 100); do [ -S "$P2PBUF_SOCKET" ] && break; sleep 0.05; done

step p2pbuf-client status
"$client" status
step p2pbuf-client devices
"$client" devices
step "p2pbuf-client export cmb0 --bar 2 --offset 0 --length 1M -- sh -c '...'"
# shellcheck disable=SC2016 # the child's shell expands the variables
"$client" export cmb0 --bar 2 --offset 0 --length 1M --label demo -- sh -c \
	'echo "child got fd $P2PBUF_FD for lease $P2PBUF_LEASE_ID ($P2PBUF_SIZE bytes):";
	 ls -l /proc/self/fd/$P2PBUF_FD; cat /proc/self/fdinfo/$P2PBUF_FD'
step "p2pbuf-client export nic0 --bar 0 --offset 0x2000 --length 4K   # MSI-X table: refused"
"$client" export nic0 --bar 0 --offset 0x2000 --length 4K -- true || echo "(exit status $?)"
step "p2pbuf-client export nic0 --bar 2 --offset 8M --length 4K   # outside the rule: denied"
"$client" export nic0 --bar 2 --offset 8M --length 4K -- true || echo "(exit status $?)"
step "p2pbuf-client leases   # released when the child exited"
"$client" leases
