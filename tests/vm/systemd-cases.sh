#!/bin/sh
# tests/vm/systemd-cases.sh - the systemd flavour's cases: Debian's systemd 252 is PID 1 (from
# the initramfs), the units and files are those `make install` installed, the devices real
# vfio-pci ones (edu, ivshmem, nvme) on the iommufd kernel. Run as /test/main.sh by
# p2pbuf-vm-test.service (mkinitrd.sh), as root, with no sandbox of its own.
#
# Cases, in order (result names):
#   1 a fresh machine as the README sets it up: no group yet; systemd-sysusers makes p2pbuf
#     and p2pbufd, systemd-tmpfiles the policy directories; udev, restarted, gives p2pbufd's
#     group the VFIO nodes of a device bound before and of those bound after; the socket,
#     enabled, listens as root:p2pbuf 0660 while the service has not started
#                                      [fresh-* sysusers-* tmpfiles-* udev-* socket-* service-idle]
#   2 socket activation: a p2pbuf member's first connect starts p2pbufd, which gets a lease on
#     the cdev path and says it is ready; the fd is a real dma-buf  [activation-* readiness-*]
#   3 the sandbox of the running daemon: its user, no capabilities, no new privileges, seccomp
#     on every thread, read-only root, a /dev of its own with the VFIO nodes (no disk, no
#     kmsg) and in it a node bound later (4c); systemd-analyze security of the
#     loaded unit at most 1.0                                        [sandbox-* security-*]
#   4 systemctl reload: a policy change takes effect; a bad policy is refused, the service
#     stays up and keeps its policy                                   [reload-*]
#   4b allow unit rules: a unit's rule serves that unit only, whatever its user; leases show
#     the unit; a drop-in others could write is refused at reload, naming the file and the fix
#                                                                     [unit-* strict-*]
#   4c hotplug (udev events, no restart): nvme unbound under a holder (told device-gone), then
#     removed from the machine and found again by a rescan, each said in its message; bound to
#     vfio-pci again, it opens by itself (generation + 1), the journal has gone, cycling,
#     ready; the same daemon serves a new export                      [hotplug-*]
#   5 an iommufd holder (the p2pbuf member, with its own edu) DMAs through its lease, and sees
#     it revoked by a reset                                           [dma-*]
#   6 systemctl stop: a holder is told (reason shutdown), the socket stays and activates again
#                                                                     [stop-*]
#     the legacy group path works in the same sandbox (no cdev, no iommufd in the device
#     list), with no locked memory allowed                          [sandbox-legacy-*]
#   7 the watchdog: the daemon pings; SIGSTOPped, systemd kills and restarts it  [watchdog-*]
#   8 the daemon's own seccomp filter: more filters than with --sandbox=off  [seccomp-*]
#   9 the journal: each audit entry by its MESSAGE_ID, with its fields  [journal-*]
# Knobs (run-all.sh --append NAME=VALUE): P2PBUF_VM_VERBOSE=1 (guest-lib: show every check's
# output).

# shellcheck source=guest-lib.sh
. /test/guest-lib.sh

export SYSTEMD_PAGER=cat SYSTEMD_COLORS=0
TESTER_UID=1000
ID_GRANTED=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c60
ID_DENIED=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c61
ID_LEASE_ENDED=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c62
ID_RESET=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c63
ID_DEVICE_STATE=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c64
ID_RELOAD=7d3a1c5e2b8f4e0a9c6d1f2e3a4b5c65
DROPIN=/etc/systemd/system/p2pbufd.service.d # the cases' own settings, never the installed unit
mkdir -p "$DROPIN"

# ---- helpers ----

# prop UNIT PROPERTY: one property of a unit, as systemctl show has it.
prop() {
	systemctl show -p "$2" --value "$1"
}

# The waits below count wall-clock seconds: a systemctl call alone takes 0.15-0.3 s under TCG.
# before: true until $_deadline (seconds since the epoch) has passed.
before() {
	[ "$(date +%s)" -lt "$_deadline" ]
}

# wait_prop UNIT PROPERTY VALUE SECONDS: until the property is VALUE; prints what it is then.
wait_prop() {
	_deadline=$(($(date +%s) + $4))
	while [ "$(prop "$1" "$2")" != "$3" ] && before; do
		sleep 0.1
	done
	prop "$1" "$2"
}

# wait_status REGEX SECONDS: until the service's STATUS= text matches REGEX; prints it.
wait_status() {
	_deadline=$(($(date +%s) + $2))
	until prop p2pbufd.service StatusText | grep -q -e "$1" || ! before; do
		sleep 0.1
	done
	prop p2pbufd.service StatusText
}

# yes_if_match TEXT REGEX: "yes" if TEXT matches REGEX, else TEXT (for expect_eq).
yes_if_match() {
	if printf '%s\n' "$1" | grep -q -e "$2"; then
		echo yes
	else
		printf '%s\n' "$1"
	fi
}

# node FILE: "owner:group mode" of a device node.
node() {
	stat -c '%U:%G %a' "$1" 2>&1
}

# status_field PID FIELD: a field of /proc/PID/status.
status_field() {
	sed -n "s/^$2:[[:space:]]*//p" "/proc/$1/status"
}

# as_tester NAME CMD...: check NAME, CMD run as the p2pbuf member tester.
as_tester() {
	_an=$1
	shift
	check "$_an" vm-importer as tester "$@"
}

# journal ID: the entries with MESSAGE_ID=ID, in export format (FIELD=value lines).
journal() {
	journalctl --no-pager -o export "MESSAGE_ID=$1" 2>&1
}

# journal_has NAME ID FIELD=VALUE...: PASS if one entry with MESSAGE_ID=ID has all the fields.
journal_has() {
	_jn=$1
	_jid=$2
	shift 2
	journal "$_jid" >"$W/$_jn.journal"
	if awk -v want="$*" '
		BEGIN { n = split(want, w, " ") }
		/^$/ { if (hit == n) found = 1; hit = 0; delete seen; next }
		{ for (i = 1; i <= n; i++) if ($0 == w[i] && !seen[i]) { seen[i] = 1; hit++ } }
		END { if (hit == n) found = 1; exit !found }' "$W/$_jn.journal"; then
		pass "$_jn"
	else
		fail "$_jn" "expected an entry MESSAGE_ID=$_jid with $*; got" \
			"$(grep -c '^MESSAGE_ID=' "$W/$_jn.journal") entries, the last:" \
			"$(grep '^MESSAGE=' "$W/$_jn.journal" | tail -n 1)"
	fi
}

# ended_as NAME: "EVENT LEASE REASON" of the last line a spawned `p2pbuf-client --json export`
# printed, once it has ended (its exit status first): e.g. "10 lease-revoked 3 shutdown".
ended_as() {
	_rc=$(reap "$1" 15)
	echo "$_rc $(last_line "$W/$1.out" | vm-importer json .event .lease.id .lease.reason)"
}

# daemon_log: what p2pbufd logged so far.
daemon_log() {
	journalctl --no-pager -o cat -u p2pbufd.service
}

# on_failure: after a failed group of cases, the tail of the daemon's journal.
FAILS_BEFORE=0
section() {
	_now=$(grep -c '^FAIL' "$VM_RESULTS" 2>/dev/null)
	if [ "${_now:-0}" != "$FAILS_BEFORE" ]; then
		echo "--- p2pbufd.service's journal, last lines ---"
		journalctl --no-pager -o short-monotonic -u p2pbufd.service -u p2pbufd.socket |
			tail -n 25 | sed 's/^/journal| /'
	fi
	FAILS_BEFORE=${_now:-0}
	[ -z "$1" ] || echo "== $1 (guest uptime $(cut -d ' ' -f 1 /proc/uptime) s)"
}

# ---- setup ----
echo "flavour $P2PBUF_VM_FLAVOUR, kernel $P2PBUF_VM_KVER, $(systemctl --version | head -n 1)"
check load-vfio sh -c 'modprobe iommufd && modprobe vfio_iommu_type1 && modprobe vfio-pci'
EDU=$(find_pci "$EDU_ID" | head -n 1)
IVSHMEM=$(find_pci "$IVSHMEM_ID" | head -n 1)
NVME=$(find_pci "$NVME_ID" | head -n 1)
echo "devices: edu $EDU, ivshmem $IVSHMEM, nvme $NVME"
# Where the installed files say the policy and the socket are.
TMPFILES=$(find /usr/lib/tmpfiles.d /usr/local/lib/tmpfiles.d /etc/tmpfiles.d \
	-name p2pbufd.conf 2>/dev/null | head -n 1)
POLICY_DIR=$(sed -n 's/^d \(.*\)\/policy\.d .*/\1/p' "${TMPFILES:-/dev/null}")
SOCK=$(prop p2pbufd.socket Listen | sed 's/ (SequentialPacket)$//')
echo "installed: tmpfiles $TMPFILES, policy $POLICY_DIR/policy, socket $SOCK"
if [ -z "$POLICY_DIR" ] || [ -z "$SOCK" ]; then
	fail setup-installed "expected the installed tmpfiles.d file and socket unit, got" \
		"'$TMPFILES' and '$SOCK'"
	exit 1
fi

# ---- 1: a fresh machine ----
section "1: a fresh machine, as the README sets it up"
if grep -q '^p2pbuf:' /etc/group || grep -q '^p2pbufd:' /etc/passwd || [ -e "$POLICY_DIR/policy.d" ]
then
	fail fresh-machine "expected no p2pbuf group, p2pbufd user or $POLICY_DIR/policy.d yet"
else
	pass fresh-machine
fi
# A device bound before the group exists: udev cannot give it to p2pbufd yet.
bind_vfio "$EDU" || fail setup-bind "edu ($EDU) did not bind to vfio-pci"
EDU_GROUP=/dev/vfio/$(vfio_group "$EDU")
check sysusers-run systemd-sysusers
_gid=$(sed -n 's/^p2pbuf:x:\([0-9]*\):.*/\1/p' /etc/group)
expect_eq sysusers-group "group p2pbuf, a system group" yes \
	"$([ -n "$_gid" ] && [ "$_gid" -lt 1000 ] && echo yes || echo "gid '$_gid'")"
DAEMON_UID=$(sed -n 's/^p2pbufd:x:\([0-9]*\):.*/\1/p' /etc/passwd)
expect_eq sysusers-user "user p2pbufd: system uid, own group, shell" "yes yes nologin" \
	"$([ -n "$DAEMON_UID" ] && [ "$DAEMON_UID" -lt 1000 ] && echo yes) $(
		grep -q '^p2pbufd:x:[0-9]*:' /etc/group && echo yes) $(
		sed -n 's/^p2pbufd:.*:\([^:]*\)$/\1/p' /etc/passwd | sed 's/.*\///')"
check tmpfiles-run systemd-tmpfiles --create
expect_eq tmpfiles-dirs "$POLICY_DIR and policy.d" "root:root 755 root:root 755" \
	"$(node "$POLICY_DIR") $(node "$POLICY_DIR/policy.d")"
# The rules name a group that did not exist when udev read them: a restart reads them again
# (a reload does not, as the files have not changed), and a trigger applies them to the nodes
# there already.
check udev-restart systemctl restart systemd-udevd.service
check udev-trigger udevadm trigger --settle --subsystem-match=vfio --subsystem-match=vfio-dev \
	--subsystem-match=misc
expect_eq udev-existing-node "$EDU_GROUP, bound before the group existed" "root:p2pbufd 660" \
	"$(node "$EDU_GROUP")"
check socket-enable systemctl enable --now p2pbufd.socket
expect_eq socket-active "p2pbufd.socket: enabled, active" "enabled active" \
	"$(systemctl is-enabled p2pbufd.socket) $(systemctl is-active p2pbufd.socket)"
expect_eq socket-node "$SOCK" "root:p2pbuf 660" "$(node "$SOCK")"
expect_eq service-idle "p2pbufd.service before any client" inactive \
	"$(systemctl is-active p2pbufd.service)"
# What an admin does: tester joins the group, the devices are bound, the policy says who.
sed -i 's/^\(p2pbuf:x:[0-9]*:\)$/\1tester/' /etc/group
for _b in "$IVSHMEM" "$NVME"; do
	bind_vfio "$_b" || fail setup-bind "$_b did not bind to vfio-pci"
done
udevadm settle
IV_GROUP=/dev/vfio/$(vfio_group "$IVSHMEM")
IV_CDEV=$(vfio_cdev "$IVSHMEM")
expect_eq udev-group-node "$IV_GROUP (ivshmem's IOMMU group)" "root:p2pbufd 660" \
	"$(node "$IV_GROUP")"
expect_eq udev-cdev-node "$IV_CDEV (ivshmem's cdev)" "root:p2pbufd 660" "$(node "$IV_CDEV")"
expect_eq udev-iommu-node /dev/iommu "root:p2pbufd 660" "$(node /dev/iommu)"
cat >"$POLICY_DIR/policy.d/10-vm.policy" <<EOF
# The VM's devices (edu belongs to the iommufd holder of case 5, not to p2pbufd).
device ivshmem pci $IVSHMEM
device nvme pci $NVME
allow group p2pbuf device ivshmem bar 2 range 0x0+1M
admin user tester
admin user root
EOF

# ---- 2: socket activation ----
section "2: socket activation"
spawn holder vm-importer as tester p2pbuf-client --json export ivshmem --bar 2 \
	--offset 0x10000 --length 0x4000 --label holder
_lease=$(lease_of holder)
expect_eq activation-lease "the first client's lease (a p2pbuf member)" yes \
	"$(yes_if_match "${_lease:-$(last_line "$W/holder.out")}" '^[0-9][0-9]*$')"
expect_eq activation-started "p2pbufd.service: state, restarts" "active 0" \
	"$(systemctl is-active p2pbufd.service) $(prop p2pbufd.service NRestarts)"
DPID=$(prop p2pbufd.service MainPID)
if [ "$(systemctl is-active p2pbufd.service)" != active ] || [ "${DPID:-0}" = 0 ]; then
	section "" # the daemon's journal
	fail activation "p2pbufd.service did not start on the first connect: the other cases need it"
	exit 1
fi
expect_eq readiness-status "the daemon's STATUS= once ready" yes \
	"$(yes_if_match "$(prop p2pbufd.service StatusText)" '^Serving 2 of 2 devices')"
daemon_log >"$W/daemon.log"
expect_eq activation-cdev-path "ivshmem opened on the cdev path (udev's nodes)" yes \
	"$(says "$W/daemon.log" "through iommufd (/dev/vfio/devices/")"
expect_eq activation-socket-passed "the daemon took the socket systemd passed" yes \
	"$(says "$W/daemon.log" 'socket systemd passed')"
# shellcheck disable=SC2016 # expanded by the command's own shell
vm-importer as tester p2pbuf-client export ivshmem --bar 2 --offset 0x1000 --length 0x2000 \
	--label fdinfo -- sh -c 'cat /proc/self/fdinfo/$P2PBUF_FD' >"$W/fdinfo.out" 2>&1
_rc=$?
expect_eq activation-dmabuf "a p2pbuf member's fd: exit status, exporter, size" \
	"0 vfio_pci_core 8192" "$_rc $(awk '$1 == "exp_name:" { e = $2 } $1 == "size:" { s = $2 }
		END { print e, s }' "$W/fdinfo.out")"

# ---- 3: the sandbox ----
section "3: the sandbox of the running daemon"
expect_eq sandbox-user "p2pbufd's real, effective, saved, fs uid" \
	"$DAEMON_UID $DAEMON_UID $DAEMON_UID $DAEMON_UID" "$(status_field "$DPID" Uid | tr -s '\t ' ' ')"
expect_eq sandbox-caps "capabilities: permitted effective bounding ambient" \
	"0000000000000000 0000000000000000 0000000000000000 0000000000000000" \
	"$(status_field "$DPID" CapPrm) $(status_field "$DPID" CapEff) $(
		status_field "$DPID" CapBnd) $(status_field "$DPID" CapAmb)"
expect_eq sandbox-nnp "no_new_privs" 1 "$(status_field "$DPID" NoNewPrivs)"
_modes=$(for _t in /proc/"$DPID"/task/*; do sed -n 's/^Seccomp:[[:space:]]*//p' "$_t/status"
	done | sort -u | tr '\n' ' ')
expect_eq sandbox-seccomp-threads "seccomp mode of every thread" "2 " "$_modes"
expect_eq sandbox-readonly-root "/ in p2pbufd's mount namespace" ro \
	"$(awk '$5 == "/" { split($6, o, ","); print o[1] }' "/proc/$DPID/mountinfo" | tail -n 1)"
# PrivateDevices=: the VFIO directory and /dev/iommu are bound into a /dev of its own.
_hidden=$(for _n in kmsg mem port; do [ -e "/dev/$_n" ] && echo "$_n" && break; done)
expect_eq sandbox-private-dev "p2pbufd's /dev: vfio/vfio, iommu; /dev/${_hidden:-?} (the host's)" \
	"yes yes no" "$([ -c "/proc/$DPID/root/dev/vfio/vfio" ] && echo yes) $(
		[ -c "/proc/$DPID/root/dev/iommu" ] && echo yes) $(
		[ -n "$_hidden" ] && [ ! -e "/proc/$DPID/root/dev/$_hidden" ] && echo no)"
systemd-analyze security p2pbufd.service >"$W/security.out" 2>&1
_score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$W/security.out")
expect_eq security-exposure "systemd-analyze security p2pbufd.service: exposure <= 1.0" yes \
	"$(awk -v s="${_score:-99}" 'BEGIN { print (s <= 1.0) ? "yes" : s }')"
echo "exposure of the loaded unit: ${_score:-?}"

# ---- 4: reload ----
section "4: systemctl reload"
as_tester reload-before-denied vm-importer export --expect EPERM nvme 2 0 0x1000
printf 'allow group p2pbuf device nvme bar 2\n' >"$POLICY_DIR/policy.d/20-nvme.policy"
check reload-cli systemctl reload p2pbufd.service
expect_eq reload-status "STATUS= after the reload" "Policy reloaded" \
	"$(wait_status '^Policy reloaded' 30)"
as_tester reload-takes-effect vm-importer export nvme 2 0 0x1000
printf 'this is not a policy\n' >"$POLICY_DIR/policy.d/30-broken.policy"
check reload-bad-cli systemctl reload p2pbufd.service
expect_eq reload-bad-refused "STATUS= after reloading a broken policy" yes \
	"$(yes_if_match "$(wait_status 'refused' 30)" 'refused')"
expect_eq reload-bad-stays-up "state, main pid" "active $DPID" \
	"$(systemctl is-active p2pbufd.service) $(prop p2pbufd.service MainPID)"
as_tester reload-bad-keeps-policy vm-importer export nvme 2 0 0x1000
rm -f "$POLICY_DIR/policy.d/30-broken.policy"
systemctl reload p2pbufd.service
expect_eq reload-restored "STATUS= after removing the broken file" "Policy reloaded" \
	"$(wait_status '^Policy reloaded' 30)"

# ---- 4b: rules by systemd unit, and files only root may write ----
section "4b: allow unit rules; policy files others could write are refused"
# The second MiB of ivshmem's BAR 2 is allowed to one unit, whoever its user is.
printf 'allow unit p2pbuf-unit-probe.service device ivshmem bar 2 range 0x100000+0x100000\n' \
	>"$POLICY_DIR/policy.d/40-unit.policy"
systemctl reload p2pbufd.service
expect_eq unit-reload "STATUS= after adding a unit rule" "Policy reloaded" \
	"$(wait_status '^Policy reloaded' 30)"
# tester from this test's own unit: the rule is not theirs.
as_tester unit-other-unit-denied vm-importer export --expect EPERM ivshmem 2 0x100000 0x1000
# tester in the named unit: allowed, and the lease shows the unit the policy saw. A unit
# file of its own (systemd-run needs D-Bus, which the guest does not run); oneshot, so that
# systemctl start returns once it has run.
cat >/etc/systemd/system/p2pbuf-unit-probe.service <<EOF
[Service]
Type=oneshot
User=tester
StandardOutput=file:$W/unit.out
StandardError=inherit
ExecStart=/bin/sh -c 'exec p2pbuf-client --json export ivshmem --bar 2 --offset 0x100000 --length 0x1000 -- p2pbuf-client --json leases'
EOF
systemctl daemon-reload
_rc=0
systemctl start p2pbuf-unit-probe.service >"$W/unit-start.out" 2>&1 || _rc=$?
expect_eq unit-allowed "export from p2pbuf-unit-probe.service: exit status, owner_unit" \
	"0 yes" "$_rc $(grep -q '"owner_unit":"p2pbuf-unit-probe.service"' "$W/unit.out" &&
		echo yes || cat "$W/unit-start.out" "$W/unit.out" | tail -n 3 | tr '\n' ' ')"
# A drop-in that others can write is refused, naming the file; the policy before stays.
chmod 0666 "$POLICY_DIR/policy.d/40-unit.policy"
systemctl reload p2pbufd.service
expect_eq strict-refused "STATUS= after making a drop-in world-writable" yes \
	"$(yes_if_match "$(wait_status 'refused' 30)" 'refused')"
expect_eq strict-logged "the refusal names the file and the fix" yes \
	"$(journalctl --no-pager -u p2pbufd.service -o cat | grep 'reload refused' | tail -n 1 |
		grep -q '40-unit.policy.*chmod' && echo yes)"
chmod 0644 "$POLICY_DIR/policy.d/40-unit.policy"
systemctl reload p2pbufd.service
expect_eq strict-restored "STATUS= after chmod 0644" "Policy reloaded" \
	"$(wait_status '^Policy reloaded' 30)"

# ---- 4c: hotplug ----
section "4c: nvme unbound, removed, found again and rebound: back without a restart"
# devices_field FIELD: nvme's FIELD as p2pbuf-client devices shows it now.
devices_field() {
	p2pbuf-client --json devices >"$W/devices4c.json" 2>&1
	jget "$W/devices4c.json" ".devices[name=nvme].$1"
}
# wait_nvme FIELD REGEX SECONDS: until nvme's FIELD matches REGEX; prints it then.
wait_nvme() {
	_deadline=$(($(date +%s) + $3))
	until devices_field "$1" | grep -q -e "$2" || ! before; do
		sleep 0.2
	done
	devices_field "$1"
}
_gen=$(devices_field generation)
spawn holder4c vm-importer as tester p2pbuf-client --json export nvme --bar 2 --offset 0 \
	--length 4K --label hotplug
_hlease=$(lease_of holder4c)
# The unbind blocks until p2pbufd has closed the device: in the background.
spawn unbind4c sh -c "echo $NVME >/sys/bus/pci/drivers/vfio-pci/unbind"
expect_eq hotplug-unbind-completes "the unbind's exit status" 0 "$(reap unbind4c 30)"
expect_eq hotplug-holder-told "nvme holder: exit status, event, lease, reason" \
	"10 lease-revoked ${_hlease:-?} device-gone" "$(ended_as holder4c)"
udevadm settle
expect_eq hotplug-unbound-says "nvme after the unbind: state; message (udev's unbind)" \
	"gone yes" "$(devices_field state) $(yes_if_match "$(wait_nvme message \
		'unbound from its driver; p2pbufd opens it when udev says it is bound to vfio-pci' 15)" \
		'unbound from its driver; p2pbufd opens it')"
echo 1 >"/sys/bus/pci/devices/$NVME/remove"
udevadm settle
expect_eq hotplug-removed-says "nvme removed from the machine: its message" yes \
	"$(yes_if_match "$(wait_nvme message 'removed from the machine' 15)" 'removed from')"
echo 1 >/sys/bus/pci/rescan
udevadm settle
# Found again: bound to its own driver (nvme) where the guest has it, else to none.
expect_eq hotplug-found-says "nvme found by a rescan: state; its message names the fix" \
	"gone yes" "$(devices_field state) $(yes_if_match "$(wait_nvme message \
		"run p2pbuf-vfio-bind $NVME" 15)" "run p2pbuf-vfio-bind $NVME")"
bind_vfio "$NVME" || fail hotplug-bind "$NVME did not bind to vfio-pci again"
expect_eq hotplug-back "nvme bound to vfio-pci again: state, generation" \
	"ready $((_gen + 1))" "$(wait_nvme state '^ready$' 30) $(devices_field generation)"
expect_eq hotplug-no-restart "p2pbufd.service: main pid, restarts" "$DPID 0" \
	"$(prop p2pbufd.service MainPID) $(prop p2pbufd.service NRestarts)"
as_tester hotplug-export-again vm-importer export nvme 2 0 0x1000
# Every transition in the journal (and so to watchers): the states in order, repeats merged.
journalctl --no-pager -o export "MESSAGE_ID=$ID_DEVICE_STATE" P2PBUF_DEVICE=nvme |
	sed -n 's/^P2PBUF_STATE=//p' | uniq | tail -n 3 | tr '\n' ' ' >"$W/states4c"
expect_eq hotplug-journal "nvme's last states in the journal" "gone cycling ready " \
	"$(cat "$W/states4c")"
_node=$(vfio_cdev "$NVME")
expect_eq hotplug-node-in-sandbox "nvme's new cdev node, in p2pbufd's own /dev" yes \
	"$([ -c "/proc/$DPID/root$_node" ] && echo yes || echo "no $_node")"

# ---- 5: an iommufd holder DMAs through its lease ----
section "5: an iommufd holder (a p2pbuf member with its own edu)"
# The holder's own devices, as an admin hands a device to a user: edu's nodes, and /dev/iommu
# (iommufd is meant for unprivileged users; p2pbufd has it through its group already).
# The test's oracle, ivshmem's BAR through sysfs (root's only), is the tester's too.
EDU_CDEV=$(vfio_cdev "$EDU")
chown tester "$EDU_CDEV" "$EDU_GROUP" "/sys/bus/pci/devices/$IVSHMEM/resource2"
chmod 0666 /dev/iommu
timeout 120 vm-importer as tester vm-importer dma --edu "$EDU" ivshmem 2 0x40000 0x10000 \
	>"$W/dma.out" 2>&1
echo "vm-importer dma exited $?"
sed 's/^/dma| /' "$W/dma.out"
steps_results dma "$W/dma.out"
dmar_faults dma-dmar-fault "$W/dma.out"
chmod 0660 /dev/iommu
# The reset ended the first holder's lease too.
expect_eq dma-first-holder-told "case 2's holder: exit status; its last event, lease, reason" \
	"10 lease-revoked ${_lease:-?} reset" "$(ended_as holder)"
stop holder >/dev/null

# ---- 6: stop ----
section "6: systemctl stop"
spawn holder6 vm-importer as tester p2pbuf-client --json export ivshmem --bar 2 \
	--offset 0x20000 --length 0x1000 --label stop-holder
_lease6=$(lease_of holder6)
check stop-cli systemctl stop p2pbufd.service
expect_eq stop-holder-told "the holder: exit status; its last event, lease, reason" \
	"10 lease-revoked ${_lease6:-?} shutdown" "$(ended_as holder6)"
stop holder6 >/dev/null
expect_eq stop-states "service, socket after the stop" "inactive active" \
	"$(systemctl is-active p2pbufd.service) $(systemctl is-active p2pbufd.socket)"
as_tester stop-reactivates vm-importer export ivshmem 2 0 0x1000
expect_eq stop-reactivated "p2pbufd.service after the next client" active \
	"$(systemctl is-active p2pbufd.service)"

# ---- 6b: the legacy group path ----
section "6b: the legacy group path, no locked memory"
# The legacy group path needs no more: with the cdev nodes and /dev/iommu taken out of the
# device list the daemon falls back to /dev/vfio/vfio and the group node, and no locked
# memory at all is allowed (an exporter maps nothing for DMA).
printf '[Service]\nDeviceAllow=\nDeviceAllow=/dev/vfio/vfio rw\nDeviceAllow=char-vfio rw\nLimitMEMLOCK=0\n' \
	>"$DROPIN/50-legacy.conf"
systemctl daemon-reload
systemctl stop p2pbufd.service
as_tester sandbox-legacy-export vm-importer export ivshmem 2 0 0x1000
daemon_log >"$W/daemon.log"
expect_eq sandbox-legacy-path "ivshmem opened on the legacy group path, memlock 0" "yes 0" \
	"$(says "$W/daemon.log" "through legacy VFIO group") $(
		sed -n 's/^Max locked memory *\([0-9]*\).*/\1/p' \
			"/proc/$(prop p2pbufd.service MainPID)/limits")"
rm -f "$DROPIN/50-legacy.conf"
systemctl daemon-reload
systemctl restart p2pbufd.service
DPID=$(prop p2pbufd.service MainPID)

# ---- 7: the watchdog ----
section "7: the watchdog"
printf '[Service]\nWatchdogSec=4s\n' >"$DROPIN/50-watchdog.conf"
systemctl daemon-reload
check watchdog-restart-cli systemctl restart p2pbufd.service
# Pings: the watchdog timestamp moves twice (4 s) while the same process runs.
DPID=$(prop p2pbufd.service MainPID)
_n=$(prop p2pbufd.service NRestarts)
_t0=$(prop p2pbufd.service WatchdogTimestampMonotonic)
_moves=0
_deadline=$(($(date +%s) + 15))
while [ "$_moves" -lt 2 ] && before && [ "$(prop p2pbufd.service MainPID)" = "$DPID" ]; do
	sleep 0.1
	_t1=$(prop p2pbufd.service WatchdogTimestampMonotonic)
	[ "$_t1" = "$_t0" ] || _moves=$((_moves + 1))
	_t0=$_t1
done
expect_eq watchdog-pings "WATCHDOG=1 twice from pid $DPID within 15 s; restarts" "2 $_n" \
	"$_moves $(prop p2pbufd.service NRestarts)"
DPID=$(prop p2pbufd.service MainPID)
_n=$(prop p2pbufd.service NRestarts)
if [ "${DPID:-0}" != 0 ]; then
	kill -STOP "$DPID"
fi
expect_eq watchdog-restarted "restarts after SIGSTOP of pid $DPID (within 40 s)" "$((_n + 1))" \
	"$(wait_prop p2pbufd.service NRestarts "$((_n + 1))" 40)"
expect_eq watchdog-new-pid "state; a new main pid" "active yes" \
	"$(wait_prop p2pbufd.service ActiveState active 20) $(
		[ "$(prop p2pbufd.service MainPID)" != "$DPID" ] && echo yes)"
daemon_log >"$W/daemon.log"
journalctl --no-pager -o cat -u p2pbufd.service | grep -i watchdog | tail -n 3
expect_eq watchdog-logged "systemd logged the watchdog timeout" yes \
	"$(journalctl --no-pager -o cat -u p2pbufd.service | grep -q -i 'watchdog timeout' && echo yes)"
as_tester watchdog-serves-again vm-importer export ivshmem 2 0 0x1000
rm -f "$DROPIN/50-watchdog.conf"
systemctl daemon-reload

# ---- 8: the daemon's own seccomp filter ----
section "8: the daemon's seccomp filter"
# seccomp_filters: the number of filters of the main process once the service is ready
# (while systemd still sets a process up, it has fewer); "" if it does not become ready.
seccomp_filters() {
	systemctl restart p2pbufd.service >/dev/null 2>&1
	[ "$(wait_prop p2pbufd.service ActiveState active 10)" = active ] &&
		status_field "$(prop p2pbufd.service MainPID)" Seccomp_filters
}
_on=$(seccomp_filters)
printf '[Service]\nExecStart=\nExecStart=%s --sandbox=off\n' "$(command -v p2pbufd)" \
	>"$DROPIN/50-sandbox-off.conf"
systemctl daemon-reload
_off=$(seccomp_filters)
echo "seccomp filters of the main process: default ${_on:-?}, --sandbox=off ${_off:-?}"
expect_eq seccomp-own-filter "seccomp filters: p2pbufd's own on top of systemd's" yes \
	"$([ -n "$_on" ] && [ -n "$_off" ] && [ "$_on" -gt "$_off" ] && echo yes ||
		echo "default ${_on:-(did not start)}, --sandbox=off ${_off:-(did not start)}")"
rm -f "$DROPIN/50-sandbox-off.conf"
systemctl daemon-reload
# A daemon that would not start has made systemd give up on the service and its socket.
systemctl reset-failed p2pbufd.service p2pbufd.socket 2>/dev/null
systemctl restart p2pbufd.socket p2pbufd.service

# ---- 9: the journal ----
section "9: the journal's audit entries"
journal_has journal-granted "$ID_GRANTED" "_SYSTEMD_UNIT=p2pbufd.service" \
	"P2PBUF_LEASE=${_lease:-?}" "P2PBUF_DEVICE=ivshmem" "P2PBUF_BAR=2" \
	"P2PBUF_UID=$TESTER_UID" "P2PBUF_RULE=$POLICY_DIR/policy.d/10-vm.policy:4"
journal_has journal-denied "$ID_DENIED" "P2PBUF_DEVICE=nvme" "P2PBUF_UID=$TESTER_UID"
journal_has journal-lease-ended "$ID_LEASE_ENDED" "P2PBUF_LEASE=${_lease6:-?}" \
	"P2PBUF_REASON=shutdown"
journal_has journal-reset "$ID_RESET" "P2PBUF_DEVICE=ivshmem"
journal_has journal-device-state "$ID_DEVICE_STATE" "P2PBUF_DEVICE=ivshmem"
journal_has journal-reload "$ID_RELOAD" "_SYSTEMD_UNIT=p2pbufd.service" "P2PBUF_RESULT=reloaded"
journal_has journal-reload-refused "$ID_RELOAD" "P2PBUF_RESULT=refused"
# ---- 10: restarts revoke nobody ----
section "10: a restart, a crash and a watchdog kill keep the leases"
# lease_state ID: "STATE GENERATION" of lease ID in the daemon's listing, "gone" without it.
lease_state() {
	p2pbuf-client --json leases --all >"$W/leases10.json" 2>/dev/null
	_st=$(jget "$W/leases10.json" ".leases[id=$1].state")
	[ -n "$_st" ] && [ "$_st" != null ] && echo "$_st $(jget "$W/leases10.json" ".leases[id=$1].generation")" ||
		echo gone
}
# The holder's lease, on a generation of ivshmem that cases above left behind.
spawn holder10 vm-importer as tester p2pbuf-client --json export ivshmem --bar 2 \
	--offset 0x30000 --length 0x1000 --label survive
_lease10=$(lease_of holder10)
_gen10=$(lease_state "${_lease10:-0}" | cut -d' ' -f2)
echo "lease ${_lease10:-?} on ivshmem generation ${_gen10:-?}"
_parked=$(systemctl show -p NFileDescriptorStore --value p2pbufd.service 2>/dev/null)
echo "fds in p2pbufd.service's store: ${_parked:-?}"
# systemctl restart: the new instance takes the lease over; the holder reclaims it (its
# reconnect), so it is still active after the 5 s grace.
check restart-cli systemctl restart p2pbufd.service
DPID=$(prop p2pbufd.service MainPID)
expect_eq restart-adopted "after systemctl restart: the lease's state and generation" \
	"active ${_gen10:-?}" "$(lease_state "${_lease10:-0}")"
sleep 6 # past the reclaim grace: an unreclaimed lease would be revoking by now
expect_eq restart-reclaimed "past the grace: the holder reclaimed it" "active ${_gen10:-?}" \
	"$(lease_state "${_lease10:-0}")"
expect_eq restart-logged "the new instance says it took the lease over" yes \
	"$(daemon_log | grep -q 'took over 1 of 1 recorded' && echo yes)"
# A crash (SIGKILL) with Restart=on-failure.
_n=$(prop p2pbufd.service NRestarts)
kill -KILL "$DPID"
expect_eq crash-restarted "restarts after kill -9 of pid $DPID (within 30 s)" "$((_n + 1))" \
	"$(wait_prop p2pbufd.service NRestarts "$((_n + 1))" 30)"
wait_prop p2pbufd.service ActiveState active 20 >/dev/null
expect_eq crash-adopted "after kill -9: the lease's state and generation" "active ${_gen10:-?}" \
	"$(lease_state "${_lease10:-0}")"
# A watchdog kill (the loop stopped: SIGSTOP) with a 4 s watchdog.
printf '[Service]\nWatchdogSec=4s\n' >"$DROPIN/50-watchdog.conf"
systemctl daemon-reload
DPID=$(prop p2pbufd.service MainPID)
_n=$(prop p2pbufd.service NRestarts)
kill -STOP "$DPID"
expect_eq watchdog-kill-restarted "restarts after SIGSTOP of pid $DPID (within 40 s)" \
	"$((_n + 1))" "$(wait_prop p2pbufd.service NRestarts "$((_n + 1))" 40)"
wait_prop p2pbufd.service ActiveState active 20 >/dev/null
expect_eq watchdog-kill-adopted "after the watchdog kill: the lease's state and generation" \
	"active ${_gen10:-?}" "$(lease_state "${_lease10:-0}")"
rm -f "$DROPIN/50-watchdog.conf"
systemctl daemon-reload
# The holder is still holding, undisturbed, until the stop below.
expect_eq crash-holder-running "the holder is still running" yes \
	"$(kill -0 "$(cat "$W/holder10.pid" 2>/dev/null || echo 0)" 2>/dev/null && echo yes)"
# systemctl stop still ends what was taken over, telling the holder first.
check restart-then-stop systemctl stop p2pbufd.service
expect_eq restart-stop-told "after the restarts, a stop: the holder told (reason shutdown)" \
	"10 lease-revoked ${_lease10:-?} shutdown" "$(ended_as holder10)"
systemctl start p2pbufd.socket p2pbufd.service
# ---- 10b: an iommufd holder's DMA through restarts ----
section "10b: an iommufd holder's edu DMA through a restart, a crash, then a reset"
chown tester "$EDU_CDEV" "$EDU_GROUP" "/sys/bus/pci/devices/$IVSHMEM/resource2"
chmod 0666 /dev/iommu
mkfifo "$W/hold.ctl"
vm-importer as tester vm-importer dma-hold --edu "$EDU" ivshmem 2 0x50000 0x10000 \
	<"$W/hold.ctl" >"$W/hold.out" 2>&1 &
_hold=$!
exec 8>"$W/hold.ctl"
wait_grep "$W/hold.out" '^ready lease' 30 >/dev/null
expect_eq hold-before "edu DMA through the held lease, before" live "$(hold check before)"
check hold-restart-cli systemctl restart p2pbufd.service
expect_eq hold-after-restart "edu DMA right after systemctl restart" live \
	"$(hold check after-restart)"
hold sync after-restart >/dev/null
expect_eq hold-reclaimed-restart "the holder reclaimed its lease by itself (libp2pbuf)" yes \
	"$(grep -q '^reconnected reclaimed 1' "$W/hold.out" && echo yes)"
# kill -9 with the restart 3 s away: the DMA while p2pbufd is gone.
printf '[Service]\nRestartSec=3s\n' >"$DROPIN/50-restartsec.conf"
systemctl daemon-reload
DPID=$(prop p2pbufd.service MainPID)
_n=$(prop p2pbufd.service NRestarts)
kill -KILL "$DPID"
wait_prop p2pbufd.service MainPID 0 10 >/dev/null
expect_eq hold-during-crash "edu DMA while p2pbufd is gone (main pid $(prop p2pbufd.service MainPID))" \
	live "$(hold check during-crash)"
wait_prop p2pbufd.service NRestarts "$((_n + 1))" 30 >/dev/null
wait_prop p2pbufd.service ActiveState active 20 >/dev/null
hold sync after-crash >/dev/null
expect_eq hold-after-crash "edu DMA after the restart that followed kill -9" live \
	"$(hold check after-crash)"
expect_eq hold-reclaimed-crash "reclaimed again after the crash" 2 \
	"$(grep -c '^reconnected reclaimed 1' "$W/hold.out")"
rm -f "$DROPIN/50-restartsec.conf"
systemctl daemon-reload
# The taken-over lease is still revocable: a reset through the new instance kills it.
check hold-reset p2pbuf-client reset ivshmem
expect_eq hold-after-reset "edu DMA after a reset through the new instance" dead \
	"$(hold check after-reset)"
expect_eq hold-map-after-reset "IOMMU_IOAS_MAP_FILE of the old fd after the reset" ENODEV \
	"$(hold map after-reset)"
echo quit >&8
exec 8>&-
wait "$_hold"
sed 's/^/hold| /' "$W/hold.out"
# A second holder, through a watchdog kill, then systemctl stop.
: >"$W/hold.out"
vm-importer as tester vm-importer dma-hold --edu "$EDU" ivshmem 2 0x60000 0x10000 \
	<"$W/hold.ctl" >"$W/hold.out" 2>&1 &
_hold=$!
exec 8>"$W/hold.ctl"
wait_grep "$W/hold.out" '^ready lease' 30 >/dev/null
expect_eq hold2-before "the second holder's edu DMA, before" live "$(hold check before2)"
printf '[Service]\nWatchdogSec=4s\n' >"$DROPIN/50-watchdog.conf"
systemctl daemon-reload
DPID=$(prop p2pbufd.service MainPID)
_n=$(prop p2pbufd.service NRestarts)
kill -STOP "$DPID"
wait_prop p2pbufd.service NRestarts "$((_n + 1))" 40 >/dev/null
wait_prop p2pbufd.service ActiveState active 20 >/dev/null
hold sync after-watchdog >/dev/null
expect_eq hold2-after-watchdog "edu DMA after the watchdog killed pid $DPID" live \
	"$(hold check after-watchdog)"
expect_eq hold2-reclaimed "reclaimed after the watchdog kill" yes \
	"$(grep -q '^reconnected reclaimed 1' "$W/hold.out" && echo yes)"
rm -f "$DROPIN/50-watchdog.conf"
systemctl daemon-reload
check hold2-stop systemctl stop p2pbufd.service
expect_eq hold2-after-stop "edu DMA after systemctl stop" dead "$(hold check after-stop)"
expect_eq hold2-map-after-stop "IOMMU_IOAS_MAP_FILE of the old fd after the stop" ENODEV \
	"$(hold map after-stop)"
echo quit >&8
exec 8>&-
wait "$_hold"
sed 's/^/hold2| /' "$W/hold.out"
systemctl start p2pbufd.socket
chmod 0660 /dev/iommu
section ""
exit 0
