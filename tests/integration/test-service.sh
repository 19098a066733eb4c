#!/bin/bash
# p2pbufd as a service outside systemd, against a stand-in service manager: the sd_notify
# protocol (READY, STATUS, RELOADING around a reload, WATCHDOG pings from the loop, STOPPING),
# a second daemon refusing to take over a live socket, a stale socket replaced,
# --socket-group and --socket-mode, and the log's format on a terminal and elsewhere.
# The stand-in is a Unix datagram socket that records what arrives (python3).
# Ends with "N passed, N failed". Waits poll for a condition, never guess a duration.
set -u

top_builddir=${top_builddir:-$(pwd)}
top_srcdir=${top_srcdir:-$top_builddir}
daemon=$top_builddir/daemon/p2pbufd
dir=$(mktemp -d /tmp/p2pbuf-svc-XXXXXX)
# pass, fail, wait_for; cleanup at exit.
# shellcheck source=tests/integration/cli-lib.sh
. "$top_srcdir/tests/integration/cli-lib.sh"

check() { if eval "$2"; then pass "$1"; else fail "$1" "$3"; fi; }

if ! command -v python3 >/dev/null; then
	echo "SKIP: needs python3 for the stand-in service manager"
	exit 77
fi

printf 'device sim0 sim bar 0 1M\nallow user %s device sim0\n' "$(id -u)" >"$dir/policy"

# The stand-in: every datagram on $dir/notify, one line per assignment, into $dir/notes.
python3 - "$dir/notify" "$dir/notes" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a", buffering=1) as f:
    while True:
        data = s.recv(65536).decode(errors="replace")
        for line in data.split("\n"):
            if line:
                f.write(line + "\n")
PY
pids+=($!)
wait_for 10 test -S "$dir/notify" || { echo "FAIL: stand-in service manager did not start"; exit 1; }
: >"$dir/notes"

has() { grep -q -- "$1" "$dir/notes"; }
count() { grep -c -- "$1" "$dir/notes"; }
# at_least N PATTERN: whether PATTERN has arrived N times (evaluated anew on every try).
at_least() { [ "$(count "$2")" -ge "$1" ]; }
sock_ready() { test -S "$dir/sock"; }

NOTIFY_SOCKET=$dir/notify WATCHDOG_USEC=200000 "$daemon" --policy "$dir/policy" \
	--socket "$dir/sock" --socket-mode 0640 --socket-group "$(id -g)" 2>"$dir/log" &
dpid=$!
pids+=("$dpid")
if wait_for 20 has READY=1; then pass ready; else fail ready "no READY=1 (log: $(tail -n 2 "$dir/log"))"; fi
check status-serving 'has "STATUS=Serving 1 of 1 devices"' "no STATUS line saying what it serves"
check socket-mode '[ "$(stat -c %a "$dir/sock")" = 640 ]' "mode $(stat -c %a "$dir/sock"), expected 640"
check socket-group '[ "$(stat -c %g "$dir/sock")" = "$(id -g)" ]' "group $(stat -c %g "$dir/sock")"

# Ten pings need about a second at a 100 ms interval; wait for them, whatever the load.
if wait_for 30 at_least 10 WATCHDOG=1; then pass watchdog-pings
else fail watchdog-pings "$(count WATCHDOG=1) WATCHDOG=1 seen"; fi
# That a stopped loop stops the pings (and systemd then kills and restarts the daemon) is
# the VM's systemd flavour's case: telling "no ping" from "a ping not read yet" here would
# need a guess at how late the stand-in runs on a busy machine.

# Reload: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
ready_before=$(count READY=1)
kill -HUP "$dpid"
if wait_for 20 at_least $((ready_before + 1)) READY=1; then pass reload-ready-again
else fail reload-ready-again "no READY=1 after SIGHUP"; fi
check reload-reloading 'has RELOADING=1 && has MONOTONIC_USEC=' "no RELOADING=1 with MONOTONIC_USEC"
check reload-status 'has "STATUS=Policy reloaded"' "no STATUS after the reload"

# A second daemon on the same socket does not take it over.
"$daemon" --policy "$dir/policy" --socket "$dir/sock" 2>"$dir/log2"
st=$?
check second-daemon-refused '[ "$st" -ne 0 ] && grep -q "another p2pbufd (pid $dpid) is serving" "$dir/log2"' \
	"status $st, log: $(tail -n 1 "$dir/log2")"
check first-daemon-still-serves 'kill -0 "$dpid" && [ -S "$dir/sock" ] && has READY=1' "the first daemon is gone"

kill -TERM "$dpid"
wait "$dpid"
st=$?
check stop-clean '[ "$st" -eq 0 ]' "exit status $st"
check stopping 'has STOPPING=1' "no STOPPING=1"
check socket-removed '[ ! -e "$dir/sock" ]' "the socket file stayed"

# A stale socket (its daemon gone) is replaced.
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])' "$dir/sock"
"$daemon" --policy "$dir/policy" --socket "$dir/sock" 2>"$dir/log3" &
p3=$!
pids+=("$p3")
if wait_for 20 grep -q "ready:" "$dir/log3"; then pass stale-socket-replaced
else fail stale-socket-replaced "$(tail -n 1 "$dir/log3")"; fi
kill -TERM "$p3"
wait "$p3"

# Log format: priority prefixes when stderr is a file; timestamps and levels on a terminal.
check log-prefix-in-file 'grep -Eq "^<[0-7]>" "$dir/log3"' "no <N> prefix: $(head -n 1 "$dir/log3")"
python3 - "$daemon" "$dir/policy" "$dir/sock" >"$dir/tty" <<'PY'
import os, pty, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "--policy", sys.argv[2], "--socket", sys.argv[3]])
out = b""
deadline = time.monotonic() + 20
while b"ready:" not in out and time.monotonic() < deadline:
    try:
        out += os.read(fd, 4096)
    except OSError:
        break
os.kill(pid, signal.SIGTERM)
os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
PY
check log-terminal-format 'grep -Eq "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}\.[0-9]{3} notice: p2pbufd .* ready" "$dir/tty" && ! grep -q "^<" "$dir/tty"' \
	"terminal output: $(head -n 2 "$dir/tty" | tr '\r\n' '  ')"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
