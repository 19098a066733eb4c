#!/bin/bash
# p2pbuf-client against a real p2pbufd with simulated devices: the verbs, their output, and
# the exit codes and messages a user sees. Ends with "N passed, N failed".
set -u

top_builddir=${top_builddir:-$(pwd)}
daemon=$top_builddir/daemon/p2pbufd
client=$top_builddir/client/p2pbuf-client
dir=$(mktemp -d /tmp/p2pbuf-cli-XXXXXX)
sock=$dir/sock
uid=$(id -u)
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
	[ -f "$dir/out" ] && sed 's/^/    | /' "$dir/out"
}

# run NAME EXPECTED_STATUS PATTERN -- ARGS...: run the client, check exit status and that
# stdout+stderr match the extended regex PATTERN.
run() {
	local name=$1 want=$2 pattern=$3
	shift 4
	"$client" --socket "$sock" "$@" >"$dir/out" 2>&1
	local got=$?
	if [ "$got" -ne "$want" ]; then
		fail "$name" "exit status $got, expected $want"
	elif [ -n "$pattern" ] && ! grep -Eq -- "$pattern" "$dir/out"; then
		fail "$name" "output does not match /$pattern/"
	else
		pass "$name"
	fi
}

cat >"$dir/policy" <<EOF
device sim0 sim bar 0 64K bar 2 2M msix-table 0 0x2000+0x800
device sim1 sim bar 0 1M
allow user $uid device sim0 bar 2
allow user $uid device sim1
admin user $uid
EOF

# Before the daemon runs: the client says how to find it.
run no-daemon 3 "cannot connect to $sock.*is p2pbufd running" -- devices

"$daemon" --policy "$dir/policy" --socket "$sock" 2>"$dir/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done

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
run devices 0 "sim0.*sim.*ready" -- devices
run devices-simulated 0 "simulated" -- devices
run devices-json 0 '"name": ?"sim1"' -- --json devices
if "$client" --socket "$sock" --json devices | python3 -m json.tool >/dev/null 2>&1; then
	pass devices-json-valid
else
	fail devices-json-valid "not valid JSON"
fi
run status 0 "version: +[0-9]+\.[0-9]+\.[0-9]+" -- status
# shellcheck disable=SC2016 # the command's own shell expands the variables
run export-cmd 0 "" -- export sim0 --bar 2 --offset 0 --length 64K -- \
	sh -c 'test "$P2PBUF_SIZE" = 65536 && test -e "/proc/self/fd/$P2PBUF_FD" && test -n "$P2PBUF_LEASE_ID"'
run export-cmd-status 7 "" -- export sim1 --bar 0 -- sh -c 'exit 7'
run leases-empty-after-cmd 0 "" -- leases
if grep -q sim0 "$dir/out"; then fail leases-released "lease still listed"; else pass leases-released; fi
run denied 4 "denied by policy" -- export sim0 --bar 0 --length 4K -- true
run unknown-device 5 "unknown device" -- export nosuch --bar 0 -- true
run unaligned 6 "aligned" -- export sim0 --bar 2 --offset 0x100 --length 4K -- true
run outside-bar 6 "outside BAR 2" -- export sim0 --bar 2 --offset 2M --length 4K -- true
run release-unknown 5 "no lease" -- release 9999
run reset-unknown 5 "unknown device" -- reset nosuch
run usage 2 "" -- export
run bad-size 2 "" -- export sim0 --bar 2 --length 12Q -- true

# A held lease: shown in `leases`, ended by a reset with the reason told to the holder.
"$client" --socket "$sock" export sim1 --bar 0 --length 8K >"$dir/hold" 2>&1 &
holder=$!
for _ in $(seq 100); do grep -q '^lease' "$dir/hold" && break; sleep 0.05; done
if grep -Eq '^lease [0-9]+ device sim1 bar 0 size 8192' "$dir/hold"; then
	pass export-hold
else
	fail export-hold "$(cat "$dir/hold")"
fi
run leases-held 0 "sim1" -- leases
run leases-json 0 '"device": ?"sim1"' -- --json leases
"$client" --socket "$sock" watch >"$dir/watch" 2>&1 &
watcher=$!
sleep 0.2
run reset 0 "" -- reset sim1
wait "$holder"
status=$?
if [ "$status" -eq 10 ] && grep -q "revoked.*reset" "$dir/hold"; then
	pass holder-told-reset
else
	fail holder-told-reset "status $status: $(cat "$dir/hold")"
fi
sleep 0.2
kill -INT "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
if grep -q "sim1.*cycling" "$dir/watch" && grep -q "sim1.*ready" "$dir/watch"; then
	pass watch-device-states
else
	fail watch-device-states "$(cat "$dir/watch")"
fi

# Interrupting a holder releases its lease.
"$client" --socket "$sock" export sim1 --bar 0 --length 4K >"$dir/hold2" 2>&1 &
holder=$!
for _ in $(seq 100); do grep -q '^lease' "$dir/hold2" && break; sleep 0.05; done
kill -INT "$holder"
wait "$holder"
status=$?
sleep 0.1
"$client" --socket "$sock" leases >"$dir/out" 2>&1
if [ "$status" -eq 0 ] && ! grep -q sim1 "$dir/out"; then
	pass interrupt-releases
else
	fail interrupt-releases "status $status"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
