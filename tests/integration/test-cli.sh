#!/bin/bash
# p2pbuf-client against real p2pbufd daemons with simulated devices: the verbs, their help,
# their output (tables and the one JSON shape), the size grammar, and the exit status and
# message a user sees for every failure that simulated devices can provoke.
# Two daemons: one where this user is an admin, and one where it is not, with fault injection
# (P2PBUF_SIM_CONTROL) for a failed, a removed and a slowly cycling device.
# Ends with "N passed, N failed". Waits poll for a condition, never guess a duration.
set -u

top_builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$top_builddir}
daemon=$top_builddir/daemon/p2pbufd
client=$top_builddir/client/p2pbuf-client
dir=$(mktemp -d /tmp/p2pbuf-cli-XXXXXX)
sock=$dir/sock
sock2=$dir/sock2
ctl2=$dir/ctl2
uid=$(id -u)
# pass, fail, wait_for, run, json_ok, run_json, file_has; cleanup at exit.
# shellcheck source=tests/integration/cli-lib.sh
. "$top_srcdir/tests/integration/cli-lib.sh"

# An error document, with the errno name and the exit status it reported.
error_is() { echo "len(d) == 1 and d[0]['error']['errno'] == '$1' and d[0]['error']['exit_status'] == $2 and sorted(d[0]['error']) == ['code', 'context', 'detail', 'errno', 'exit_status', 'hint', 'message']"; }

device_state() { # SOCKET DEVICE STATE: the device is listed in that state
	"$client" --socket "$1" --json devices 2>/dev/null >"$dir/state.json" &&
		json_ok "$dir/state.json" "any(x['name'] == '$2' and x['state'] == '$3' for x in d[0]['devices'])"
}
lease_listed() { "$client" --socket "$sock" leases 2>/dev/null | grep -q "$1"; }

# exited NAME PID STATUS PATTERN FILE: the background client PID exits with STATUS, and what
# it wrote to FILE matches PATTERN.
exited() {
	wait "$2"
	local got=$?
	if [ "$got" -eq "$3" ] && grep -Eq -- "$4" "$5"; then
		pass "$1"
	else
		fail "$1" "status $got, expected $3: $(cat "$5")"
	fi
}

# hold FILE ARGS...: start "export ARGS" holding a lease in the background, its output in FILE;
# wait for the lease, then set holder (its pid) and id (the lease's).
hold() {
	local file=$1
	shift
	"$client" "$@" >"$file" 2>&1 &
	holder=$!
	pids+=("$holder")
	wait_for 30 file_has "$file" '^lease' || fail "hold $*" "$(cat "$file")"
	id=$(sed -n 's/^lease \([0-9]*\) .*/\1/p' "$file")
}

cat >"$dir/policy" <<EOF
device sim0 sim bar 0 64K bar 2 2M msix-table 0 0x2000+0x800
device sim1 sim bar 0 1M
device sim2 sim bar 0 64K msix-table 0 0x2000+0x800
allow user $uid device sim0 bar 2
allow user $uid device sim1
allow user $uid device sim2 max-leases 1
admin user $uid
EOF
# Not an admin here. broken cannot open its control FIFO (a directory is in the way), so it
# starts failed; gone is removed and slow cycles (for 3 s) when the test says so.
cat >"$dir/policy2" <<EOF
device slow sim bar 0 64K cycle-delay 3s on-error cycle
device gone sim bar 0 64K
device broken sim bar 0 64K
allow user $uid device slow
allow user $uid device gone
allow user $uid device broken
EOF
mkdir -p "$ctl2/broken.remove"

# Before a daemon runs: the client says how to find it.
run no-daemon 3 "cannot connect to $sock: no socket there.*is p2pbufd running" -- devices
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(sys.argv[1])' "$sock"
run nobody-listens 3 "cannot connect to $sock: nobody listens" -- devices
run_json no-daemon-json 3 "$(error_is ECONNREFUSED 3)" -- --socket "$sock" status
rm -f "$sock"

"$daemon" --policy "$dir/policy" --socket "$sock" --max-lease-size 1M 2>"$dir/daemon.log" &
pids+=($!)
daemon2_pid=
P2PBUF_SIM_CONTROL=$ctl2 "$daemon" --policy "$dir/policy2" --socket "$sock2" 2>"$dir/daemon2.log" &
daemon2_pid=$!
pids+=("$daemon2_pid")
if wait_for 30 "$client" --socket "$sock" status >/dev/null 2>&1; then
	pass daemon-up
else
	fail daemon-up "$(cat "$dir/daemon.log")"
fi

# A user who may not use the socket is told what to do (root can drop to nobody to try).
if [ "$uid" -eq 0 ] && command -v setpriv >/dev/null; then
	setpriv --reuid=65534 --regid=65534 --clear-groups "$client" --socket "$sock" devices \
		>"$dir/out" 2>&1
	got=$?
	if [ "$got" -eq 4 ] && grep -q "permission denied (are you in the p2pbuf group?)" "$dir/out"
	then
		pass socket-permission-denied
	else
		fail socket-permission-denied "exit status $got, expected 4 and the advice"
	fi
fi

# ---- help: global, and each verb's own, by both spellings ----
verbs="devices leases export release watch reset revoke status help"
"$client" --help >"$dir/help-global" 2>&1
"$client" help >"$dir/help-global2" 2>&1
if grep -q '^Commands:' "$dir/help-global" && cmp -s "$dir/help-global" "$dir/help-global2"; then
	pass help-global
else
	fail help-global "--help and help differ or list no commands"
fi
for v in $verbs; do
	"$client" "$v" --help >"$dir/help-$v" 2>&1
	s1=$?
	"$client" help "$v" >"$dir/help2-$v" 2>&1
	s2=$?
	if [ $s1 -eq 0 ] && [ $s2 -eq 0 ] && grep -q "^Usage: p2pbuf-client $v" "$dir/help-$v" &&
		cmp -s "$dir/help-$v" "$dir/help2-$v" && ! cmp -s "$dir/help-$v" "$dir/help-global"; then
		pass "help-$v"
	else
		fail "help-$v" "status $s1/$s2: $(head -n 2 "$dir/help-$v")"
	fi
done
for o in --bar --offset --length --label; do
	grep -q -- "$o" "$dir/help-export" || fail help-export-options "no $o in export --help"
done
grep -q -- --all "$dir/help-leases" && pass help-leases-all || fail help-leases-all "no --all"
run help-unknown 2 "unknown command 'nosuch'" -- help nosuch
# The exit statuses of --help are those of the manual page.
sed -n '/^\.SH EXIT STATUS/,/^\.SH/p' "$top_srcdir/client/p2pbuf-client.1" |
	sed -n 's/^\.B \([0-9][0-9]*\)$/\1/p' | tr '\n' ' ' >"$dir/man-exits"
sed -n '/^Exit status:/,/^$/p' "$dir/help-global" | sed -n 's/^ *\([0-9][0-9]*\)  .*/\1/p' |
	tr '\n' ' ' >"$dir/help-exits"
if [ -s "$dir/man-exits" ] && cmp -s "$dir/man-exits" "$dir/help-exits"; then
	pass exit-statuses-documented
else
	fail exit-statuses-documented "man: $(cat "$dir/man-exits"); help: $(cat "$dir/help-exits")"
fi

# ---- usage errors: exit 2, and a JSON error object once --json is read ----
run usage-no-command 2 "missing COMMAND" --
run usage-unknown-command 2 "unknown command 'frobnicate'" -- frobnicate
run usage-export 2 "missing DEVICE" -- export
run usage-export-bar 2 "missing --bar N" -- export sim0
run usage-export-bad-bar 2 "bad BAR '6'" -- export sim0 --bar 6
run usage-export-operand 2 "unexpected argument 'true'.*after --" -- export sim0 --bar 2 true
run usage-export-no-cmd 2 "no command after --" -- export sim0 --bar 2 --
run usage-export-offset 2 "--offset needs a --length" -- export sim0 --bar 2 --offset 4K
run usage-unknown-option 2 "option '--frob' is unknown" -- devices --frob
run usage-missing-value 2 "option '--bar' needs a value" -- export sim0 --bar
run usage-release 2 "missing ID" -- release
run usage-release-id 2 "bad lease ID '5x'" -- release 5x
run usage-release-two 2 "unexpected argument '6'" -- release 5 6
run usage-leases-operand 2 "unexpected argument 'x'" -- leases x
run usage-version-after 2 "option '-V' is unknown" -- status -V
run_json usage-json 2 "d[0]['error']['errno'] is None and d[0]['error']['code'] is None and d[0]['error']['exit_status'] == 2 and d[0]['error']['context'] == 'export'" -- --socket "$sock" export sim0 --frob
# --json after the bad option still shapes the report.
run_json usage-json-late 2 "d[0]['error']['message'] == 'missing --bar N'" -- --socket "$sock" export sim0 --json

# ---- the size grammar (proto/units.h), on --length and --offset ----
# shellcheck disable=SC2016 # the command's own shell expands the variables
size_is() { echo 'test "$P2PBUF_SIZE" = '"$1"; }
for spec in 64K:65536 64k:65536 64KiB:65536 64kib:65536 0x10000:65536 65536:65536 1M:1048576 \
	1mib:1048576 0100K:102400 0X2000:8192; do
	run "size-$spec" 0 "" -- export sim1 --bar 0 --length "${spec%%:*}" -- sh -c "$(size_is "${spec#*:}")"
done
run size-offset-hex 0 "" -- export sim1 --bar 0 --offset 0x1000 --length 4k -- sh -c "$(size_is 4096)"
run size-offset-unit 0 "" -- export sim1 --bar 0 --offset 1020K --length 4k -- sh -c "$(size_is 4096)"
for bad in 64KB 64kb 1.5M -4096 0x10K 4x "" K "4 K" 12Q 0x 1KIBB; do
	run "size-refused-'$bad'" 2 "bad length '$bad'" -- export sim1 --bar 0 --length "$bad" -- true
done
run size-too-large 2 "bad offset '99999999999999999999': too large" -- export sim1 --bar 0 \
	--offset 99999999999999999999 --length 4K -- true
run size-16E-too-large 2 "too large" -- export sim1 --bar 0 --length 16777216T -- true

# ---- verbs, tables ----
run devices 0 "sim0.*sim.*ready" -- devices
run devices-simulated 0 "simulated" -- devices
run status 0 "version: +[0-9]+\.[0-9]+\.[0-9]+" -- status
run status-admin 0 "admin: +yes" -- status
run status-limits 0 "leases: +[0-9]+ \(at most [0-9]+; fd limit [0-9]+\)" -- status
# shellcheck disable=SC2016 # the command's own shell expands the variables
run export-cmd 0 "" -- export sim0 --bar 2 --offset 0 --length 64K -- \
	sh -c 'test "$P2PBUF_SIZE" = 65536 && test -e "/proc/self/fd/$P2PBUF_FD" && test -n "$P2PBUF_LEASE_ID" && test "$P2PBUF_DEVICE" = sim0'
run export-cmd-status 7 "" -- export sim1 --bar 0 -- sh -c 'exit 7'
run export-cmd-signal 143 "" -- export sim1 --bar 0 -- sh -c 'kill -TERM $$'
run export-cmd-not-found 127 "cannot run" -- export sim1 --bar 0 -- /nonexistent/cmd
run export-cmd-options 0 "" -- export sim1 --bar 0 -- sh -c 'test "$1" = --bar' sh --bar
run leases-empty-after-cmd 0 "" -- leases
if grep -q sim0 "$dir/out"; then fail leases-released "lease still listed"; else pass leases-released; fi

# ---- the exit status of each failure ----
run denied 4 "denied by policy" -- export sim0 --bar 0 --length 4K -- true
run unknown-device 5 "unknown device" -- export nosuch --bar 0 -- true
run no-such-bar 5 "no BAR 3" -- export sim1 --bar 3 -- true
run unaligned 6 "aligned" -- export sim0 --bar 2 --offset 0x100 --length 4K -- true
run outside-bar 6 "outside BAR 2" -- export sim0 --bar 2 --offset 2M --length 4K -- true
run msix 6 "MSI-X" -- export sim2 --bar 0 --offset 0x2000 --length 4K -- true
run too-large 6 "exceeds the limit" -- export sim0 --bar 2 -- true
ranges=()
for i in $(seq 65); do ranges+=(--offset "$((i * 8))K" --length 4K); done
run too-many-ranges 6 "too many ranges" -- export sim1 --bar 0 "${ranges[@]}" -- true
run release-unknown 5 "no lease" -- release 9999
run revoke-unknown 5 "no lease|unknown lease" -- revoke 9999
run reset-unknown 5 "unknown device" -- reset nosuch
# The second lease on sim2 is over its rule's max-leases 1.
hold "$dir/hold-quota" --socket "$sock" export sim2 --bar 0 --length 4K
run quota 7 "lease limit" -- export sim2 --bar 0 --length 4K -- true
kill -INT "$holder"
wait "$holder"

# Errors as JSON: one object on stdout, the same exit status.
run_json error-json-unknown-device 5 "$(error_is ENODEV 5) and d[0]['error']['code'] == -19 and 'nosuch' in d[0]['error']['detail']" -- --socket "$sock" export nosuch --bar 0 -- true
run_json error-json-denied 4 "$(error_is EPERM 4)" -- --socket "$sock" export sim0 --bar 0 -- true
run_json error-json-range 6 "$(error_is ERANGE 6)" -- --socket "$sock" export sim0 --bar 2 --offset 2M --length 4K -- true
run_json error-json-lease 5 "$(error_is ENOENT 5) and d[0]['error']['context'] == 'release lease 9999'" -- --socket "$sock" release 9999
# Names with quotes, controls and bytes that are not UTF-8 are escaped, never raw.
run_json error-json-escaped 6 "d[0]['error']['context'] == 'export n\\x01\"\\ufffdx\\\\ bar 0'" -- \
	--socket "$sock" export $'n\x01"\xffx\\' --bar 0 -- true
if grep -q $'\x01' "$dir/out"; then fail error-text-escaped "a control character reached stderr"; else pass error-text-escaped; fi

# ---- JSON shape: one key for one thing ----
run_json devices-json 0 "len(d) == 1 and [x['name'] for x in d[0]['devices']] == ['sim0', 'sim1', 'sim2'] and len(set(tuple(x) for x in d[0]['devices'])) == 1 and {'offset': 8192, 'length': 2048} in d[0]['devices'][0]['bars'][0]['reserved']" -- --socket "$sock" devices
run_json status-json 0 "d[0]['status']['admin'] is True and d[0]['status']['device_count'] == 3 and d[0]['status']['socket'] == '$sock'" -- --socket "$sock" status
run_json leases-json-empty 0 "d == [{'leases': []}]" -- --socket "$sock" leases

# A held lease: export's JSON says the same as the listing, with the same keys.
"$client" --socket "$sock" --json export sim1 --bar 0 --length 8K --label held >"$dir/hold.json" 2>"$dir/hold.err" &
holder=$!
pids+=("$holder")
wait_for 30 file_has "$dir/hold.json" 'lease-granted' || fail export-hold-json "$(cat "$dir/hold.err")"
run_json leases-json 0 "d[0]['leases'][0]['device'] == 'sim1' and d[0]['leases'][0]['label'] == 'held'" -- --socket "$sock" leases
cp "$dir/json" "$dir/leases.json"
if python3 - "$dir/hold.json" "$dir/leases.json" <<'EOF'; then
import json, sys
granted = json.loads(open(sys.argv[1]).readline())
listed = json.load(open(sys.argv[2]))["leases"][0]
lease = granted["lease"]
assert granted["event"] == "lease-granted" and isinstance(granted["fd"], int), granted
assert sorted(lease) == sorted(listed), (sorted(lease), sorted(listed))
assert lease["id"] == listed["id"] and lease["size"] == 8192, (lease, listed)
# unknown or absent values are null, never -1 or 0
assert listed["expires_ms"] is None and listed["deadline_ms"] is None, listed
assert listed["reason"] is None and listed["state"] == "active", listed
assert listed["ranges"] == [{"offset": 0, "length": 8192}], listed
EOF
	pass export-json-same-lease
else
	fail export-json-same-lease "$(cat "$dir/hold.json" "$dir/leases.json")"
fi
"$client" --socket "$sock" --json watch >"$dir/watch.json" 2>&1 &
watcher=$!
pids+=("$watcher")
wait_for 30 file_has "$dir/watch.json" '"watching"' || fail watch-started "$(cat "$dir/watch.json")"
run_json reset-json 0 "d == [{'action': 'reset', 'device': {'name': 'sim1'}}]" -- --socket "$sock" reset sim1
wait "$holder"
status=$?
if [ "$status" -eq 10 ] && json_ok "$dir/hold.json" "len(d) == 2 and d[1]['event'] in ('lease-revoking', 'lease-revoked') and d[1]['lease']['id'] == d[0]['lease']['id'] and d[1]['lease']['reason'] == 'reset'"; then
	pass export-json-revoked
else
	fail export-json-revoked "status $status: $(cat "$dir/hold.json")"
fi
wait_for 30 file_has "$dir/watch.json" '"ready"' || fail watch-json-ready "$(cat "$dir/watch.json")"
kill -INT "$watcher"
wait "$watcher"
if json_ok "$dir/watch.json" "d[0]['event'] == 'watching' and d[0]['scope'] == 'all' and all(isinstance(x['time_ms'], int) for x in d) and any(x['event'] == 'device-state' and x['device']['name'] == 'sim1' and x['device']['state'] == 'cycling' for x in d) and any(x['event'].startswith('lease-') and x['lease']['id'] == $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["lease"]["id"])' "$dir/hold.json") for x in d)"; then
	pass watch-json
else
	fail watch-json "$(cat "$dir/watch.json")"
fi

# ---- a held lease in text: listed, ended by a reset, the reason told to the holder ----
hold "$dir/hold" --socket "$sock" export sim1 --bar 0 --length 8K
if grep -Eq '^lease [0-9]+ device sim1 bar 0 size 8192' "$dir/hold"; then
	pass export-hold
else
	fail export-hold "$(cat "$dir/hold")"
fi
run leases-held 0 "^$id +sim1" -- leases
"$client" --socket "$sock" watch >"$dir/watch" 2>&1 &
watcher=$!
pids+=("$watcher")
wait_for 30 file_has "$dir/watch" 'watching scope=all' || fail watch-started "$(cat "$dir/watch")"
run reset 0 "device sim1 reset" -- reset sim1
exited holder-told-reset "$holder" 10 "revoked.*reset" "$dir/hold"
wait_for 30 file_has "$dir/watch" 'sim1.*state=ready' || true
kill -INT "$watcher"
wait "$watcher"
if grep -q "sim1.*cycling" "$dir/watch" && grep -q "sim1.*ready" "$dir/watch" &&
	grep -q "lease $id revok" "$dir/watch"; then
	pass watch-events
else
	fail watch-events "$(cat "$dir/watch")"
fi

# Interrupting a holder releases its lease; release and revoke by id.
hold "$dir/hold2" --socket "$sock" export sim1 --bar 0 --length 4K
kill -INT "$holder"
wait "$holder"
status=$?
if [ "$status" -eq 0 ] && wait_for 30 eval '! lease_listed sim1'; then
	pass interrupt-releases
else
	fail interrupt-releases "status $status"
fi
hold "$dir/hold3" --socket "$sock" export sim1 --bar 0 --length 4K
run_json revoke-json 0 "d == [{'action': 'revoke', 'lease': {'id': $id}}]" -- --socket "$sock" revoke "$id"
exited holder-told-revoke "$holder" 10 "revoked: admin" "$dir/hold3"
hold "$dir/hold5" --socket "$sock" export sim1 --bar 0 --length 4K
run_json release-json 0 "d == [{'action': 'release', 'lease': {'id': $id}}]" -- --socket "$sock" release "$id"
kill -INT "$holder"
wait "$holder"

# ---- bash completion: commands, options per command, device names from the daemon ----
# complete WORDS...: what the completion offers for the last word, sorted, on one line.
complete_words() {
	(
		PATH=$(dirname "$client"):$PATH
		complete() { :; }
		# shellcheck source=client/p2pbuf-client.bash-completion
		. "$top_srcdir/client/p2pbuf-client.bash-completion"
		COMP_WORDS=("$@")
		COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
		_p2pbuf_client
		[ ${#COMPREPLY[@]} -eq 0 ] || printf '%s\n' "${COMPREPLY[@]}" | sort | tr '\n' ' '
	)
}
check_completion() { # NAME EXPECTED WORDS...
	local name=$1 want=$2 got
	shift 2
	got=$(complete_words "$@")
	if [ "$got" = "$want" ]; then pass "completion-$name"; else fail "completion-$name" "got '$got', expected '$want'"; fi
}
check_completion verbs "release reload reset revoke " p2pbuf-client re
check_completion policy-commands "--help add check edit remove show test " p2pbuf-client policy ""
check_completion policy-remove-options "--match " p2pbuf-client policy remove --m
check_completion policy-test-devices "sim0 " p2pbuf-client --socket "$sock" policy test --uid 0 sim0
check_completion global-options "--help --json --socket --version " p2pbuf-client --
check_completion export-options "--label --length " p2pbuf-client export sim0 --l
check_completion leases-all "--all " p2pbuf-client leases --a
check_completion bar "2 " p2pbuf-client export sim0 --bar 2
check_completion devices "sim0 sim1 sim2 " p2pbuf-client --socket "$sock" export sim
check_completion reset-devices "sim1 " p2pbuf-client --socket "$sock" reset sim1
check_completion help-verbs "devices " p2pbuf-client help dev
check_completion no-second-operand "" p2pbuf-client --socket "$sock" export sim0 sim

# ---- the second daemon: not an admin, and devices that fail ----
if wait_for 60 "$client" --socket "$sock2" status >/dev/null 2>&1; then
	pass daemon2-up
else
	fail daemon2-up "$(cat "$dir/daemon2.log")"
fi
sock=$sock2
run status-not-admin 0 "admin: +no" -- status
run reset-not-admin 4 "reset needs an admin.*only p2pbufd admins" -- reset slow
run revoke-not-admin 4 "denied by policy" -- revoke 1
run leases-all-not-admin 4 "observer or admin" -- leases --all
run_json error-json-not-admin 4 "$(error_is EPERM 4)" -- --socket "$sock" reset slow
run failed-device 5 "device not available.*devices' says why" -- export broken --bar 0 -- true
run_json error-json-failed-device 5 "$(error_is EIO 5)" -- --socket "$sock" export broken --bar 0 -- true
run devices-failed 0 "broken: failed: " -- devices
"$client" --socket "$sock" watch >"$dir/watch2" 2>&1 &
watcher=$!
pids+=("$watcher")
wait_for 30 file_has "$dir/watch2" 'watching scope=own' && pass watch-scope-own ||
	fail watch-scope-own "$(cat "$dir/watch2")"
echo >"$ctl2/gone.remove"
if wait_for 30 device_state "$sock" gone gone; then
	run gone-device 5 "is gone" -- export gone --bar 0 -- true
else
	fail gone-device "device gone never gone"
fi
echo >"$ctl2/slow.error"
if wait_for 30 device_state "$sock" slow cycling; then
	run busy-device 7 "device busy" -- export slow --bar 0 -- true
else
	fail busy-device "device slow never cycling"
fi
wait_for 60 device_state "$sock" slow ready || fail busy-device-ready "slow never ready again"
wait_for 30 file_has "$dir/watch2" 'slow state=ready' || true
if grep -q "gone state=gone" "$dir/watch2" && grep -q "slow state=cycling" "$dir/watch2"; then
	pass watch-own-device-states
else
	fail watch-own-device-states "$(cat "$dir/watch2")"
fi
# The daemon goes away under a holder and a watcher: both say so and exit 1.
hold "$dir/hold4" --socket "$sock" export slow --bar 0
# SIGKILL: a daemon that stops cleanly would first tell them their leases end (shutdown).
{
	kill -KILL "$daemon2_pid"
	wait "$daemon2_pid"
} 2>/dev/null
exited export-lost-connection "$holder" 1 "closed the connection" "$dir/hold4"
exited watch-lost-connection "$watcher" 1 "closed the connection" "$dir/watch2"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
